"""bench.py --quick runs every section end to end, prints each stage's share of the matrix product's rate and the
CPU's capability, and ends with one JSON line of positive figures."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

KEYS = ("train_cache_speedup", "encoder_auto_speedup", "encoder_auto_vs_fastest", "train_step_auto_vs_fastest", "decode_speedup", "batched_caption_speedup",
        "token_cache_speedup")


SHARES = ("share_captioner_step", "share_encoder_inference", "share_decoding", "share_pretraining_step",
          "share_self_critical_step")
SECTIONS = ("1 training", "2 encoder", "3 image loading", "4 captioning", "5 loader start-up", "6 training step",
            "7 self-critical")


def run_quick(tmp_path, *arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """bench.py --quick on one thread: on a busy machine (the test suite beside other work) two OpenMP threads stall
    each other."""
    return subprocess.run([sys.executable, "tools/bench.py", "--quick", "--device", "cpu", "--threads", "1",
                           "--data-dir", str(tmp_path / "data"), *arguments], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


def share_column(table: str) -> list[float]:
    """The 'of mm' figures of the table's rows (the column that the header names)."""
    header = next(line for line in table.splitlines() if line.startswith("section"))
    end = header.index("of mm") + len("of mm")
    return [float(line[end - 7:end]) for line in table.splitlines()
            if len(line) > end and line[:1] in (" ", *"1234567") and line[end - 7:end].strip()]


def test_quick_benchmark_prints_a_table_and_json_figures(tmp_path):
    result = run_quick(tmp_path, "--write-doc", str(tmp_path / "doc"))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    for key in KEYS:
        assert isinstance(figures[key], float) and figures[key] > 0, key
    for key in SHARES:  # a stage's FLOP/s over the matrix product's in its precision
        assert isinstance(figures[key], float) and 0 < figures[key] <= 1.5, key
    assert figures["matmul_flops"]["fp32"] > 0
    assert figures["device"].startswith("CPU") and figures["device_type"] == "cpu"
    if "feature_cosine_min" in figures:  # bf16 native: its features and captions checked against fp32
        assert 0.9 <= figures["feature_cosine_min"] <= 1.0 + 1e-6
        assert 0.0 <= figures["greedy_caption_agreement"] <= 1.0
    assert figures["peak_rss_mb"] > 0
    table = "\n".join(lines[:-1])
    assert any(line.startswith("CPU capability: ") and "oneDNN ISA: " in line for line in lines)
    assert "matrix product rate: fp32 " in table
    for section in SECTIONS:
        assert section in table
    shares = share_column(table)
    assert len(shares) >= len(SHARES) and all(0 < share <= 1.5 for share in shares), shares
    assert (tmp_path / "data" / "images" / "train").is_dir()  # --data-dir holds the generated images
    written = list((tmp_path / "doc").iterdir())  # the output, named by the CPU's flags
    assert [path.name for path in written] == [figures["capability"]["flags"] + ".txt"]
    assert written[0].read_text() == result.stdout


def test_held_to_avx2_bench_says_so_and_treats_bf16_as_emulated(tmp_path):
    import os
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    result = subprocess.run([sys.executable, "-c", "from tools import cpu_capability as c; h = c.capability(); "
                             "print(h.describe()); print(h.doc_name, h.native_bf16)"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    describe, names = result.stdout.strip().splitlines()
    assert "PyTorch kernels AVX2" in describe and "HELD TO AVX2" in describe
    assert "oneDNN ISA: " in describe and "512" not in describe.split("oneDNN ISA: ")[1].split(";")[0]
    flags = names.split()[0]
    assert flags in ("avx2.txt", "avx2_held.txt") and names.endswith("False")


def test_doc_names_follow_the_cpu_flags():
    from tools.cpu_capability import Capability
    native = Capability("AVX512", "Intel AVX-512 with Intel DL Boost and bfloat16 support", "avx512_bf16", {}, True)
    assert native.doc_name == "avx512_bf16.txt" and not native.held_to_avx2
    assert Capability("AVX512", "Intel AVX-512", "avx512", {}, False).doc_name == "avx512.txt"
    assert Capability("AVX512", "Intel AMX", "amx", {}, True).doc_name == "amx.txt"
    assert Capability("AVX2", "Intel AVX2", "avx2", {}, False).doc_name == "avx2.txt"
    held = Capability("AVX2", "Intel AVX2", "avx512_bf16", {"ATEN_CPU_CAPABILITY": "avx2"}, False)
    assert held.doc_name == "avx2_held.txt" and "HELD TO AVX2" in held.describe()


def test_write_doc_refuses_a_file_it_did_not_write(tmp_path, capsys):
    from tools import bench
    from tools import cpu_capability
    doc = tmp_path / cpu_capability.capability().doc_name
    doc.write_text("someone's output")
    assert bench.main(["--quick", "--device", "cpu", "--write-doc", str(tmp_path)]) == 2
    assert "--replace-doc" in capsys.readouterr().err
    assert doc.read_text() == "someone's output"


def test_a_data_dir_that_bench_did_not_write_is_refused_untouched(synthetic_dir, capsys):
    from tools import bench
    before = sorted((path.relative_to(synthetic_dir), path.stat().st_mtime_ns) for path in synthetic_dir.rglob("*"))
    assert bench.main(["--quick", "--device", "cpu", "--data-dir", str(synthetic_dir)]) == 2
    assert "holds files that bench.py did not write" in capsys.readouterr().err
    assert sorted((path.relative_to(synthetic_dir), path.stat().st_mtime_ns)
                  for path in synthetic_dir.rglob("*")) == before


def test_bench_reuses_its_own_whole_set_and_rewrites_a_partial_one(tmp_path):
    from tools import bench
    settings = bench.BenchSettings.quick()
    assert not bench.data_dir_ready(tmp_path, settings)  # empty: to be written
    (tmp_path / bench.BENCH_SET).write_text(json.dumps({**bench.bench_set(settings), "complete": False}))
    (tmp_path / "images").mkdir()
    assert not bench.data_dir_ready(tmp_path, settings)  # its own, interrupted: written again
    (tmp_path / bench.BENCH_SET).write_text(json.dumps({**bench.bench_set(settings), "complete": True}))
    assert bench.data_dir_ready(tmp_path, settings)
    assert not bench.data_dir_ready(tmp_path, bench.BenchSettings())  # its own, other sizes: written again
