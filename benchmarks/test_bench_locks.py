"""pytest-benchmark versions of the uncontended lock+unlock pairs.

    pytest benchmarks/ --benchmark-only
    pytest benchmarks/ --benchmark-only --benchmark-save=NAME
    pytest benchmarks/ --benchmark-only --benchmark-compare

Every benchmarked call runs ``PAIRS_PER_CALL`` (1000) pairs, so the times
pytest-benchmark prints in microseconds read directly as nanoseconds per
pair.  The statements are the ones ``py_lock_pairs.py`` times (same
definitions, same timeit harness); use that script for A/B ratios, since
pytest-benchmark runs the contenders one after the other, not alternated.

Not collected by a plain ``pytest`` from the project root (testpaths is
``tests``); third-party peers are skipped when not installed.
"""
from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("pytest_benchmark", reason="pip install pytest-benchmark "
                    "(or: pip install -e '.[bench]')")

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # also under --import-mode=importlib
    sys.path.insert(0, _HERE)

from py_lock_pairs import CONTENDERS, Contender, make_timer  # noqa: E402

PAIRS_PER_CALL = 1000


def _contenders(group: str) -> list:
    return [pytest.param(c, id=c.key) for c in CONTENDERS
            if group == c.group or group in c.extra_groups]


def _bench(benchmark, c: Contender) -> None:
    if c.peer is not None:
        pytest.importorskip(c.peer, reason=f"peer {c.peer!r} is not installed "
                            "(pip install -e '.[bench]')")
    timer, ns = make_timer(c)
    benchmark.extra_info["contender"] = c.label
    benchmark.extra_info["pairs_per_call"] = PAIRS_PER_CALL
    benchmark.extra_info["unit_note"] = "time per call / 1000 = time per pair"
    benchmark(timer.timeit, PAIRS_PER_CALL)
    for obj in ns.values():  # every pair must have released what it took
        if type(obj).__name__ == "RWSemaphore":
            assert not obj.is_locked(), repr(obj)


@pytest.mark.benchmark(group="read-pair")
@pytest.mark.parametrize("contender", _contenders("read-pair"))
def test_read_pair(benchmark, contender: Contender) -> None:
    _bench(benchmark, contender)


@pytest.mark.benchmark(group="write-pair")
@pytest.mark.parametrize("contender", _contenders("write-pair"))
def test_write_pair(benchmark, contender: Contender) -> None:
    _bench(benchmark, contender)


@pytest.mark.benchmark(group="mm-ops")
@pytest.mark.parametrize("contender", _contenders("mm-ops"))
def test_mm_op(benchmark, contender: Contender) -> None:
    _bench(benchmark, contender)
