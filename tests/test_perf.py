import sys

import pytest

from dsdistill import perf


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tune_allocator_applies_once_and_can_be_disabled(monkeypatch):
    monkeypatch.setattr(perf, "_tuned", False)
    monkeypatch.setenv("DSDISTILL_MALLOC_TUNING", "0")
    assert perf.tune_allocator() is False
    monkeypatch.delenv("DSDISTILL_MALLOC_TUNING")
    assert perf.tune_allocator() is True and perf.tune_allocator() is True
