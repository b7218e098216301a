"""Progress reads right in a terminal, in a headless notebook run and in a live Jupyter session."""
from __future__ import annotations

import nbclient
import nbformat
import pytest

from captioning import progress


def test_a_terminal_keeps_tqdm_bars(capsys):
    assert progress.where() == "terminal"  # pytest runs no Jupyter kernel
    for _ in progress.progress(range(3), desc="stage"):
        pass
    captured = capsys.readouterr()
    assert "stage: 100%" in captured.err and not captured.out


@pytest.mark.parametrize("summary", [True, False])
def test_a_headless_notebook_gets_one_line_per_stage_and_no_bar(monkeypatch, capsys, summary):
    monkeypatch.setattr(progress, "where", lambda: "headless")
    for _ in progress.progress(range(40), desc="caching train features", unit="batch", summary=summary):
        pass
    bar = progress.progress(total=8, desc="validate", summary=summary)
    bar.update(3)
    bar.close()
    bar.close()  # closing twice prints once
    captured = capsys.readouterr()
    expected = ["caching train features: 40 batches in", "validate: 3 of 8 in"] if summary else []
    assert [line[:len(start)] for line, start in zip(captured.out.splitlines(), expected)] == expected
    assert len(captured.out.splitlines()) == len(expected) and not captured.err


def test_disabled_bars_say_nothing(monkeypatch, capsys):
    monkeypatch.setattr(progress, "where", lambda: "headless")
    for _ in progress.progress(range(3), desc="stage", disable=True):
        pass
    assert capsys.readouterr() == ("", "")


def run_cell(source: str) -> list[dict]:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source)]
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
    return notebook.cells[0].outputs


STAGES = """from captioning import progress
{setup}
for _ in progress.progress(range(30), desc="captioning test", unit="batch"):
    pass
bar = progress.progress(total=5, desc="epoch 1", summary=False)
bar.update(5)
bar.close()
print("epoch 1/1: CIDEr 3.1")"""


@pytest.mark.parametrize("live", [False, True])
def test_a_saved_notebook_holds_the_summary_lines_and_no_bar(live):
    outputs = run_cell(STAGES.format(setup="progress.in_live_jupyter = lambda: True" if live else ""))
    texts = [output.get("text") or output.get("data", {}).get("text/plain", "") for output in outputs]
    shown = [text.strip()[:28] for text in texts if text.strip()]
    assert shown == ["captioning test: 30 batches ", "epoch 1/1: CIDEr 3.1"]
    # A live session shows widget bars while they run; each is replaced by its line once done.
    assert not [output for output in outputs if "application/vnd.jupyter.widget-view+json" in output.get("data", {})]
    assert not [output for output in outputs if output.get("name") == "stderr"]
