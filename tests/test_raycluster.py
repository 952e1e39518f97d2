"""The Ray helpers without starting Ray: a clear error when it is missing, and bounded submission."""

import sys

import pytest

from kgclip.config import RayConfig
from kgclip.raycluster import RayUnavailable, in_flight, ray_session, run_bounded


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(RayUnavailable, match=r"pip install 'kgclip\[ray\]'"), ray_session(RayConfig()):
        pass


class FakeRay:
    """Tasks finish in reverse order of submission; records how many ran at once."""

    def __init__(self) -> None:
        self.running: list[int] = []
        self.most = 0

    def submit(self, item: int) -> int:
        self.running.append(item)
        self.most = max(self.most, len(self.running))
        return item

    def wait(self, refs: list[int], num_returns: int) -> tuple[list[int], list[int]]:
        last = max(refs)
        self.running.remove(last)
        return [last], [r for r in refs if r != last]

    def get(self, ref: int) -> int:
        return ref * 10

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 3.0}


def test_run_bounded_keeps_the_limit_and_yields_every_result():
    ray = FakeRay()
    done = list(run_bounded(ray, ray.submit, range(10), limit=3))
    assert sorted(done) == [(i, i * 10) for i in range(10)]
    assert ray.most == 3
    assert done[0] == (2, 20)  # results come as tasks finish, not in submission order


def test_in_flight_defaults_to_two_per_cpu():
    assert in_flight(FakeRay(), RayConfig()) == 6
    assert in_flight(FakeRay(), RayConfig(tasks_in_flight=4)) == 4
