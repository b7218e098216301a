"""The four notebooks run top to bottom with small parameters and leave their artefacts and pictures behind."""
from __future__ import annotations

import json
import re

import nbformat

from captioning.config import load_recipe
from tools import demo


def test_notebooks_run_in_order_and_produce_their_artefacts(tmp_path):
    demo.run_notebooks(demo.quick_parameters(str(tmp_path)), output_dir=tmp_path / "executed")
    for name in demo.NOTEBOOKS:
        notebook = nbformat.read(tmp_path / "executed" / name, as_version=4)
        outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
        assert not [output for output in outputs if output.output_type == "error"], name
        assert any("image/png" in output.get("data", {}) for output in outputs), f"{name} shows no picture"
        parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
        assert len(parameters) == 1, f"{name} needs exactly one parameters cell"
        assert "widgets" not in notebook.metadata, f"{name} keeps the progress bars' widget state"
        assert not log_walls(notebook), f"{name}: {log_walls(notebook)[:3]}"
    assert (tmp_path / "data" / "annotations" / "captions_train.json").exists()
    assert (tmp_path / "models" / "vocab.pkl").exists()
    assert (tmp_path / "models" / "best.pt").exists() and (tmp_path / "models" / "last.pt").exists()
    results = json.loads((tmp_path / "models" / "results_test.json").read_text())
    assert len(results) == 12 and set(results[0]) == {"image_id", "caption"}
    assert (tmp_path / "captions.png").stat().st_size > 1000


def test_notebooks_hold_no_machine_paths_or_downloads():
    for name in demo.NOTEBOOKS:
        text = (demo.ROOT / name).read_text()
        assert "nltk.download" not in text
        for marker in ("/work/", "/home/", "/tmp/", "/root/", "C:\\\\"):
            assert marker not in text, f"{name} mentions {marker}"


def test_the_demo_leaves_an_earlier_demo_run_alone_unless_asked(tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "best.pt").write_bytes(b"an earlier run")
    monkeypatch.setattr(demo, "ROOT", tmp_path)
    ran = []
    monkeypatch.setattr(demo, "run_notebooks", lambda parameters, output_dir, echo: ran.append(parameters) or 1.0)
    assert demo.main([]) == 2
    assert "DEMO_FLAGS=--overwrite" in capsys.readouterr().err and not ran
    assert (models / "best.pt").read_bytes() == b"an earlier run"
    assert demo.main(["--overwrite"]) == 0
    assert ran[-1]["2_Training.ipynb"] == {"overwrite": True}  # training is told it may replace the run
    assert ran[-1]["3_Inference.ipynb"] == {"figure_path": "images/demo_captions.png"}  # the README's picture


def test_saved_notebooks_show_no_progress_bar_short_of_100_percent(tmp_path):
    import nbformat

    from tools import demo
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="caching:   0%|  | 0/8 [00:00<?, ?it/s]\rcaching:  50%|#"
                               " | 4/8\rcaching: 100%|##| 8/8 [00:01<00:00]\ntokenizing:   0%|  | 0/25\n"),
        nbformat.v4.new_output("stream", name="stdout", text="epoch 1/7: CIDEr 2.9\n"),
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                                     "text/plain": "validate:   0%|          | 0/16"}),
        nbformat.v4.new_output("display_data", data={"text/plain": "a figure"})]
    notebook.cells.append(cell)
    assert demo.drop_frozen_bars(notebook)
    texts = [output.get("text", output.get("data", {}).get("text/plain")) for output in cell.outputs]
    assert texts == ["caching: 100%|##| 8/8 [00:01<00:00]\n", "epoch 1/7: CIDEr 2.9\n", "a figure"]
    assert not demo.drop_frozen_bars(notebook)  # nothing more to remove
    for name in demo.NOTEBOOKS:  # the committed notebooks, as make demo leaves them
        assert not demo.drop_frozen_bars(nbformat.read(demo.ROOT / name, as_version=4)), name


PROGRESS_BAR = re.compile(r"\d+%\||\|\s*\d+/\d+ \[")  # "epoch 3:   0%|   | 0/94", "| 0/16 [00:00<?"


def log_walls(notebook: nbformat.NotebookNode) -> list[str]:
    """What a reader of a saved notebook should not see: progress bars (frozen or finished), stderr output,
    widgets (their text stand-in is their first frame), <pad> words and "METEOR computed." noise."""
    found = []
    for number, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            text = output.get("text") or str(output.get("data", {}).get("text/plain", ""))
            text += str(output.get("data", {}).get("text/markdown", ""))
            if output.get("name") == "stderr":
                found.append(f"cell {number}: stderr {text[:60]!r}")
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                found.append(f"cell {number}: a widget")
            for noise in (PROGRESS_BAR, re.compile(re.escape("<pad>")), re.compile("METEOR computed")):
                if noise.search(text):
                    found.append(f"cell {number}: {noise.search(text).group()!r} in {text[:60]!r}")
    return found


def test_the_log_wall_check_finds_bars_stderr_and_pad():
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="epoch 3:   0%|          | 0/94\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="warning\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="words: ['.', '<end>', '<pad>']\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="epoch 1/7: CIDEr 2.9; 50 s, 5 min left\n"),
                    nbformat.v4.new_output("display_data", data={"text/plain": "caching: 100%|####| 47/47 [00:03]"})]
    notebook.cells.append(cell)
    assert len(log_walls(notebook)) == 4


def test_committed_notebooks_show_no_log_wall():
    """Needs notebooks saved by make demo after captioning/progress.py (the bars' summary lines) came in."""
    for name in demo.NOTEBOOKS:
        notebook = nbformat.read(demo.ROOT / name, as_version=4)
        assert not log_walls(notebook), f"{name}: {log_walls(notebook)[:3]}"


def test_the_training_cell_shows_the_values_it_runs_with():
    """Notebook 2's parameter cell spells out its recipe's values (the demo recipe's), and they are the recipe's."""
    notebook = nbformat.read(demo.ROOT / "2_Training.ipynb", as_version=4)
    cell = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    values: dict = {}
    exec(cell.source, {}, values)  # noqa: S102 -- the notebook's own parameter cell: assignments only
    recipe = load_recipe(demo.ROOT / values["recipe"])  # its groups' settings, flat
    settings = {name: value for name, value in values.items() if name in recipe and name not in ("data_dir", "recipe")}
    assert len(settings) >= 10 and None not in settings.values()
    assert settings == {name: recipe[name] for name in settings}


def test_papermill_reads_every_parameter_of_every_notebook(capsys):
    """papermill --help-notebook lists, and -p sets, only what it can parse; a comment holding '=' hides a line."""
    from papermill.translators import PythonTranslator
    for name in demo.NOTEBOOKS:
        notebook = nbformat.read(demo.ROOT / name, as_version=4)
        cell = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
        assigned = [line.split("=")[0].strip() for line in cell.source.splitlines() if re.match(r"\w+\s*=", line)]
        assert [parameter.name for parameter in PythonTranslator.inspect(cell)] == assigned, name
    assert "Unable to parse" not in capsys.readouterr().out


def test_demo_overwrite_reaches_the_training_notebook_in_a_quick_run_too(tmp_path, monkeypatch, capsys):
    """--quick --overwrite: the quick run's own models in --output-dir are replaced, as asked (it was ignored)."""
    given = {}
    monkeypatch.setattr(demo, "run_notebooks", lambda parameters, output_dir, echo: given.update(parameters) or 1.0)
    assert demo.main(["--output-dir", str(tmp_path), "--quick", "--overwrite"]) == 0
    assert given["2_Training.ipynb"]["overwrite"] is True and given["2_Training.ipynb"]["epochs"] == 1
    given.clear()
    assert demo.main(["--output-dir", str(tmp_path), "--quick"]) == 0
    assert "overwrite" not in given["2_Training.ipynb"]
