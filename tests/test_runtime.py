"""Precision auto: bf16 only on CPUs that compute it natively, fp32 on the rest, AMP on CUDA; said in one line."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from captioning import runtime
from conftest import ROOT
from captioning.runtime import CpuFeatures

CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = CpuFeatures("x86_64", avx512=True, avx512_bf16=True, amx_bf16=True)
EPYC_GENOA = CpuFeatures("x86_64", avx512=True, avx512_bf16=True)
XEON_AVX512 = CpuFeatures("x86_64", avx512=True)  # Ice Lake, Skylake-SP: oneDNN emulates bf16 there
LAPTOP_AVX2 = CpuFeatures("x86_64")
APPLE_M = CpuFeatures("arm64")
GRAVITON = CpuFeatures("aarch64")


@pytest.fixture
def cpu_is(monkeypatch):
    """Make runtime believe it runs on a CPU with the given features."""
    def pretend(features: CpuFeatures) -> None:
        monkeypatch.setattr(runtime, "cpu_features", lambda: features)
    return pretend


@pytest.mark.parametrize("features, expected, because", [
    (SAPPHIRE_RAPIDS, torch.bfloat16, "natively (AMX)"),
    (EPYC_GENOA, torch.bfloat16, "natively (AVX512-BF16)"),
    (XEON_AVX512, None, "AVX-512 but no AVX512-BF16 or AMX"),
    (LAPTOP_AVX2, None, "no native bf16"),
    (APPLE_M, None, "ARM CPU"),
    (GRAVITON, None, "ARM CPU"),
])
def test_auto_picks_bf16_only_where_the_cpu_computes_it_natively(cpu_is, features, expected, because):
    cpu_is(features)
    assert runtime.autocast_dtype(CPU, "auto") is expected
    line = runtime.describe_precision(CPU, "auto")
    assert line.startswith(f"precision: {'bf16 autocast' if expected else 'fp32'} on cpu") and because in line
    assert "\n" not in line


def test_an_explicit_precision_is_kept_whatever_the_cpu(cpu_is):
    cpu_is(XEON_AVX512)
    assert runtime.autocast_dtype(CPU, "bf16") is torch.bfloat16
    assert runtime.describe_precision(CPU, "bf16") == "precision: bf16 autocast on cpu (asked for)"
    cpu_is(SAPPHIRE_RAPIDS)
    assert runtime.autocast_dtype(CPU, "fp32") is None


def test_autocast_follows_the_choice(cpu_is):
    cpu_is(XEON_AVX512)
    with runtime.autocast(CPU, "auto"):
        assert not torch.is_autocast_enabled("cpu")
    cpu_is(EPYC_GENOA)
    with runtime.autocast(CPU, "auto"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") is torch.bfloat16


@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_keeps_its_amp_choice(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert runtime.autocast_dtype(torch.device("cuda"), "auto") is expected
    assert "AMP" in runtime.describe_precision(torch.device("cuda"), "auto")


def test_cpu_features_come_from_the_flags_where_torch_cannot_tell(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n\n"
                       "processor\t: 1\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert runtime.proc_cpuinfo_flags(cpuinfo) >= {"avx512f", "avx512_bf16"}
    assert runtime.proc_cpuinfo_flags(tmp_path / "missing") == set()  # not Linux: no such file
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    read = runtime.proc_cpuinfo_flags
    monkeypatch.setattr(runtime, "proc_cpuinfo_flags", lambda: read(cpuinfo))
    runtime.hardware_features.cache_clear()
    try:
        features = runtime.hardware_features()
        assert features.avx512 and features.avx512_bf16 and not features.amx_bf16 and features.native_bf16
    finally:
        runtime.hardware_features.cache_clear()


def test_this_machines_choice_matches_its_flags():
    flags = runtime.proc_cpuinfo_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo here")
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert runtime.cpu_features().native_bf16 == native
    assert runtime.autocast_dtype(CPU, "auto") is (torch.bfloat16 if native else None)


def test_an_explicit_precision_the_cpu_cannot_run_is_refused_and_auto_never_is(cpu_is, monkeypatch):
    cpu_is(LAPTOP_AVX2)
    monkeypatch.setattr(runtime, "cpu_runs", lambda precision: precision == "fp32")
    for precision in ("bf16", "fp16"):
        with pytest.raises(ValueError, match=f"precision {precision} cannot run on this CPU.*auto or fp32"):
            runtime.check_precision(CPU, precision)
    for precision in ("auto", "fp32"):
        runtime.check_precision(CPU, precision)
    runtime.check_precision(torch.device("cuda"), "fp16")  # a GPU's precision is its own


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="emulates an x86 CPU")
def test_the_probe_finds_that_an_avx2_cpu_cannot_run_the_lstm_in_bf16_or_fp16():
    # oneDNN and ATen limited to AVX2, as on a CPU without AVX-512: the first training step would fail there.
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
           "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OMP_NUM_THREADS": "1"}
    probe = "from captioning import runtime; print([runtime.cpu_runs(p) for p in ('fp32', 'bf16', 'fp16')])"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "[True, False, False]", result.stderr[-2000:]


def test_a_cpu_held_to_avx2_runs_in_fp32_as_an_avx2_laptop_would():
    """ATEN_CPU_CAPABILITY=avx2 is how an AVX-512 machine measures what an AVX2-only CPU does: precision auto must
    then pick fp32, whatever bf16 the hardware has."""
    code = ("import torch; from captioning import runtime; "
            "print(torch.backends.cpu.get_cpu_capability(), runtime.choose_precision(torch.device('cpu'), 'auto')[0])")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    capability, precision = result.stdout.split()
    if capability != "AVX2":
        pytest.skip(f"this CPU runs PyTorch at {capability}, below AVX2")
    assert precision == "fp32"
