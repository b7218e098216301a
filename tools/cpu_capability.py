"""CPU capability: what the CPU computes natively as PyTorch and its libraries run it here (held to AVX2 or not), its
large matrix-product rate, and the FLOPs a piece of work costs, so that bench.py can put a stage's rate beside it.

A CPU's flags are not enough: `ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2` and
`MKL_ENABLE_INSTRUCTIONS=AVX2` hold PyTorch, oneDNN and MKL to AVX2 on an AVX-512 CPU (how an AVX2 laptop is
measured without one). PyTorch still sends bf16 work to oneDNN there, which then has no bf16 kernel but its
reference code: bf16 is emulated, and slower than on a real AVX2 CPU, where PyTorch computes bf16 itself.
"""
from __future__ import annotations

import functools
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from captioning.runtime import cpu_features, hardware_features, proc_cpuinfo_flags

HOLDS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")  # env vars that hold the ISA down


def captured_stdout(function: Callable[[], Any]) -> str:
    """What `function` writes to file descriptor 1 (C libraries' verbose output bypasses sys.stdout)."""
    sys.stdout.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(1)
        os.dup2(capture.fileno(), 1)
        try:
            function()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        return capture.read().decode(errors="replace")


@functools.lru_cache(maxsize=1)
def onednn_isa() -> str:
    """The instruction set oneDNN runs with (after ONEDNN_MAX_CPU_ISA), as its verbose mode names it: one small
    convolution with verbose on prints an `isa:` line, or at least the kernel's name (jit:avx2, ...)."""
    if not torch.backends.mkldnn.is_available():
        return "none (PyTorch built without oneDNN)"
    weight = torch.zeros(64, 64, 3, 3)  # large enough for PyTorch to hand it to oneDNN

    def convolve() -> None:
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON), torch.no_grad():
            torch.nn.functional.conv2d(torch.zeros(2, 64, 17, 17), weight)
    lines = captured_stdout(convolve).splitlines()
    for line in lines:
        if ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    for line in lines:
        if ",convolution," in line:
            return line.split(",convolution,", 1)[1].split(",")[0]  # the kernel, e.g. jit:avx2
    return "unknown (oneDNN printed no verbose line)"


@dataclass(frozen=True)
class Capability:
    """What this CPU computes, as PyTorch runs it in this process."""

    aten: str  # torch.backends.cpu.get_cpu_capability(): DEFAULT, AVX2, AVX512, ...
    onednn: str  # oneDNN's ISA line
    flags: str  # the flags that matter, best first: amx, avx512_bf16, avx512, avx2, or the machine
    held: dict[str, str]  # HOLDS set in the environment, with their values
    native_bf16: bool  # bf16 matrix products in hardware, as held here (AVX512-BF16 or AMX, not held to AVX2)

    @property
    def held_to_avx2(self) -> bool:
        return any(value.lower() == "avx2" for value in self.held.values())

    def describe(self) -> str:
        """One line: the flags, PyTorch's and oneDNN's ISA, and the hold."""
        names = {"amx": "AMX", "avx512_bf16": "AVX512-BF16", "avx512": "AVX-512 (no AVX512-BF16 or AMX)",
                 "avx2": "AVX2 (no AVX-512)"}
        held = (f"; HELD TO AVX2 by {', '.join(f'{k}={v}' for k, v in self.held.items())} (MKL's hold is taken "
                f"from its variable, it cannot be checked in the process)" if self.held_to_avx2 else "")
        bf16 = "native" if self.native_bf16 else "emulated (not chosen)"
        return (f"CPU capability: {names.get(self.flags, self.flags)}; PyTorch kernels {self.aten}; oneDNN ISA: "
                f"{self.onednn}; bf16 {bf16}{held}")

    @property
    def doc_name(self) -> str:
        """The file name of this CPU's output under docs/bench/: its flags, and whether it was held to AVX2."""
        return "avx2_held.txt" if self.held_to_avx2 and self.flags != "avx2" else f"{self.flags}.txt"


def cpu_flags_name() -> str:
    """The CPU's best flag for matrix work: amx, avx512_bf16, avx512, avx2, else the machine (arm64, ...): the
    hardware's, whatever PyTorch is held to (the hold is in doc_name)."""
    features = hardware_features()
    avx2 = "avx2" in proc_cpuinfo_flags() or torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    for name, present in (("amx", features.amx_bf16), ("avx512_bf16", features.avx512_bf16),
                          ("avx512", features.avx512), ("avx2", avx2)):
        if present:
            return name
    return platform.machine().lower() or "cpu"


@functools.lru_cache(maxsize=1)
def capability() -> Capability:
    """This process's CPU capability, the holds of HOLDS taken into account."""
    held = {name: os.environ[name] for name in HOLDS if os.environ.get(name)}
    aten, onednn = torch.backends.cpu.get_cpu_capability(), onednn_isa()
    features = cpu_features()
    # oneDNN names its bf16 support in the ISA line (AVX512-BF16 and AMX: "bfloat16"); where it printed none, the
    # flags and PyTorch's own capability decide.
    onednn_bf16 = "bfloat16" in onednn.lower() or onednn.startswith(("unknown", "jit:avx512", "brg"))
    native = (features.avx512_bf16 or features.amx_bf16) and aten not in ("DEFAULT", "AVX2") and onednn_bf16
    return Capability(aten, onednn, cpu_flags_name(), held, native)


def matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 3, seconds: float = 20.0,
                device: torch.device | str = "cpu") -> float:
    """FLOP/s of a size x size matrix product in dtype: the best of `repeats` calls after an untimed one, fewer where
    they would take more than `seconds` (emulated bf16), the untimed one alone where it took that long."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device, dtype) for _ in range(2))

    def timed() -> float:
        started = time.perf_counter()
        torch.mm(a, b)
        if a.device.type == "cuda":
            torch.cuda.synchronize(a.device)
        return time.perf_counter() - started
    best = spent = timed()
    if spent < seconds:
        best = float("inf")
        for _ in range(repeats):
            elapsed = timed()
            best, spent = min(best, elapsed), spent + elapsed
            if spent > seconds:
                break
    return 2 * size ** 3 / best


def _lstm_flops(input_shape, weight_shape, recurrent_shape, backward: bool) -> int:
    """oneDNN's fused LSTM layer: four gates, each an input and a recurrent matrix product per step."""
    steps = input_shape[0] * input_shape[1]  # batch x time, either order
    forward = 2 * steps * weight_shape[0] * (weight_shape[1] + recurrent_shape[1])
    return 2 * forward if backward else forward


def _lstm_forward(input, weight0, weight1, *args, out_shape=None, **kwargs) -> int:
    return _lstm_flops(input, weight0, weight1, backward=False)


def _lstm_backward(input, weight1, weight2, *args, out_shape=None, **kwargs) -> int:
    return _lstm_flops(input, weight1, weight2, backward=True)


LSTM_FLOPS = {torch.ops.aten.mkldnn_rnn_layer: _lstm_forward,
              torch.ops.aten.mkldnn_rnn_layer_backward: _lstm_backward}  # not in FlopCounterMode's formulas


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts oneDNN's fused LSTM (matrix products and convolutions only, as usual)."""
    return FlopCounterMode(display=False, custom_mapping=LSTM_FLOPS)
