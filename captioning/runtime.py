"""Runtime: the device a run uses and the precision it computes in, chosen for the machine at hand.

`precision auto` takes whatever is faster where the code runs: bf16 autocast on CPUs that compute bf16 natively
(AVX512-BF16 or AMX), fp32 on every other CPU, and AMP on CUDA. The trap it avoids: oneDNN reports bf16 as
"supported" on any AVX-512 CPU (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`), but without AVX512-BF16 or AMX it
emulates bf16 arithmetic, slower than fp32 (docs/EXPERIMENTS.md; tools/bench.py shows it on any CPU).
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """cuda when asked or (auto) available, else cpu."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return torch.device("cuda" if name in ("cuda", "auto") and torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class CpuFeatures:
    """What a CPU can do that decides its precision."""

    machine: str  # platform.machine(): x86_64, AMD64, arm64, aarch64, ...
    avx512: bool = False
    avx512_bf16: bool = False
    amx_bf16: bool = False

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx_bf16


def cpu_features() -> CpuFeatures:
    """What PyTorch may use of this CPU here: its features (hardware_features), none of AVX-512's where PyTorch is
    held below it (ATEN_CPU_CAPABILITY=avx2, as one measures what an AVX2-only laptop does)."""
    return CpuFeatures(platform.machine()) if held_below_avx512() else hardware_features()


@functools.lru_cache(maxsize=1)
def hardware_features() -> CpuFeatures:
    """This CPU's own features, from PyTorch's cpuinfo (the same on Linux, macOS and Windows), or else from the
    flags in /proc/cpuinfo."""
    machine = platform.machine()
    probes = {"avx512": "_is_avx512_supported", "avx512_bf16": "_is_avx512_bf16_supported",
              "amx_bf16": "_is_amx_tile_supported"}
    try:
        return CpuFeatures(machine, **{name: bool(getattr(torch.cpu, probe)()) for name, probe in probes.items()})
    except (AttributeError, RuntimeError):  # a torch without these probes
        flags = proc_cpuinfo_flags()
        return CpuFeatures(machine, avx512="avx512f" in flags, avx512_bf16="avx512_bf16" in flags,
                           amx_bf16="amx_bf16" in flags)


def held_below_avx512() -> bool:
    """Whether PyTorch was held below AVX-512 on an x86 CPU that has it (ATEN_CPU_CAPABILITY=avx2 or default), as one
    measures what an AVX2-only laptop would do: the precision then follows the capability PyTorch runs with."""
    return (os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("avx2", "default")
            and torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT"))


def proc_cpuinfo_flags(path: str | Path = "/proc/cpuinfo") -> set[str]:
    """The first CPU's flags in a Linux /proc/cpuinfo; empty where there is no such file."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_precision(features: CpuFeatures) -> tuple[str, str]:
    """("bf16" or "fp32", why) for a CPU: bf16 only where the CPU computes it natively."""
    if features.amx_bf16:
        return "bf16", "this CPU computes bf16 natively (AMX)"
    if features.avx512_bf16:
        return "bf16", "this CPU computes bf16 natively (AVX512-BF16)"
    if features.machine.lower() in ("arm64", "aarch64"):
        return "fp32", ("ARM CPU: bf16 autocast was not measured to be faster there; try --precision bf16 "
                        "and bench.py to compare")
    if features.avx512:
        return "fp32", "this CPU has AVX-512 but no AVX512-BF16 or AMX, so bf16 would be emulated and slower"
    return "fp32", "this CPU has no native bf16 (no AVX512-BF16 or AMX)"


def choose_precision(device: torch.device, precision: str) -> tuple[str, str]:
    """The precision a run computes in ("fp32", "bf16" or "fp16") and why, following precision = auto/fp32/..."""
    if precision != "auto":
        return precision, "asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "CUDA GPU with bf16: mixed precision (AMP)"
        return "fp16", "CUDA GPU without bf16: mixed precision (AMP) with a gradient scaler"
    if device.type == "cpu":
        return cpu_precision(cpu_features())
    return "fp32", f"no autocast on {device.type}"


# What oneDNN, which computes PyTorch's LSTM on a CPU, needs to run it in each precision under autocast.
ONEDNN_NEEDS = {"bf16": "AVX-512 (and AVX512-BF16 or AMX to be fast)", "fp16": "AVX512-FP16 or AMX-FP16"}


@functools.lru_cache(maxsize=None)
def cpu_runs(precision: str) -> bool:
    """Whether this CPU runs an LSTM under autocast in that precision (fp32: always). Tried on a tiny LSTM: without
    what ONEDNN_NEEDS names, oneDNN has no such kernel, and training would fail at its first step."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return True
    with torch.random.fork_rng(devices=[]):  # the probe's random weights leave the caller's random stream alone
        lstm = torch.nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.enable_grad(), torch.autocast("cpu", dtype=dtype):
            output = lstm(torch.zeros(1, 2, 4))[0]
        output.float().sum().backward()
    except RuntimeError:
        return False
    return True


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse, before any work starts, a precision this CPU cannot run (ValueError, one line); auto never is."""
    if device.type != "cpu" or precision == "auto" or cpu_runs(precision):
        return
    features = cpu_features()
    native = [name for name, present in (("AVX512-BF16", features.avx512_bf16), ("AMX", features.amx_bf16))
              if present]
    raise ValueError(f"precision {precision} cannot run on this CPU ({torch.backends.cpu.get_cpu_capability()}"
                     f"{', ' + ', '.join(native) if native else ''}): PyTorch computes the LSTM in {precision} with "
                     f"oneDNN, which needs {ONEDNN_NEEDS[precision]}; use precision auto or fp32")


def describe_precision(device: torch.device, precision: str) -> str:
    """One line for the user: which precision a run uses on this device, and why."""
    chosen, reason = choose_precision(device, precision)
    mode = "fp32" if chosen == "fp32" else f"{chosen} autocast"
    return f"precision: {mode} on {device.type} ({reason})"


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype on this device (None = full fp32), following precision = auto/fp32/bf16/fp16."""
    chosen, _ = choose_precision(device, precision)
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(chosen)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for the CNN, and for the whole forward pass while training (train.train_step).

    Decoding (greedy, beam search) stays fp32: it is cheap, and an argmax over close scores is precision-sensitive.
    """
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
