"""Ctrl-C before a command has started its work: the documented commands end quietly, with status 130.

Importing torch takes seconds, and a Ctrl-C then would print a traceback through the import machinery; once a
command runs, it catches KeyboardInterrupt itself (saving what it has) and returns 130.
"""
from __future__ import annotations

import sys


def quiet_interrupts() -> None:
    """Make a KeyboardInterrupt that nothing caught end the process without a traceback (Python still exits as
    interrupted: status 130); any other uncaught exception is reported as before."""
    previous = sys.excepthook

    def report(kind, value, traceback) -> None:
        if not issubclass(kind, KeyboardInterrupt):
            previous(kind, value, traceback)
    sys.excepthook = report
