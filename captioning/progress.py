"""Progress bars that read right wherever they are seen: tqdm's text bars in a terminal; in a Jupyter session a
live widget bar that, once done, gives way to one summary line (or to nothing); in a notebook run headless
(papermill, nbconvert: `make demo`) no bar at all, only the summary line, since a saved notebook keeps a widget
bar's first frame, 0%, and every frame of a text bar.

    for batch in progress(loader, desc="caching train features", unit="batch"):  # "caching ...: 47 batches in 30 s"
    bar = progress(total=steps, desc="epoch 3", summary=False)  # the epoch prints its own line
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

from tqdm.std import tqdm as text_tqdm


def in_live_jupyter() -> bool:
    """Whether a person is at a Jupyter front end: papermill and nbconvert (nbclient) run the kernel without stdin,
    JupyterLab, Notebook and VS Code with it."""
    kernel = _kernel()
    return bool(getattr(kernel, "_allow_stdin", False))  # set from each execute request


def where() -> str:
    """"terminal" (no Jupyter kernel: scripts, tests, IPython in a shell), "live" (a person at a Jupyter front
    end) or "headless" (a kernel run by papermill or nbconvert)."""
    if _kernel() is None:
        return "terminal"
    return "live" if in_live_jupyter() else "headless"


def _kernel() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return getattr(get_ipython(), "kernel", None)


def format_seconds(seconds: float) -> str:
    """"0.4 s", "42 s", "3.5 min"."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class _Summarised:
    """Mixed into a tqdm class: on close, print one line saying what was done and how long it took."""

    summary: bool

    def summary_line(self) -> str:
        unit = "" if self.unit == "it" else f" {self.unit}"
        if unit and self.n != 1:
            unit += "es" if unit.endswith(("ch", "sh", "x")) else "" if unit.endswith("s") else "s"
        done = f"{self.n}{unit}" if not self.total or self.n >= self.total else f"{self.n}{unit} of {self.total:g}"
        postfix = f" ({self.postfix})" if self.postfix else ""
        return f"{self.desc}: {done} in {format_seconds(self.format_dict['elapsed'])}{postfix}"

    def close(self) -> None:
        if self.disable:  # closed already, or never shown
            return
        line = self.summary_line()
        super().close()
        if self.summary:
            print(line, flush=True)


class _Silent(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


class HeadlessBar(_Summarised, text_tqdm):
    """Counts and times like tqdm, draws nothing, prints its summary line when closed."""

    def __init__(self, *args, summary: bool = True, **kwargs) -> None:
        self.summary = summary
        super().__init__(*args, file=_Silent(), **kwargs)


def _live_class() -> type:
    from IPython.display import display
    from tqdm.notebook import tqdm as widget_tqdm

    class LiveBar(_Summarised, widget_tqdm):
        """tqdm's widget bar, replaced in its output, once closed, by its summary line (or by nothing): the
        notebook saved afterwards holds no widget, whose text stand-in would read as a bar stuck at 0%."""

        def __init__(self, *args, summary: bool = True, **kwargs) -> None:
            self.summary, self.handle = summary, None
            super().__init__(*args, display=False, **kwargs)
            if not self.disable:
                self.handle = display(self.container, display_id=True)

        def close(self) -> None:
            if self.disable:
                return
            line = self.summary_line()
            text_tqdm.close(self)  # not the widget's close, which would draw a last frame
            self.container.close()
            if self.handle is not None:
                self.handle.update({"text/plain": line if self.summary else ""}, raw=True)
    return LiveBar


def progress(iterable: Iterable | None = None, *, desc: str, summary: bool = True, unit: str = "it",
             **kwargs: Any) -> text_tqdm:
    """A tqdm bar (any of tqdm's arguments: total, disable, leave, postfix...) drawn where it reads right: see the
    module's docstring. summary: in a notebook, end with one line "desc: N units in T s" (False where the caller
    prints its own line for the stage). In a terminal the bar is tqdm's, as leave says."""
    place = where()
    if place == "terminal":
        return text_tqdm(iterable, desc=desc, unit=unit, **kwargs)
    kwargs.pop("leave", None)
    if place == "live":
        return _live_class()(iterable, desc=desc, unit=unit, summary=summary, **kwargs)
    return HeadlessBar(iterable, desc=desc, unit=unit, summary=summary, **kwargs)
