"""A successful wait whose result never reaches Python.

CPython runs a pending signal handler when a C call returns, before the
result is stored; a handler that raises (Ctrl-C) then unwinds from a wait
that has in fact acquired the lock.  The wait loops must still leave the
caller holding nothing, with the tracepoints, statistics and lock-order
checker balanced.  The handler is simulated here by wrapping the C wait so
that it raises right after returning 0: the same point in the bytecode.
"""
from __future__ import annotations

from typing import Any, Callable, List

import pytest

import mmap_lock_native as mln
import mmap_lock_native.mmap_lock as mmap_lock_module
import mmap_lock_native.rwsem as rwsem_module
from conftest import Worker, assert_free, hold, mm_hold, wait_queued
from mmap_lock_native._ffi import lib


class HandlerRaised(Exception):
    """What the simulated signal handler raises."""


def raising_after_success(real: Callable[..., int]) -> Callable[..., int]:
    def wait(*args: Any) -> int:
        rc = real(*args)
        if rc == 0:
            raise HandlerRaised
        return rc
    return wait


def wait_behind(sem: mln.RWSemaphore, acquire: Callable[[], Any], expect: "tuple[int, int]",
                holder: Any) -> Any:
    """Run ``acquire`` in a thread, queued behind ``holder``; release the
    holder; check the thread's wait raised HandlerRaised, and return what the
    thread saw afterwards: its lock-order checker depth."""
    def waiter_body() -> int:
        with pytest.raises(HandlerRaised):
            acquire()
        return lib.mln_lockdep_depth()

    waiter = Worker(waiter_body, name="waiter").begin()
    wait_queued(sem, *expect, workers=(waiter,))
    holder.done()
    return waiter.finish()


@pytest.mark.parametrize("mode", ["read", "write"])
def test_rwsem_lost_result_leaves_lock_free(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """RWSemaphore: the acquisition a raising handler hid is released again."""
    sem = mln.RWSemaphore(name="window")
    holder = hold(sem, "write")
    monkeypatch.setattr(rwsem_module, "_down_wait", raising_after_success(rwsem_module._down_wait))
    acquire = sem.down_read if mode == "read" else sem.down_write
    wait_behind(sem, acquire, (1, 0) if mode == "read" else (0, 1), holder)
    assert_free(sem)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_mmap_lost_result_is_undone_like_an_unlock(monkeypatch: pytest.MonkeyPatch,
                                                   mode: str) -> None:
    """mmap API: the hidden acquisition is undone as its unlock would be:
    tracepoints balanced, checker empty, the contended acquisition counted."""
    mm = mln.MM(name="window", debug=True)
    events: List[str] = []
    holder = mm_hold(mm, "write")
    monkeypatch.setattr(mmap_lock_module, "_wait", raising_after_success(mmap_lock_module._wait))
    mln.trace.set_hooks(
        start_locking=lambda m, w: events.append(f"start {'w' if w else 'r'}"),
        acquire_returned=lambda m, w, ok: events.append(f"acquired {'w' if w else 'r'} {ok}"),
        released=lambda m, w: events.append(f"released {'w' if w else 'r'}"))
    try:
        acquire = mln.mmap_read_lock if mode == "read" else mln.mmap_write_lock
        depth = wait_behind(mm.mmap_lock, lambda: acquire(mm),
                            (1, 0) if mode == "read" else (0, 1), holder)
    finally:
        mln.trace.clear_hooks()
    assert_free(mm.mmap_lock)
    m = mode[0]
    # The waiter starts, the holder releases, the waiter acquires, the cancel releases.
    assert events == [f"start {m}", "released w", f"acquired {m} True", f"released {m}"]
    assert depth == 0
    assert getattr(mm.lock_stats(), f"{mode}_contended") == 1
