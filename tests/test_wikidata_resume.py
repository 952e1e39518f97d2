"""A dump scan killed with SIGKILL resumes from its last checkpoint and ends as an unbroken scan."""

import gzip
import subprocess
import sys
import textwrap

import orjson

from kgclip.kg.wikidata.dump import CHECKPOINT, scan
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

    real = dump.ordered_map

    def dying(fn, items, workers):
        for i, part in enumerate(real(fn, items, workers)):
            if i == int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)
            yield part

    dump.ordered_map = dying
    dump.scan(Path(sys.argv[1]), True, 1, state_dir=Path(sys.argv[2]), block_bytes=65536, checkpoint_s=0)
    """
)


def summary(result):
    graph = {p: {k: sorted(v) for k, v in t.items()} for p, t in result.graph.children.items()}
    return [i.qid for i in result.candidates], graph, result.lines, result.parsed, result.bytes


def test_killed_scan_resumes_to_the_same_result(tmp_path):
    dump = big_dump(tmp_path)
    state = tmp_path / "state"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(dump), str(state), "40"], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()
    checkpoint = orjson.loads((state / CHECKPOINT).read_bytes())
    assert checkpoint["bytes"] > 0 and checkpoint["candidates"] > 0
    assert (state / "candidates.pickle").stat().st_size >= checkpoint["spill"]  # a tail past the checkpoint
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
