"""curate/memory.py: the allocator settings curate runs under, set and put back."""

import pyarrow as pa
import pytest

from kgclip.curate import memory


def test_curate_runs_on_the_system_allocator_with_a_fixed_mmap_threshold(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_MALLOPT", lambda param, value: calls.append((param, value)) or 1)
    before = pa.default_memory_pool()
    with memory.compact_memory():
        assert pa.default_memory_pool().backend_name == "system"
        assert calls == [(-3, memory.MAPPED)]  # M_MMAP_THRESHOLD: 128 KiB, held fixed
    assert calls == [(-3, memory.MAPPED), (-3, memory.WARM)]
    assert pa.default_memory_pool().backend_name == before.backend_name


def test_the_settings_are_put_back_when_curate_fails(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_MALLOPT", lambda param, value: calls.append(value) or 1)
    before = pa.default_memory_pool().backend_name
    with pytest.raises(RuntimeError), memory.compact_memory():
        raise RuntimeError("a damaged part")
    assert calls == [memory.MAPPED, memory.WARM] and pa.default_memory_pool().backend_name == before


def test_glibc_mallopt_is_found_on_linux():
    import platform

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert memory._MALLOPT is not None
