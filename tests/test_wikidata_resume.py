"""A dump scan killed with SIGKILL resumes from its last checkpoint and ends as an unbroken scan.

The scan state is data (length-prefixed JSON records), never pickle: a crafted state file cannot
run code when a scan resumes.
"""

import gzip
import pickle
import subprocess
import sys
import textwrap

import orjson
import pytest

from kgclip.kg.wikidata.dump import (
    CANDIDATES,
    CHECKPOINT,
    EDGES,
    RECORD_HEADER,
    STATE_FORMAT,
    DumpError,
    _identity,
    scan,
)
from wikidata_fixture import entities


def big_dump(directory, copies: int = 12):
    """The fixture repeated with fresh QIDs: a few thousand lines, enough for many small blocks."""
    lines = []
    for k in range(copies):
        for entity in entities():
            qid = int(entity["id"][1:]) + k * 10**9
            lines.append(orjson.dumps({**entity, "id": f"Q{qid}"}))
    path = directory / "latest-all.json.gz"
    path.write_bytes(gzip.compress(b"[\n" + b",\n".join(lines) + b"\n]\n", compresslevel=1))
    return path


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from kgclip.kg.wikidata import dump

    real, save = dump.ordered_map, dump._save_checkpoint
    calls = []

    def dying(fn, items, workers):
        for i, part in enumerate(real(fn, items, workers)):
            if i == int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)
            yield part

    def every_fourth(*args):
        # blocks spilled after the last checkpoint are on disk when the kill comes: a resume must
        # cut them off, or their candidates and edges would be counted twice
        calls.append(1)
        if len(calls) % 4 == 0:
            save(*args)

    dump.ordered_map = dying
    dump._save_checkpoint = every_fourth
    dump.scan(Path(sys.argv[1]), True, 1, state_dir=Path(sys.argv[2]), block_bytes=65536, checkpoint_s=0)
    """
)


def summary(result):
    graph = {p: {k: sorted(v) for k, v in t.items()} for p, t in result.graph.children.items()}
    return [i.qid for i in result.candidates], graph, result.lines, result.parsed, result.bytes


def test_killed_scan_resumes_to_the_same_result(tmp_path):
    dump = big_dump(tmp_path)
    state = tmp_path / "state"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(dump), str(state), "42"], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()
    checkpoint = orjson.loads((state / CHECKPOINT).read_bytes())
    assert checkpoint["bytes"] > 0 and checkpoint["candidates"] > 0
    # two blocks were spilled after the last checkpoint: tails that the resume must truncate
    assert (state / CANDIDATES).stat().st_size > checkpoint["spill"]
    assert (state / EDGES).stat().st_size > checkpoint["edges"]
    resumed = scan(dump, True, 1, state_dir=state, block_bytes=65536, checkpoint_s=0)
    whole = scan(dump, True, 1, block_bytes=65536)
    try:
        assert summary(resumed) == summary(whole)
        assert len(resumed.candidates) == len(whole.candidates) > 1000
    finally:
        resumed.candidates.close()
        whole.candidates.close()


def test_a_checkpoint_for_another_dump_is_ignored(tmp_path):
    dump = big_dump(tmp_path, copies=2)
    state = tmp_path / "state"
    state.mkdir()
    (state / CHECKPOINT).write_bytes(orjson.dumps({"identity": "some other dump", "bytes": 10**6}))
    result = scan(dump, True, 1, state_dir=state)
    try:
        assert result.lines == 2 * len(entities()) + 2
    finally:
        result.candidates.close()


def _checkpoint(state, identity: str, size: int) -> None:
    counts = dict.fromkeys(("bytes", "lines", "parsed", "candidates"), 0)
    saved = {"identity": identity, **counts, "spill": size, "edges": size}
    (state / CHECKPOINT).write_bytes(orjson.dumps(saved))


class Payload:
    """Unpickling this creates `path`: proof that a state file ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_scan_state_is_never_unpickled(tmp_path):
    dump = big_dump(tmp_path, copies=2)
    state = tmp_path / "state"
    state.mkdir()
    marker = tmp_path / "code-ran"
    crafted = pickle.dumps([("P279", [(1, Payload(marker))])])
    # the layout of older versions: pickle files and a checkpoint naming them
    for name in ("edges.pickle", "candidates.pickle"):
        (state / name).write_bytes(crafted)
    _checkpoint(state, _identity(dump, True).removesuffix(":" + STATE_FORMAT), len(crafted))
    result = scan(dump, True, 1, state_dir=state)
    try:
        assert result.lines == 2 * len(entities()) + 2 and len(result.candidates) > 0  # started over
    finally:
        result.candidates.close()
    assert not marker.exists()
    assert not (state / "edges.pickle").exists() and not (state / "candidates.pickle").exists()
    # a pickle where the current layout expects records is refused as data, not run
    for name in (EDGES, CANDIDATES):
        (state / name).write_bytes(crafted)
    _checkpoint(state, _identity(dump, True), len(crafted))
    with pytest.raises(DumpError, match="scan state"):
        scan(dump, True, 1, state_dir=state)
    assert not marker.exists()
    # ... and so is a well-formed record whose payload is a pickle: records hold JSON, never pickle
    record = RECORD_HEADER.pack(len(crafted)) + crafted
    for name in (EDGES, CANDIDATES):
        (state / name).write_bytes(record)
    _checkpoint(state, _identity(dump, True), len(record))
    with pytest.raises(DumpError, match="not JSON records"):
        scan(dump, True, 1, state_dir=state)
    assert not marker.exists()
