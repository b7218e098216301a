"""bench.py --quick runs every section end to end and ends with one JSON line of positive figures."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

KEYS = ("train_cache_speedup", "encoder_auto_speedup", "encoder_auto_vs_fastest", "train_step_auto_vs_fastest", "decode_speedup", "batched_caption_speedup",
        "token_cache_speedup")


def test_quick_benchmark_prints_a_table_and_json_figures(tmp_path):
    # One thread: on a busy machine (the test suite running beside other work) two OpenMP threads stall each other.
    result = subprocess.run([sys.executable, "tools/bench.py", "--quick", "--device", "cpu", "--threads", "1",
                             "--data-dir", str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    for key in KEYS:
        assert isinstance(figures[key], float) and figures[key] > 0, key
    assert figures["device"].startswith("CPU") and figures["device_type"] == "cpu"
    assert 0.9 <= figures["feature_cosine_min"] <= 1.0 + 1e-6
    assert 0.0 <= figures["greedy_caption_agreement"] <= 1.0
    assert figures["peak_rss_mb"] > 0
    table = "\n".join(lines[:-1])
    for section in ("1 training", "2 encoder", "3 image loading", "4 captioning", "5 loader start-up"):
        assert section in table
    assert (tmp_path / "data" / "images" / "train").is_dir()  # --data-dir holds the generated images


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
