"""Demo: execute the four notebooks in order with papermill on the built-in synthetic set, outputs saved in place.

    python tools/demo.py                 # what `make demo` runs
    python tools/demo.py --output-dir runs/demo --quick   # a one-minute smoke run that leaves the notebooks untouched
"""
from __future__ import annotations

import argparse
import io
import re
import sys
import time
from pathlib import Path
from typing import TextIO

import nbformat
import papermill

NOTEBOOKS = ("0_Dataset.ipynb", "1_Preliminaries.ipynb", "2_Training.ipynb", "3_Inference.ipynb")
ROOT = Path(__file__).resolve().parents[1]  # the repository, where the notebooks are
README_FIGURE = "images/demo_captions.png"  # rewritten by the full demo only


def quick_parameters(work: str) -> dict[str, dict]:
    """Tiny dataset, one pretraining epoch and two short epochs (the second self-critical): enough to exercise
    every cell."""
    data, models = f"{work}/data", f"{work}/models"
    return {"0_Dataset.ipynb": {"data_dir": data, "n_train": 40, "n_val": 12, "n_test": 12},
            "1_Preliminaries.ipynb": {"data_dir": data, "out": models, "vocab_threshold": 1},
            "2_Training.ipynb": {"data_dir": data, "out": models, "pretrain_epochs": 1, "epochs": 1,
                                 "scst_epochs": 1, "max_steps_per_epoch": 2, "vocab_threshold": 1},
            "3_Inference.ipynb": {"checkpoint": f"{models}/best.pt", "show": 4,
                                  "figure_path": f"{work}/captions.png"}}


class CellOutput(io.TextIOBase):
    """Where papermill copies what the cells print: to our stdout, indented under the notebook's name, without
    the Java tokenizer's per-call token count (pycocoevalcap prints one each time captions are scored) and with
    only the finished state of each text progress bar."""

    UNFINISHED_BAR = re.compile(r"(?<!100)%\|.*\|")  # "tokenizing captions:  42%|████      | 6300/15000 ..."

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip() and not line.startswith("PTBTokenizer tokenized") and not self.UNFINISHED_BAR.search(line):
                self.stream.write(f"    {line}\n")
        self.stream.flush()
        return len(text)


def run_notebooks(parameters: dict[str, dict] | None = None, output_dir: str | Path | None = None,
                  echo: bool = False) -> float:
    """Execute the notebooks in order (in place unless output_dir); returns the seconds taken.

    echo: print what the cells print (each training epoch with its validation score and the time left) as they run.
    """
    started = time.time()
    output = CellOutput() if echo else None
    for number, name in enumerate(NOTEBOOKS, 1):
        target = Path(output_dir) / name if output_dir else ROOT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"[{number}/{len(NOTEBOOKS)}] {name} -> {_shown(target)} ({(time.time() - started) / 60:.1f} min "
              f"so far)", flush=True)
        # The kernel's own log (its warning that a local kernel talks over TCP, its note of the interrupt that
        # jupyter_client sends before every shutdown) is not about the notebook: errors in cells and a kernel that
        # dies still reach us through papermill.
        papermill.execute_notebook(_shown(ROOT / name), _shown(target), parameters=(parameters or {}).get(name, {}),
                                   cwd=str(ROOT), kernel_name="python3", progress_bar=False,
                                   stdout_file=output, stderr_file=output,
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
        drop_widget_state(target)
    return time.time() - started


def drop_frozen_bars(notebook: nbformat.NotebookNode) -> bool:
    """Remove the progress bars a saved notebook would show unfinished: the frames of text bars short of 100%
    (a stream keeps its other lines and each bar's last frame) and widget bars, whose text fallback is their
    first frame, 0%, once the widget state is gone. Returns whether anything changed."""
    changed = False
    for cell in notebook.cells:
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                lines = [line.split("\r")[-1] for line in output.get("text", "").split("\n")]
                text = "\n".join(line for line in lines if not CellOutput.UNFINISHED_BAR.search(line))
                changed |= text != output.get("text", "")
                if text.strip():
                    output["text"] = text
                    kept.append(output)
            elif ("application/vnd.jupyter.widget-view+json" in output.get("data", {})
                  and CellOutput.UNFINISHED_BAR.search(str(output["data"].get("text/plain", "")))):
                changed = True
            else:
                kept.append(output)
        if "outputs" in cell:
            cell["outputs"] = kept
    return changed


def drop_widget_state(path: Path) -> None:
    """Remove the saved state of the progress-bar widgets the kernel drew (hundreds of KB in the notebook's
    metadata, useless once the run is over) and the bars that would then read as unfinished (drop_frozen_bars)."""
    notebook = nbformat.read(path, as_version=4)
    widgets = notebook.metadata.pop("widgets", None) is not None
    if drop_frozen_bars(notebook) or widgets:
        nbformat.write(notebook, path)


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is below it: papermill records it in the notebook."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", help="write the executed notebooks here instead of in place")
    parser.add_argument("--quick", action="store_true", help="tiny data, one short epoch (needs --output-dir)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run an earlier demo left in models/ (refused otherwise)")
    args = parser.parse_args(argv)
    if args.quick and not args.output_dir:
        parser.error("--quick needs --output-dir, so that the committed demo outputs are not replaced")
    parameters = quick_parameters(str(Path(args.output_dir).resolve())) if args.quick else None
    if not args.quick:
        existing = [name for name in ("best.pt", "last.pt") if (ROOT / "models" / name).exists()]
        if existing and not args.overwrite:  # checked here, not after two notebooks have run
            print(f"error: models/ holds a trained run already ({', '.join(existing)}): move it away, or replace "
                  f"it with 'make demo DEMO_FLAGS=--overwrite' (python tools/demo.py --overwrite)", file=sys.stderr)
            return 2
        # The README's picture is refreshed with the committed notebooks, not by a run saved elsewhere.
        parameters = {} if args.output_dir else {"3_Inference.ipynb": {"figure_path": README_FIGURE}}
    if args.overwrite:  # the quick run's models too, in its --output-dir
        parameters.setdefault("2_Training.ipynb", {})["overwrite"] = True
    try:
        seconds = run_notebooks(parameters, args.output_dir, echo=True)
    except papermill.PapermillExecutionError as error:
        print(f"error: notebook failed: {error.ename}: {error.evalue}", file=sys.stderr)
        return 1
    print(f"demo finished in {seconds / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
