"""Shared fixtures: one real offline demo harvest per test session, copied for tests that change it."""

import shutil
from pathlib import Path

import pytest

from kgclip.cli import _run
from kgclip.config import load


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The bundled demo harvested once (WordNet living things x Tux Paint); treat as read-only."""
    workdir = tmp_path_factory.mktemp("demo") / "work"
    _run(load("demo"), workdir)
    return workdir


@pytest.fixture
def demo_copy(demo_run, tmp_path) -> Path:
    """A private copy of the demo work directory, for tests that modify it."""
    dst = tmp_path / "work"
    shutil.copytree(demo_run, dst)
    return dst
