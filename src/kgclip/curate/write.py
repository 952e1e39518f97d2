"""Curate's last step: every group of the plan written as a sample into its split's shards, or set
aside as rejected rows; in this process or as Ray tasks (`[curate] executor`).

The work is cut into jobs of consecutive groups that begin on a shard boundary, so each job writes
whole shards of its own and no two jobs touch one file: a training job takes the groups between two
boundaries of the training shards (the dropped groups among them too, whose copies it sets aside),
a held-out job the held-out groups between two boundaries of the held-out shards. Keys and shard
numbers are fixed before any job runs (keys number the kept groups in order, whichever split they
land in), so the jobs' outputs do not depend on how many jobs there are or where they run. Each job
writes its shards under the stage's new folders and its rows into files of the spill folder
(`samples-JOB.arrow`, `rejected-KIND-JOB.arrow`); this process then merges the sample rows in key
order into samples.parquet and reads the set-aside rows in job order, which is group order. A local
run is one job (both splits); a Ray run needs the work directory on a file system its workers see.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kgclip.curate.plan import GROUPS_PER_BUCKET, SPILL_OPTIONS, Plan
from kgclip.curate.samples import Lookups, sample_json, sample_row, stored
from kgclip.curate.shards import PartReader, ShardWriter
from kgclip.curate.split import TRAIN, VAL
from kgclip.pipeline import PipelineError
from kgclip.tables import GroupWriter, Rejected, Sample, to_table
from kgclip.workdir import atomic_path

EVAL, LICENCE, BALANCE_ENTITY, BALANCE_QUERY = "eval", "licence", "entity", "query"
ASIDE = (EVAL, LICENCE, BALANCE_ENTITY, BALANCE_QUERY)  # the order of their rows in rejected.parquet
REASON = {
    EVAL: "eval_copy",
    LICENCE: "licence",
    BALANCE_ENTITY: "balanced_out",
    BALANCE_QUERY: "balanced_out",
}
SPLITS = (TRAIN, VAL)
DROPPED = -1  # a group's split code when it is set aside


@dataclass(frozen=True)
class Target:
    """Where one split's shards go."""

    folder: Path
    prefix: str


@dataclass(frozen=True)
class Layout:
    """What every job shares: the shards' folders and size, the fetch parts, the spill folder."""

    targets: dict[str, Target]
    per_shard: int
    parts: Path
    spill: Path
    indexes: Path | None = None  # the parts' member indexes, saved once for many tasks (shards.index_part)


class Drops:
    """Why each dropped group was dropped, as arrays rather than a record per group (balancing
    may drop millions): per group a kind (0 = kept, else 1 + its place in ASIDE) and the code of
    its detail among the distinct details (one per cap, per refused licence, per matched
    evaluation image)."""

    def __init__(self, groups: int) -> None:
        self.kind = np.zeros(groups, dtype=np.int8)
        self.detail = np.zeros(groups, dtype=np.int32)
        self.details: list[str] = []
        self._codes: dict[str, int] = {}

    def add(self, groups: Sequence[int] | np.ndarray, kind: str, detail: str) -> None:
        """The groups dropped for one reason with one detail."""
        code = self._codes.setdefault(detail, len(self.details))
        if code == len(self.details):
            self.details.append(detail)
        where = np.asarray(groups, dtype=np.int64)
        self.kind[where] = ASIDE.index(kind) + 1
        self.detail[where] = code

    def __len__(self) -> int:
        return int(np.count_nonzero(self.kind))


@dataclass(frozen=True)
class Job:
    """Consecutive groups written by one task: `split[i]` is 0 (training), 1 (held out) or DROPPED;
    a kept group's key is `key[i]`; `first[s]` samples of split s come before the job's (a whole
    number of shards). A dropped group's kind and detail are `drop[i]` and `details[detail[i]]`
    (Drops)."""

    number: int
    groups: np.ndarray
    split: np.ndarray
    key: np.ndarray
    first: tuple[int, int]
    drop: np.ndarray
    detail: np.ndarray
    details: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int((self.split != DROPPED).sum())


@dataclass(frozen=True)
class Done:
    """What a job reports back; its rows are in the spill folder."""

    number: int
    sizes: dict[str, dict[str, int]]  # split -> shard name -> samples
    covered: list[str]  # entity ids
    with_alt: int


def jobs(groups: int, drops: Drops, held: np.ndarray, per_shard: int, per_job: int) -> list[Job]:
    """The jobs for `groups` groups; `held[n]` says whether the n-th kept group is held out.
    `per_job` samples a job (rounded up to whole shards); 0: one job for everything."""
    split = np.zeros(groups, dtype=np.int8)
    split[drops.kind != 0] = DROPPED
    kept = np.flatnonzero(split != DROPPED)
    split[kept[held]] = 1
    key = np.full(groups, -1, dtype=np.int64)
    key[kept] = np.arange(len(kept))
    everything = np.arange(groups, dtype=np.int64)
    if per_job <= 0:
        return [_job(0, everything, split, key, (0, 0), drops)]
    size = -(-per_job // per_shard) * per_shard
    made: list[Job] = []
    train = split == 0
    ordinal = np.cumsum(train) - 1  # the training sample each group is or follows
    starts = np.flatnonzero(train & (ordinal % size == 0))  # the first group of each training job
    cuts = [0, *starts[starts > 0].tolist(), groups]
    for lo, hi in itertools.pairwise(cuts):
        mine = everything[lo:hi][split[lo:hi] != 1]
        made.append(_job(len(made), mine, split, key, (int(ordinal[lo]) if lo else 0, 0), drops))
    val = np.flatnonzero(split == 1)
    for lo in range(0, len(val), size):
        made.append(_job(len(made), val[lo : lo + size], split, key, (0, lo), drops))
    return made


def _job(
    number: int, groups: np.ndarray, split: np.ndarray, key: np.ndarray, first: tuple[int, int], drops: Drops
) -> Job:
    drop, detail = drops.kind[groups], drops.detail[groups]
    return Job(number, groups, split[groups], key[groups], first, drop, detail, drops.details)


def write_job(
    job: Job, made: Plan, lookups: Lookups, layout: Layout, advance: Callable[[int], None] | None = None
) -> Done:
    """Write one job's samples into their shards and its rows into the spill folder; `advance` is
    told each window's samples (progress, when the job runs in this process)."""
    reader = PartReader(layout.parts, indexes=layout.indexes)
    sinks = {
        s: _Sink(layout.targets[s].folder, layout.targets[s].prefix, layout.per_shard, job.first[i])
        for i, s in enumerate(SPLITS)
    }
    covered: set[str] = set()
    with_alt = 0
    at = 0
    try:
        with _Rows(layout.spill / f"samples-{job.number:05d}.arrow", Sample.SCHEMA) as rows, _Aside(
            layout.spill, job.number
        ) as aside:
            for _, groups in made.windows(job.groups):
                made_samples = []
                for g in groups:
                    here, at = at, at + 1
                    code, key = int(job.split[here]), int(job.key[here])
                    if code == DROPPED:
                        kind, detail = ASIDE[job.drop[here] - 1], job.details[job.detail[here]]
                        aside.add(kind, [Rejected("curate", c.url, REASON[kind], detail) for c in g.copies])
                        continue
                    sink = sinks[SPLITS[code]]
                    sample = sample_row(f"{key:09d}", sink.shard_name(), g, lookups.queries, SPLITS[code])
                    sink.add(sample.key, stored(reader, g), sample.caption, sample_json(sample, g, lookups))
                    covered.update(sample.entity_ids)
                    with_alt += bool(sample.alt_texts)
                    made_samples.append(sample)
                rows.add(to_table(made_samples, Sample))
                if advance is not None:
                    advance(len(made_samples))
            for sink in sinks.values():
                sink.finish()
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    finally:
        reader.close()
    return Done(job.number, {s: sink.sizes for s, sink in sinks.items()}, sorted(covered), with_alt)


Runner = Callable[[Sequence[Job], Callable[[int], None]], Iterator[Done]]  # jobs, progress -> results


def local_runner(made: Plan, lookups: Lookups, layout: Layout) -> Runner:
    def run(todo: Sequence[Job], advance: Callable[[int], None]) -> Iterator[Done]:
        for job in todo:
            yield write_job(job, made, lookups, layout, advance)

    return run


def merge_samples(spill: Path, todo: Sequence[Job], out: GroupWriter, batch: int = 8_192) -> None:
    """Append every job's sample rows to `out` in key order, `batch` rows at a time (sample rows
    are wide, about 1 KB: 65,536 at once were the stage's peak at a million pictures; `out`'s
    row groups do not depend on it)."""
    total = sum(len(job) for job in todo)
    owner = np.empty(total, dtype=np.int64)
    for job in todo:
        owner[job.key[job.split != DROPPED]] = job.number
    streams = {job.number: _RowStream(spill / f"samples-{job.number:05d}.arrow") for job in todo}
    try:
        for lo in range(0, total, batch):
            chunk = owner[lo : lo + batch]
            pieces, index = [], np.empty(len(chunk), dtype=np.int64)
            taken = 0
            for number in np.unique(chunk).tolist():
                where = np.flatnonzero(chunk == number)
                pieces.append(streams[number].take(len(where)))
                index[where] = taken + np.arange(len(where))
                taken += len(where)
            out.add_table(pa.concat_tables(pieces).take(index))
    finally:
        for stream in streams.values():
            stream.close()


def aside_batches(spill: Path, kind: str) -> Iterator[list[Rejected]]:
    """The rejected rows of one kind that the jobs set aside, in job order (= group order)."""
    for path in sorted(spill.glob(f"rejected-{kind}-*.arrow")):
        with pa.OSFile(str(path)) as source:
            for batch in pa.ipc.open_stream(source):
                yield [Rejected(**r) for r in batch.to_pylist()]


def aside_rows(spill: Path, kind: str) -> list[Rejected]:
    return [r for rows in aside_batches(spill, kind) for r in rows]


def per_job_default(executor: str, setting: int, per_shard: int) -> int:
    """Samples a job: the setting, else one job locally and about a spill bucket's worth on Ray."""
    if setting:
        return setting * per_shard
    return 0 if executor == "local" else max(per_shard, GROUPS_PER_BUCKET)


class _RowStream:
    """An Arrow stream file read a batch at a time, handed out `take(n)` rows at a time."""

    def __init__(self, path: Path) -> None:
        self._source = pa.OSFile(str(path))
        self._reader = pa.ipc.open_stream(self._source)
        self._buffer: list[pa.Table] = []
        self._buffered = 0

    def take(self, n: int) -> pa.Table:
        while self._buffered < n:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                raise PipelineError("curate: a job wrote fewer samples than it was given") from None
            self._buffer.append(pa.Table.from_batches([batch]))
            self._buffered += batch.num_rows
        table = pa.concat_tables(self._buffer)
        rest = table.slice(n)
        self._buffer, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows
        return table.slice(0, n)

    def close(self) -> None:
        self._source.close()


class _Rows:
    """An Arrow stream file of one schema, put in place only when complete (a retried job
    rewrites it)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema

    def __enter__(self) -> _Rows:
        self._atomic = atomic_path(self.path)
        self._sink = pa.OSFile(str(self._atomic.__enter__()), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema, options=SPILL_OPTIONS)
        return self

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)

    def __exit__(self, *exc: Any) -> None:
        try:
            self._writer.close()
            self._sink.close()
        finally:
            self._atomic.__exit__(*exc)


class _Aside:
    """One job's rejected rows of each kind, as the groups go by (`aside_batches` reads them)."""

    def __init__(self, folder: Path, job: int) -> None:
        self.folder, self.job = folder, job
        self._open: dict[str, _Rows] = {}

    def add(self, kind: str, rows: list[Rejected]) -> None:
        if kind not in self._open:
            self._open[kind] = _Rows(self.folder / f"rejected-{kind}-{self.job:05d}.arrow", Rejected.SCHEMA)
            self._open[kind].__enter__()
        self._open[kind].add(to_table(rows, Rejected))

    def __enter__(self) -> _Aside:
        return self

    def __exit__(self, *exc: Any) -> None:
        for rows in self._open.values():
            rows.__exit__(*exc)
        self._open.clear()


class _Sink:
    """One split's shards, filled a sample at a time from sample number `first` on: `per_shard`
    samples to a tar, then the next."""

    def __init__(self, folder: Path, prefix: str, per_shard: int, first: int) -> None:
        self.folder, self.prefix, self.per_shard = folder, prefix, per_shard
        self.sizes: dict[str, int] = {}
        self.count = first
        self._shard: ShardWriter | None = None

    def shard_name(self) -> str:
        return f"{self.prefix}-{self.count // self.per_shard:05d}.tar"

    def add(self, key: str, jpeg: bytes, caption: str, meta: dict[str, Any]) -> None:
        if self._shard is None:
            self._shard = ShardWriter(self.folder / self.shard_name()).__enter__()
        self._shard.add(key, jpeg, caption, meta)
        self.count += 1
        if self.count % self.per_shard == 0:
            self._close()

    def _close(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            shard.__exit__(None, None, None)
            self.sizes[shard.path.name] = shard.count

    def finish(self) -> None:
        self._close()

    def abort(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            shard.__exit__(PipelineError, PipelineError("curate stopped"), None)
