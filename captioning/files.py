"""Files: writes that replace their target only once complete, with the permissions the user's umask gives.

One implementation for checkpoints, vocabularies, annotation and results JSON, and feature caches: write to a temp
file beside the target, flush it to disk, then rename it over the target, so that a crash, a full disk or Ctrl-C
never leaves half a file where a whole one was, and no temp file is left behind when the write fails.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file for writing (mode "wb" or "w"); on a clean exit it replaces path, on an error it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")  # the name remove_partial_saves knows
    # os.open with 0o666 lets the umask decide the permissions, as for any file the user creates
    # (tempfile.mkstemp would make it 0600: unreadable to colleagues sharing the folder).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def check_file(path: str | Path, what: str, error: type[Exception] = ValueError) -> Path:
    """The guard for every file a command is told to read or write: a path that exists and is not a regular file (a
    folder, a pipe, a socket, a device) is refused with error, in one line naming what it is for, before anything
    opens it: opening a pipe waits forever for a writer, and a device reads without end. A path that cannot be reached
    (a loop of links, no permission) is refused naming why; a missing path passes (the caller says whether it needs
    it)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:  # missing (a dangling link too): the caller says whether it needs it
        return path
    except OSError as problem:  # a loop of links, a folder it may not enter, a file where a folder should be
        raise error(f"{what} {path} cannot be reached: {problem.strerror}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is not a regular file (a pipe, a socket or a device), which would be waited on "
                    f"or read without end: give a file")
    return path


def brief(error: BaseException, limit: int = 300) -> str:
    """An exception as one short line to quote in a message: its type and text, cut at limit characters (a decode
    error's repr holds the whole file it failed on, megabytes of escaped bytes for a zip given as JSON)."""
    text = " ".join(str(error).split())
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


def write_json_atomic(path: str | Path, data: object) -> None:
    """Write data as JSON with atomic_write: a reader sees the old file or the whole new one."""
    with atomic_write(path, "w") as handle:
        json.dump(data, handle)


def sha256_file(path: str | Path, on_block=None) -> str:
    """The SHA-256 of a file, read 1 MiB at a time; on_block(bytes read) after each block (a progress bar)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
            if on_block:
                on_block(len(block))
    return digest.hexdigest()
