"""The run folder: its files, the lock that keeps one run in it, the log, --overwrite's setting aside, and signals held
while a step or a save must finish."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # Windows: one run per folder is then up to the user
    fcntl = None
from captioning.checkpoint import CheckpointError
from captioning.files import check_file


LOG_NAME = "train_log.jsonl"


LOCK_NAME = ".train.lock"  # held (flock) by the run writing to the folder


PRETRAINED_NAME = "encoder_pretrained.pth"  # the CNN pretrained by a run with pretrain_epochs, in its folder


PRETRAINED_CONFIG = "encoder_pretrained.json"  # the config of the run that pretrained it, written just before it


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then act on them as usual (main thread only)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    # Python-level handlers rather than a signal mask: a mask covers one thread, and any of torch's threads
    # can receive a signal that Python then raises in the main thread.
    received: list[int] = []
    previous = {number: signal.signal(number, lambda caught, frame: received.append(caught))
                for number in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(number) is not None}  # None: a handler set outside Python, left alone
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            signal.raise_signal(received[0])


def open_log(out: Path, fresh: bool):
    """Append JSON lines to out/train_log.jsonl (emptied first for a fresh run); returns a writer of one entry."""
    out.mkdir(parents=True, exist_ok=True)
    path = check_file(out / LOG_NAME, "the training log")
    if fresh:
        path.write_text("")

    def log(entry: dict[str, Any]) -> None:
        with path.open("a") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **entry}) + "\n")
    return log


def read_log(out: str | Path) -> list[dict[str, Any]]:
    """The training log's entries (for the notebooks' plots)."""
    path = Path(out) / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@contextlib.contextmanager
def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold the run folder for this run: one training run at a time (a lock the operating system releases when the
    process ends, however it ends), and a new run never replaces another run's checkpoints unless asked to."""
    if resume and not out.is_dir():
        raise CheckpointError(f"--resume: no checkpoint to resume from at {out / 'last.pt'}")
    out.mkdir(parents=True, exist_ok=True)
    with open(check_file(out / LOCK_NAME, "the run folder's lock"), "a+") as lock:
        if fcntl is not None:  # not on Windows
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                owner = lock.read().strip() or "another process"
                raise CheckpointError(f"another training run ({owner}) is using {out}: wait for it to finish, "
                                      f"or give another --out") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        settle_replaced_run(out)  # left by a run killed before it could
        existing = [name for name in ("last.pt", "best.pt") if (out / name).exists()]
        if existing and not resume and not overwrite:
            raise CheckpointError(f"{out} holds a training run already ({', '.join(existing)}): continue it with "
                                  f"--resume, give another --out, or add --overwrite to replace it")
        if existing and not resume:
            set_run_aside(out)
        try:
            yield
        finally:
            settle_replaced_run(out)


REPLACING_NAME, REPLACED_NAME = ".replacing_run", ".replaced_run"  # in a run folder, the run --overwrite replaces


def set_run_aside(out: Path) -> None:
    """Move the run in out aside whole (--overwrite), so that the new run never mixes its files with the old run's;
    settle_replaced_run deletes it once the new run has a checkpoint, or puts it back if it ends without one."""
    moving = out / REPLACING_NAME
    moving.mkdir()
    for entry in list(out.iterdir()):
        if entry.name not in (LOCK_NAME, REPLACING_NAME):
            entry.rename(moving / entry.name)
    moving.rename(out / REPLACED_NAME)  # only a whole run is ever "replaced"


def settle_replaced_run(out: Path) -> None:
    """The run that --overwrite set aside: gone once the new run wrote last.pt, back in place otherwise."""
    moving, aside = out / REPLACING_NAME, out / REPLACED_NAME
    if moving.is_dir():  # killed while setting the old run aside: everything in out is the old run's
        for entry in list(moving.iterdir()):
            entry.rename(out / entry.name)
        moving.rmdir()
    if not aside.is_dir():
        return
    if (out / "last.pt").exists():  # the new run's: the old run is replaced
        shutil.rmtree(aside)
        return
    for entry in list(out.iterdir()):  # what the new run wrote before it failed: it ends with nothing to keep
        if entry.name not in (LOCK_NAME, REPLACED_NAME):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for entry in list(aside.iterdir()):
        entry.rename(out / entry.name)
    aside.rmdir()
    print(f"the new run saved no checkpoint, so the run it was to replace is back in {out}", file=sys.stderr)
