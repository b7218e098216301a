"""The four notebooks run top to bottom with small parameters and leave their artefacts and pictures behind."""
from __future__ import annotations

import json

import nbformat

import demo


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

    import demo
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
