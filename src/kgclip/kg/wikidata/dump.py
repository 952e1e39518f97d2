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
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

import orjson

from kgclip.kg.wikidata.item import Item, from_record, parse_line, to_record
from kgclip.kg.wikidata.rules import GRAPH_PROPS, Graph
from kgclip.progress import console, meter
from kgclip.workdir import atomic_write_bytes
from kgclip.workers import process_pool

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
#: a spill record: this length (little-endian uint32), then that many bytes of JSON
RECORD_HEADER = struct.Struct("<I")


class DumpError(RuntimeError):
    """A dump that cannot be read (missing, unknown compression, decompressor failure)."""


@dataclass
class BlockResult:
    lines: int = 0
    parsed: int = 0
    edges: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {p: [] for p in GRAPH_PROPS})
    candidates: list[Item] = field(default_factory=list)


def _same(value: Any) -> Any:
    return value


class Spill(Generic[T]):
    """Candidates go to a file as they arrive, so memory stays flat however many items qualify
    (without an image requirement that is most of Wikidata); iterating reads them back. With a
    `path` the file persists (a resumable scan); without, it is an anonymous temporary file.

    Each `add` appends one record: a 4-byte length, then the chunk as JSON. A data format, not
    pickle, because the file lives in the workdir: whoever can write there could otherwise make
    a resumed scan run their code. `encode` and `decode` turn an element into JSON data and back.
    """

    def __init__(
        self,
        path: Path | None = None,
        keep_bytes: int = 0,
        count: int = 0,
        encode: Callable[[T], Any] = _same,
        decode: Callable[[Any], T] = _same,
    ) -> None:
        if path is None:
            self._fh = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the Spill
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a+b")  # noqa: SIM115 - lives as long as the Spill
            self._fh.truncate(keep_bytes)
        self._count = count
        self._encode = encode
        self._decode = decode

    def add(self, items: list[T]) -> None:
        if items:
            data = orjson.dumps([self._encode(i) for i in items])
            self._fh.seek(0, os.SEEK_END)
            self._fh.write(RECORD_HEADER.pack(len(data)) + data)
            self._count += len(items)

    def sync(self) -> int:
        """Flush to disk; returns the size, which a checkpoint records."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self._fh.seek(0, os.SEEK_END)

    def chunks(self) -> Iterator[list[T]]:
        self._fh.flush()
        self._fh.seek(0)
        while (data := self._next_record()) is not None:
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise DumpError(f"a wikidata scan state file is not JSON records ({exc})") from None
            yield [self._decode(x) for x in chunk]

    def _next_record(self) -> bytes | None:
        """The next record's JSON, None at the end; a torn record (a kill mid-write that no
        checkpoint covers) cannot happen after a resume, which truncates to the checkpoint."""
        header = self._fh.read(RECORD_HEADER.size)
        if not header:
            return None
        if len(header) == RECORD_HEADER.size:
            (size,) = RECORD_HEADER.unpack(header)
            data = self._fh.read(size)
            if len(data) == size:
                return data
        raise DumpError("a wikidata scan state file ends in a torn record; delete cache/wikidata-scan")

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[T]:
        for chunk in self.chunks():
            yield from chunk

    def close(self) -> None:
        self._fh.close()


@dataclass
class Scan:
    graph: Graph
    candidates: Spill[Item]
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


CHECKPOINT = "checkpoint.json"
CANDIDATES = "candidates.records"
EDGES = "edges.records"
#: part of the checkpoint identity: state written in another layout is never resumed
STATE_FORMAT = "json-records-1"
#: what kgclip before STATE_FORMAT left in a state folder; never read, removed when found
PICKLED_STATE = ("candidates.pickle", "edges.pickle")


def scan(
    path: Path,
    require_image: bool,
    workers: int = 0,
    state_dir: Path | None = None,
    block_bytes: int = BLOCK_BYTES,
    checkpoint_s: float = 30.0,
) -> Scan:
    """One pass over the dump; workers = 0 means one per core.

    With `state_dir` the scan is resumable: candidates and graph edges are appended to files
    there, and every `checkpoint_s` seconds both are fsynced and a checkpoint records how many
    decompressed bytes are done. Killed at any point, a rerun truncates the files to the last
    checkpoint, skips that many bytes of the stream (decompression only, no parsing) and goes
    on. Close `result.candidates` when done.
    """
    if not path.is_file():
        raise DumpError(f"{path}: no such dump file")
    workers = workers or os.cpu_count() or 1
    identity = _identity(path, require_image)
    start = _load_checkpoint(state_dir, identity)
    candidates = Spill(
        state_dir / CANDIDATES if state_dir else None,
        start["spill"],
        start["candidates"],
        encode=to_record,
        decode=from_record,
    )
    edges_log: Spill[Any] | None = Spill(state_dir / EDGES, start["edges"]) if state_dir else None
    result = Scan(Graph(), candidates, start["lines"], start["parsed"], start["bytes"])
    try:
        if edges_log is not None:
            for chunk in edges_log.chunks():
                for prop, pairs in chunk:
                    result.graph.add_edges(prop, pairs)
        work = partial(scan_block, require_image=require_image)
        last = time.monotonic()
        with dump_stream(path) as stream, meter(f"wikidata dump {path.name} (MiB read)", None) as m:
            _skip(stream, result.bytes)
            sizes: list[int] = []

            def measured() -> Iterator[bytes]:
                for block in blocks(stream, block_bytes):
                    sizes.append(len(block))
                    yield block

            for part in ordered_map(work, measured(), workers):
                result.lines += part.lines
                result.parsed += part.parsed
                pairs = [(prop, edges) for prop, edges in part.edges.items() if edges]
                for prop, edges in pairs:
                    result.graph.add_edges(prop, edges)
                result.candidates.add(part.candidates)
                if edges_log is not None:
                    edges_log.add(pairs)
                done = sizes.pop(0)
                result.bytes += done
                m.advance(done >> 20)
                if (
                    state_dir is not None
                    and edges_log is not None
                    and time.monotonic() - last >= checkpoint_s
                ):
                    _save_checkpoint(state_dir, identity, result, edges_log)
                    last = time.monotonic()
    except BaseException:
        candidates.close()  # the caller closes it only when the scan succeeds
        raise
    finally:
        if edges_log is not None:
            edges_log.close()
    return result


def _identity(path: Path, require_image: bool) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{require_image}:{STATE_FORMAT}"


def _load_checkpoint(state_dir: Path | None, identity: str) -> dict[str, Any]:
    """The checkpoint to resume from, or a fresh start when there is none that fits this scan:
    one for another dump or state layout, or one whose files are shorter than it says."""
    fresh = {"bytes": 0, "lines": 0, "parsed": 0, "candidates": 0, "spill": 0, "edges": 0}
    if state_dir is None:
        return fresh
    _drop_pickled_state(state_dir)
    if not (state_dir / CHECKPOINT).is_file():
        return fresh
    saved = orjson.loads((state_dir / CHECKPOINT).read_bytes())
    if saved.get("identity") != identity:
        return fresh
    for name, size in ((CANDIDATES, saved["spill"]), (EDGES, saved["edges"])):
        file = state_dir / name
        if not file.is_file() or file.stat().st_size < size:
            console.print(f"wikidata: scan state {file} is shorter than its checkpoint; the scan starts over")
            return fresh
    return saved


def _drop_pickled_state(state_dir: Path) -> None:
    """Pickle files from an older kgclip are never loaded (unpickling runs code): removed, so the
    scan starts over from a checkpoint that fits the current layout (the old one no longer does)."""
    for name in PICKLED_STATE:
        old = state_dir / name
        if old.is_file():
            console.print(f"wikidata: ignoring {old} (scan state of an older kgclip)")
            old.unlink()


def _save_checkpoint(state_dir: Path, identity: str, result: Scan, edges_log: Spill) -> None:
    state = {
        "identity": identity,
        "bytes": result.bytes,
        "lines": result.lines,
        "parsed": result.parsed,
        "candidates": len(result.candidates),
        "spill": result.candidates.sync(),
        "edges": edges_log.sync(),
    }
    atomic_write_bytes(state_dir / CHECKPOINT, orjson.dumps(state))


def _skip(stream: BinaryIO, count: int) -> None:
    while count > 0:
        chunk = stream.read(min(count, BLOCK_BYTES))
        if not chunk:
            raise DumpError("the dump is shorter than the checkpoint says; delete the scan state")
        count -= len(chunk)


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
    with process_pool(workers) as pool:
        window: deque[Future[T]] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
