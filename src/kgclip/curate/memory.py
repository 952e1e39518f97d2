"""How curate's memory goes back to the system: its grouping alternates Arrow tables and numpy arrays
of a few hundred MB, and what matters at nine million pictures is that a freed array's pages leave
the process instead of waiting in an allocator for a reuse that may not come."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MAPPED = 128 * 1024  # glibc's starting threshold, held fixed while curate runs
WARM = 32 * 1024 * 1024  # the most glibc's moving threshold reaches (DEFAULT_MMAP_THRESHOLD_MAX)


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's `mallopt` from the symbols already loaded (no `find_library`, which runs ldconfig),
    or None elsewhere (macOS has none; musl's does nothing)."""
    return getattr(ctypes.CDLL(None), "mallopt", None)


_MALLOPT = _mallopt()


def release() -> None:
    """Give the memory Arrow's allocator keeps for reuse back to the system."""
    pa.default_memory_pool().release_unused()


@contextmanager
def compact_memory() -> Iterator[None]:
    """Two allocator settings while curate runs, each measured on `benchmarks/curate_scale.py`:

    - Arrow's buffers come from the C library's allocator: pyarrow's default (mimalloc) kept the
      pages Arrow freed, which numpy (on malloc) could not reuse (at 300,000 pictures the grouping's
      peak was 412 MiB with mimalloc, 315 MiB without).
    - glibc maps every block of 128 KiB or more on its own, so freeing an array unmaps it. By
      default glibc raises that threshold to the size of each mapped block freed (up to 32 MiB), and
      blocks under it come from the heap, whose freed middle stays in the process: at 300,000
      pictures the memory held between curate's steps was 302 MiB against 245 MiB with the fixed
      threshold, and the steps' peaks rose with it. On leaving, the threshold is set to 32 MiB,
      where the moving one settles in a long process (a training loop's tensors stay on the heap).
    """
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, MAPPED)
    try:
        yield
    finally:
        if _MALLOPT is not None:
            _MALLOPT(_M_MMAP_THRESHOLD, WARM)
        pa.set_memory_pool(before)
