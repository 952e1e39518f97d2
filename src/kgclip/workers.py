"""Worker process pools that leave Ctrl-C to the main process.

A terminal's Ctrl-C reaches every process of the foreground group. Workers that took it would each
print a KeyboardInterrupt traceback and die mid-task; the main process alone stops the stage, ends
the pool, and says once that the run was interrupted.
"""

from __future__ import annotations

import signal
from concurrent.futures import ProcessPoolExecutor


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_pool(workers: int | None) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, initializer=_ignore_interrupts)
