"""The engine reads datasets through their files and never imports a dataset generator (the synthetic sets are one
more producer of COCO files)."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATORS = {"synthetic_data", "synthetic_hard", "synthetic_common", "coco_download", "prepare_data"}
# Everything that trains, evaluates, captions, draws word maps or scores: what a COCO run loads.
ENGINE = ["annotations", "caption", "checkpoint", "config", "data_loader", "distributed", "evaluate", "features",
          "files", "inference", "metrics", "model", "objects", "pretrain_encoder", "runtime", "train", "viz",
          "vocabulary", "wordmaps"]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_engine_module_imports_a_generator():
    offenders = {name: sorted(imported_modules(ROOT / f"{name}.py") & GENERATORS) for name in ENGINE}
    assert not {name: found for name, found in offenders.items() if found}


def test_importing_the_engine_loads_no_generator():
    code = f"import sys; import {', '.join(ENGINE)}; print(sorted(set(sys.modules) & set({sorted(GENERATORS)!r})))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
