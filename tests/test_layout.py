"""The layout's rules: the engine reads datasets through their files and imports no dataset producer; imports run one
way, with no circle; no file of the engine is over 500 lines; no sys.path edits; and moving the code into the package
changed nothing a seeded run computes."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captioning.config import make_config

ROOT = Path(__file__).resolve().parents[1]
PRODUCERS = ("prepare", "tools")  # the dataset producers (synthetic sets, COCO download) and the developer tools
DESIGN_CARD = ["model.py", "data_loader.py", "vocabulary.py"]
COMMANDS = ["train.py", "evaluate.py", "caption.py", "pretrain_encoder.py"]  # prepare_data.py runs the producers


def engine_files() -> list[Path]:
    """What trains, evaluates, captions, draws word maps or scores: what a COCO run loads."""
    return sorted((ROOT / "captioning").rglob("*.py")) + [ROOT / name for name in DESIGN_CARD]


def imported_modules(path: Path, top_only: bool = True) -> set[str]:
    """Every module a file imports, at its top or inside a function (the first part of each name with top_only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from package import module`
    return {name.split(".")[0] for name in names} if top_only else names


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_engine_module_imports_a_dataset_producer():
    offenders = {module_name(path): sorted(imported_modules(path) & set(PRODUCERS)) for path in engine_files()}
    offenders.update({name: sorted(imported_modules(ROOT / name) & set(PRODUCERS)) for name in COMMANDS})
    assert not {name: found for name, found in offenders.items() if found}


def test_importing_the_engine_and_its_commands_loads_no_producer():
    modules = [module_name(path) for path in engine_files()] + [name[:-3] for name in COMMANDS]
    code = (f"import importlib, sys; [importlib.import_module(name) for name in {modules!r}]; "
            f"print(sorted(name for name in sys.modules if name.split('.')[0] in {PRODUCERS!r}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_two_generators_share_a_base_and_neither_imports_the_other():
    synthetic = ROOT / "prepare" / "synthetic"
    easy = imported_modules(synthetic / "easy.py", top_only=False)
    hard = imported_modules(synthetic / "hard.py", top_only=False)
    assert "prepare.synthetic.hard" not in easy and "prepare.synthetic.easy" not in hard
    assert "prepare.synthetic.common" in easy and "prepare.synthetic.common" in hard


def project_modules() -> dict[str, Path]:
    files = engine_files() + sorted((ROOT / "prepare").rglob("*.py")) + sorted((ROOT / "tools").rglob("*.py"))
    return {module_name(path): path for path in files + [ROOT / name for name in COMMANDS + ["prepare_data.py"]]}


def test_no_circle_of_imports():
    modules = project_modules()
    edges = {name: {other for other in imported_modules(path, top_only=False) if other in modules and other != name}
             for name, path in modules.items()}

    def circle_from(start: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for other in sorted(edges[start]):
            if other in seen:
                return seen[seen.index(other):] + (other,)
            found = circle_from(other, seen + (other,))
            if found:
                return found
        return None
    circles = {name: circle_from(name, (name,)) for name in modules}
    assert not {name: circle for name, circle in circles.items() if circle}


def test_no_engine_file_is_over_500_lines():
    long = {module_name(path): n for path in engine_files() if (n := len(path.read_text().splitlines())) > 500}
    assert not long


def test_no_sys_path_edits():
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert tracked, "not a git checkout"
    edits = [name for name in tracked if "sys.path." in (ROOT / name).read_text(encoding="utf-8")
             and name != "tests/test_layout.py"]
    assert not edits


def tiny_run_fingerprint(tmp_path: Path) -> dict:
    """A seeded run of the synthetic recipe's stages in small (pretraining with the centre head, a cross-entropy
    epoch): its counters and, for each weight tensor of last.pt, the sum of its magnitudes. No self-critical epoch: it
    samples captions, and a sampled word can flip with the last bit of a probability, which even where a tensor lies
    in memory changes (any edit elsewhere moves it); its step is tested on its own in test_train.py."""
    from captioning import training
    from prepare import synthetic

    synthetic.generate(tmp_path / "data", n_train=24, n_val=6, n_test=2, seed=3, width=48, height=48)
    config = make_config(ROOT / "configs" / "synthetic.json", data_dir=str(tmp_path / "data"),
                         out=str(tmp_path / "run"), backbone="resnet18", image_size=32, resize_size=32, embed_size=16,
                         hidden_size=32, epochs=1, batch_size=8, vocab_threshold=1, precision="fp32", log_every=1,
                         scst_epochs=0, pretrain_epochs=1, pretrain_batch_size=8, pretrain_small_share=0,
                         object_features=True,
                         num_workers=0, seed=7)
    training.train(config, progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    return {"epoch": state["epoch"], "global_step": state["global_step"],
            "weights": {f"{part}.{name}": float(tensor.double().abs().sum()) for part in ("encoder", "decoder")
                        for name, tensor in sorted(state[part].items()) if tensor.is_floating_point()}}


def test_a_seeded_run_gives_the_checkpoint_it_gave_before_the_package(tmp_path, one_thread):
    """The reference was written by the same run at 61b6025, the flat layout; on the CPU it was made on the two agree
    to the last bit. The tolerance is for other CPUs' floating-point arithmetic (another SIMD width sums in another
    order), far below what a changed computation moves."""
    before = json.loads((Path(__file__).parent / "data" / "tiny_run_before_package.json").read_text())
    after = tiny_run_fingerprint(tmp_path)
    assert (after["epoch"], after["global_step"]) == (before["epoch"], before["global_step"])
    assert after["weights"].keys() == before["weights"].keys()
    for name, value in before["weights"].items():
        assert after["weights"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
