"""A copy of the demo harvest with hostile texts planted, for the viewer's tests."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kgclip.tario import add_member

KEY = "000000000"  # the demo's koala
ENTITY = "wn:n01882714"  # koala
SCRIPT = "<script>window.__xss = 1</script>"
ONERROR = '<img src=x onerror="window.__xss = 2">'
BREAKOUT = '"><svg onload="window.__xss = 3">'
JS_URL = "javascript:window.__xss = 4"
PAYLOADS = (SCRIPT, ONERROR, BREAKOUT)


def hostile_copy(demo: Path, dst: Path) -> Path:
    """The demo work directory with payloads in the koala picture's alt texts, caption, URLs and shard
    JSON, in the koala entity's description, and in a curate rejection's detail (the crow)."""
    shutil.copytree(demo, dst)
    _set_sample(dst / "samples.parquet")
    _set_description(dst / "entities.parquet")
    _set_shard_json(dst / "shards" / "shard-00000.tar")
    _add_curate_rejection(dst)
    return dst


def _add_curate_rejection(workdir: Path) -> None:
    """A fetched picture that curate dropped as an evaluation set's copy (the demo drops none)."""
    fetched = pq.read_table(workdir / "fetched.parquet").to_pylist()
    url = next(r["url"] for r in fetched if r["status"] == "ok" and r["url"].endswith("/crow.png"))
    table = pq.read_table(workdir / "rejected.parquet")
    row = {"stage": "curate", "item": url, "reason": "eval_copy", "detail": f"cub:{SCRIPT} (distance 3)"}
    extra = pa.Table.from_pylist([row], schema=table.schema)
    pq.write_table(pa.concat_tables([table, extra]), workdir / "rejected.parquet")


def _replace(table: pa.Table, name: str, values: list) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))


def _set_sample(path: Path) -> None:
    table = pq.read_table(path)
    row = table.column("key").to_pylist().index(KEY)
    alts = table.column("alt_texts").to_pylist()
    alts[row] = [*alts[row], *PAYLOADS]
    urls = table.column("urls").to_pylist()
    urls[row] = [*urls[row], JS_URL]
    pages = table.column("page_urls").to_pylist()
    pages[row] = [*pages[row], f"https://example.org/{BREAKOUT}"]
    captions = table.column("caption").to_pylist()
    captions[row] = SCRIPT
    for name, values in (("alt_texts", alts), ("urls", urls), ("page_urls", pages), ("caption", captions)):
        table = _replace(table, name, values)
    pq.write_table(table, path)


def _set_description(path: Path) -> None:
    table = pq.read_table(path)
    i = table.schema.get_field_index("description")
    hostile = pc.if_else(pc.equal(table.column("id"), ENTITY), pa.scalar(ONERROR + SCRIPT), table.column(i))
    pq.write_table(table.set_column(i, table.schema.field(i), hostile), path)


def _set_shard_json(path: Path) -> None:
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            if name == f"{KEY}.json":
                meta = orjson.loads(data)
                meta["alt_texts"] = [*meta["alt_texts"], *PAYLOADS]
                data = orjson.dumps(meta)
            add_member(tar, name, data)
    path.write_bytes(buf.getvalue())
