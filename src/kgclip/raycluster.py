"""Ray for the stages that can spread their work (`executor = "ray"` in fetch and search).

Ray is an optional extra; a stage imports it only when asked to. A Ray started here is private to
the run and stopped at its end; with `ray.address` set, the run joins that cluster instead.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from kgclip.config import RayConfig

T = TypeVar("T")


class RayUnavailable(RuntimeError):
    """Ray was asked for but is not installed."""


@contextmanager
def ray_session(cfg: RayConfig) -> Iterator[Any]:
    """The `ray` module, connected; the caller's own Ray session is reused and left running."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("executor = 'ray' needs Ray: pip install 'kgclip[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        _connect(ray, cfg)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _connect(ray: Any, cfg: RayConfig) -> None:
    if cfg.address:
        ray.init(address=cfg.address, logging_level=logging.WARNING)
        return
    # Ray's usage statistics would be sent to Anyscale from the user's machine; a tool that starts
    # Ray on the user's behalf does not opt them in.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address="local",
        num_cpus=cfg.num_cpus or None,
        include_dashboard=False,
        logging_level=logging.WARNING,
        _node_ip_address="127.0.0.1",
    )


def in_flight(ray: Any, cfg: RayConfig) -> int:
    return cfg.tasks_in_flight or 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))


def run_bounded(
    ray: Any, submit: Callable[[T], Any], items: Iterable[T], limit: int
) -> Iterator[tuple[T, Any]]:
    """Submit at most `limit` tasks at a time; yield (item, result) in the order they finish."""
    pending = iter(items)
    running: dict[Any, T] = {submit(item): item for item in itertools.islice(pending, limit)}
    while running:
        (ref,), _ = ray.wait(list(running), num_returns=1)
        item = running.pop(ref)
        for following in itertools.islice(pending, 1):
            running[submit(following)] = following
        yield item, ray.get(ref)
