"""Streaming the Wikidata JSON dump (`latest-all.json.gz|.bz2|.zst` or plain) in one pass.

The dump is ~1.4 TB of JSON, one entity per line. It is never loaded: an external decompressor
(pigz, lbzip2, zstd when installed; they run beside Python on another core) feeds blocks of
lines to a process pool. Workers drop most lines with substring tests before any JSON parsing
and return only (a) the class, taxon and product edges of the whole graph and (b) candidate
items that could be selected (an English label, an image when required, some typing claim),
which spill to a temporary file. Selection then runs over the spilled candidates once the graph
is complete (see rules.py): one read of the dump, with memory bounded by the graph.
"""

from __future__ import annotations

import bz2
import gzip
import os
import pickle
import re
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO, TypeVar

from kgclip.kg.wikidata.item import Item, parse_line
from kgclip.kg.wikidata.rules import GRAPH_PROPS, Graph
from kgclip.progress import meter

T = TypeVar("T")
BLOCK_BYTES = 8 << 20
DECOMPRESSORS: dict[str, list[list[str]]] = {
    ".gz": [["pigz", "-dc"], ["gzip", "-dc"]],
    ".bz2": [["lbzip2", "-dc"], ["pbzip2", "-dc"], ["bzip2", "-dc"]],
    ".zst": [["zstd", "-dc", "-q"]],
}
PY_OPENERS = {".gz": gzip.open, ".bz2": bz2.open}
# Substring tests that must hold for a line to matter; they are cheap next to JSON parsing.
GRAPH_MARKERS = tuple(f'"{p}"'.encode() for p in GRAPH_PROPS)
EN_LABEL = b'"en":{"language":"en","value"'
IMAGE = b'"P18"'
TYPING = ("P31", "P279", "P171", "P1582")


class DumpError(RuntimeError):
    """A dump that cannot be read (missing, unknown compression, decompressor failure)."""


@dataclass
class BlockResult:
    lines: int = 0
    parsed: int = 0
    edges: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {p: [] for p in GRAPH_PROPS})
    candidates: list[Item] = field(default_factory=list)


class Spill:
    """Candidates go to a temporary file as they arrive, so memory stays flat however many items
    qualify (without an image requirement that is most of Wikidata); iterating reads them back."""

    def __init__(self, directory: Path | None = None) -> None:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self._fh = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - lives as long as the Spill
        self._count = 0

    def add(self, items: list[Item]) -> None:
        if items:
            self._fh.seek(0, os.SEEK_END)
            pickle.dump(items, self._fh, protocol=pickle.HIGHEST_PROTOCOL)
            self._count += len(items)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Item]:
        self._fh.flush()
        self._fh.seek(0)
        while True:
            try:
                chunk = pickle.load(self._fh)
            except EOFError:
                return
            yield from chunk

    def close(self) -> None:
        self._fh.close()


@dataclass
class Scan:
    graph: Graph
    candidates: Spill
    lines: int
    parsed: int
    bytes: int


def decompressor(path: Path) -> list[str] | None:
    """The first installed external decompressor for the file's suffix, or None for plain JSON."""
    suffix = path.suffix.lower()
    if suffix not in DECOMPRESSORS:
        return None
    for cmd in DECOMPRESSORS[suffix]:
        if shutil.which(cmd[0]):
            return cmd
    if suffix in PY_OPENERS:
        return []
    raise DumpError(
        f"{path}: no {suffix} decompressor found; install one of "
        + ", ".join(c[0] for c in DECOMPRESSORS[suffix])
    )


@contextmanager
def dump_stream(path: Path) -> Iterator[BinaryIO]:
    if not path.is_file():
        raise DumpError(f"{path}: no such dump file")
    cmd = decompressor(path)
    if cmd is None:
        with open(path, "rb") as fh:
            yield fh
        return
    if not cmd:
        with PY_OPENERS[path.suffix.lower()](path, "rb") as fh:
            yield fh  # type: ignore[misc]
        return
    proc = subprocess.Popen([*cmd, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        yield proc.stdout
    finally:
        proc.stdout.close()
        _, err = proc.communicate()
    if proc.returncode not in (0, None) and proc.returncode != -13:  # -13: we stopped reading (SIGPIPE)
        raise DumpError(
            f"{path}: {cmd[0]} failed ({proc.returncode}): {err.decode(errors='replace').strip()}"
        )


def blocks(stream: BinaryIO, size: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Blocks of whole lines: each ends at a newline, the remainder carries into the next."""
    rest = b""
    while chunk := stream.read(size):
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        rest = data[cut:]
        yield data[:cut]
    if rest:
        yield rest


def scan_block(block: bytes, require_image: bool) -> BlockResult:
    """Runs in a worker: prefilter each line, parse the survivors, keep edges and candidates."""
    out = BlockResult()
    for line in block.split(b"\n"):
        if not line:
            continue
        out.lines += 1
        in_graph = any(marker in line for marker in GRAPH_MARKERS)
        candidate = EN_LABEL in line and (not require_image or IMAGE in line)
        if not (in_graph or candidate):
            continue
        item = parse_line(line)
        if item is None:
            continue
        out.parsed += 1
        for prop in ("P279", "P171"):
            out.edges[prop].extend((parent, item.qid) for parent in item.values(prop))
        out.edges["P1672"].extend((item.qid, product) for product in item.values("P1672"))
        if candidate and item.label and (not require_image or item.first("P18")) and _typed(item):
            out.candidates.append(item)
    return out


def _typed(item: Item) -> bool:
    return any(item.values(p) for p in TYPING)


def scan(path: Path, require_image: bool, workers: int = 0, spill_dir: Path | None = None) -> Scan:
    """One pass over the dump; workers = 0 means one per core. Candidates spill to `spill_dir`
    (default: the system's temporary folder); close `result.candidates` when done."""
    workers = workers or os.cpu_count() or 1
    result = Scan(Graph(), Spill(spill_dir), 0, 0, 0)
    work = partial(scan_block, require_image=require_image)
    with dump_stream(path) as stream, meter(f"wikidata dump {path.name} (MiB read)", None) as m:
        sizes: list[int] = []

        def measured() -> Iterator[bytes]:
            for block in blocks(stream):
                sizes.append(len(block))
                yield block

        for part in ordered_map(work, measured(), workers):
            result.lines += part.lines
            result.parsed += part.parsed
            for prop, edges in part.edges.items():
                result.graph.add_edges(prop, edges)
            result.candidates.add(part.candidates)
            done = sizes.pop(0)
            result.bytes += done
            m.advance(done >> 20)
    return result


ID_PREFIX = re.compile(rb'^\{"type":"item","id":"Q(\d+)"')


def label_block(block: bytes, wanted: frozenset[int]) -> dict[int, str]:
    """Runs in a worker: English labels of the wanted items, parsing only their lines."""
    found = {}
    for line in block.split(b"\n"):
        match = ID_PREFIX.match(line)
        if match and int(match.group(1)) in wanted:
            item = parse_line(line)
            if item is not None and item.label:
                found[item.qid] = item.label
    return found


def labels(path: Path, qids: set[int], workers: int = 0) -> dict[int, str]:
    """A second pass for the labels of a few items (the values of hint properties): each line's
    id is read off its first bytes, so only the wanted lines are parsed."""
    if not qids:
        return {}
    workers = workers or os.cpu_count() or 1
    found: dict[int, str] = {}
    with (
        dump_stream(path) as stream,
        meter(f"wikidata dump {path.name}: {len(qids):,} labels", len(qids)) as m,
    ):
        for part in ordered_map(partial(label_block, wanted=frozenset(qids)), blocks(stream), workers):
            found.update(part)
            m.advance(len(part))
    return found


def ordered_map(fn: Callable[[bytes], T], items: Iterator[bytes], workers: int) -> Iterator[T]:
    """`map` over a process pool with at most 2 blocks per worker in flight, so memory stays
    bounded however large the dump (Executor.map would read the whole input first)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        window: deque[Future[T]] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
