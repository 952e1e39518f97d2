"""A FIFO that fails a test, instead of hanging it, when code opens it for reading and blocks.

Opening a FIFO for reading blocks until a writer comes. `fifo(path)` makes one; if a reader is
still blocked on it after `after` seconds, a watchdog opens it for writing (the reader then sees
an empty file and goes on) and the test fails when the block ends. Code that opens files with
O_NONBLOCK and refuses what is not a regular file never waits, so the watchdog never writes.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def fifos(*paths: Path, after: float = 5.0) -> Iterator[None]:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
    stop = threading.Event()
    blocked: list[Path] = []

    def watch() -> None:
        if stop.wait(after):
            return
        while not stop.wait(0.05):
            for path in paths:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # ENXIO: nobody is reading, as it should be
                        raise
                    continue
                blocked.append(path)

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        stop.set()
        watchdog.join()
    assert not blocked, f"a reader blocked on the FIFO {blocked[0]} until the watchdog wrote to it"
