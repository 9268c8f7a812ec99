"""RWSemaphore in debug mode: it joins the lock-order checker with the mm
locks.  Classes by lock_class, name or creation site; inversions against an
mm's lock and between semaphores, across tasks; recursion and nesting; a
release by a task holding nothing (which untracked would silently drop
another task's read hold) refused; failed acquisitions withdrawn; modes."""
from __future__ import annotations

import os
import signal
import sys
import threading
import warnings

import pytest

import mmap_lock_native as mln
from mmap_lock_native._ffi import lib
from mmap_lock_native.rwsem_checked import CheckedRWSemaphore
from conftest import (TIMEOUT, Worker, call_while_signalled, kill_waiter, wait_queued,
                      wait_until)

FILE = os.path.basename(__file__)


def here() -> int:
    """The caller's line number (put the call on the same line)."""
    return sys._getframe(1).f_lineno


def depth() -> int:
    """How many locks the checker thinks the calling task holds."""
    return lib.mln_lockdep_depth()


@pytest.fixture(autouse=True)
def _debug(lockdep_clean):
    """A clean checker in raise mode, with debug mode on for the test."""
    mln.set_debug(True)
    yield


def in_thread(fn):  # type: ignore[no-untyped-def]
    """Run ``fn`` on another thread (another task) and return its result."""
    return Worker(fn).begin().finish()


def test_classes_by_lock_class_name_or_creation_site() -> None:
    by_class = mln.RWSemaphore(name="label", lock_class="inode->i_rwsem")
    by_name = mln.RWSemaphore(name="sb->s_umount")
    line = here(); by_site = mln.RWSemaphore()  # noqa: E702
    assert isinstance(by_class, CheckedRWSemaphore)
    assert by_class.lock_class == "inode->i_rwsem"
    assert by_name.lock_class == "sb->s_umount"
    assert by_site.lock_class == f"RWSemaphore@{__file__}:{line}"


def test_outside_debug_mode_nothing_is_tracked() -> None:
    mln.set_debug(False)
    sem = mln.RWSemaphore(lock_class="ignored")
    assert type(sem) is mln.RWSemaphore and sem.lock_class is None
    sem.down_read()
    assert depth() == 0
    sem.up_read()


def test_lock_class_must_be_a_str() -> None:
    with pytest.raises(TypeError, match=r"RWSemaphore\(lock_class=...\).*int"):
        mln.RWSemaphore(lock_class=123)  # type: ignore[arg-type]


def test_inversion_against_an_mm_lock_across_tasks() -> None:
    """Task 1 takes the semaphore then the mm's lock; task 2 the reverse is
    refused before it touches the semaphore, naming both sites."""
    sem = mln.RWSemaphore(name="dev->lock")
    mm = mln.MM()

    def first_order() -> int:
        with sem.write():
            line = here(); mln.mmap_write_lock(mm)  # noqa: E702
            mln.mmap_write_unlock(mm)
        return line

    seen_at = in_thread(first_order)
    with mln.mmap_read_locked(mm):
        line = here()
        with pytest.raises(mln.LockOrderError) as ei:
            sem.down_write()
        assert not sem.is_locked(), "a refused acquisition must not touch the lock"
        assert depth() == 1          # the mm's read lock only
    text = str(ei.value)
    assert ei.value.kind == "inversion" and ei.value.operation == "down_write"
    assert "dev->lock" in text and "mm->mmap_lock" in text
    assert f"{FILE}:{line + 2}" in text and f"{FILE}:{seen_at}" in text


def test_inversion_between_two_semaphores_through_guards() -> None:
    a = mln.RWSemaphore(name="A")
    b = mln.RWSemaphore(name="B")

    def a_then_b() -> None:
        with a.read(), b.read():
            pass

    in_thread(a_then_b)
    with b.write():
        with pytest.raises(mln.LockOrderError, match="circular locking"):
            with a.read(timeout=TIMEOUT):
                pass
    assert not a.is_locked() and not b.is_locked() and depth() == 0


def test_two_locks_of_one_class_need_a_subclass() -> None:
    parent = mln.RWSemaphore(name="node")
    child = mln.RWSemaphore(name="node")
    parent.down_write()
    try:
        with pytest.raises(mln.LockOrderError) as ei:
            child.down_write()
        assert ei.value.kind == "recursion" and not child.is_locked()
        child.down_write_nested(mln.SINGLE_DEPTH_NESTING)
        assert depth() == 2
        child.up_write()
    finally:
        parent.up_write()
    assert depth() == 0


def test_read_recursion_is_reported() -> None:
    """A second read hold by one task deadlocks behind a queued writer."""
    sem = mln.RWSemaphore(name="r")
    with sem.read():
        with pytest.raises(mln.LockOrderError, match="recursive locking"):
            sem.down_read()
        assert sem.readers == 1


def test_up_read_by_a_task_holding_nothing_is_refused() -> None:
    """Untracked, this releases the other task's read hold silently."""
    sem = mln.RWSemaphore(name="shared-state")
    release = threading.Event()
    holder = Worker(lambda: (sem.down_read(), release.wait(TIMEOUT), sem.up_read())).begin()
    try:
        wait_until(lambda: sem.readers == 1, f"a read hold on {sem!r}")
        with pytest.raises(mln.LockError) as ei:
            sem.up_read()
        assert isinstance(ei.value, mln.LockOrderError) and ei.value.kind == "bad_unlock"
        assert "does not hold it" in str(ei.value)
        assert sem.readers == 1, "the other task's hold must be untouched"
        with pytest.raises(mln.LockOrderError):
            sem.up_write()
        assert sem.readers == 1
    finally:
        release.set()
        holder.finish()
    assert not sem.is_locked()


def test_warn_mode_reports_and_proceeds() -> None:
    mln.set_lockdep_mode("warn")
    sem = mln.RWSemaphore(name="w")

    def hold_read() -> None:
        sem.down_read()

    in_thread(hold_read)            # a hold no task of ours is seen holding
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sem.up_read()
    assert any(issubclass(w.category, mln.LockOrderWarning) and "bad unlock" in str(w.message)
               for w in caught)
    assert not sem.is_locked()


def test_failed_acquisitions_are_withdrawn() -> None:
    """A refused trylock, an expired timed wait and a killed wait leave the
    task's tracked holds as they were."""
    sem = mln.RWSemaphore(name="busy")
    holder_ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        sem.down_write()
        holder_ready.set()
        release.wait(TIMEOUT)
        sem.up_write()

    holder = Worker(hold).begin()
    try:
        assert holder_ready.wait(TIMEOUT)
        assert sem.down_read_trylock() is False and depth() == 0
        assert sem.acquire_write(timeout=0.01) is False and depth() == 0
        with pytest.raises(TimeoutError):
            with sem.read(timeout=0.01):
                pass
        assert depth() == 0
        victim = Worker(lambda: (sem.down_read_killable(), depth())).begin()
        wait_queued(sem, 1, 0, workers=(victim,))
        rc, victim_depth = kill_waiter(victim)
        assert rc < 0 and victim_depth == 0
    finally:
        release.set()
        holder.finish()
    assert sem.down_write_trylock() is True and depth() == 1
    sem.downgrade_write()
    assert lib.mln_lockdep_held(sem._sem, 0) and not lib.mln_lockdep_held(sem._sem, 1)
    sem.up_read()
    assert depth() == 0 and not sem.is_locked()


def test_non_owner_holds_are_not_tracked() -> None:
    sem = mln.RWSemaphore(name="io")
    sem.down_read_non_owner()
    assert depth() == 0
    in_thread(sem.up_read_non_owner)
    assert not sem.is_locked()


def test_ctrl_c_during_a_checked_wait_withdraws_the_entry() -> None:
    """KeyboardInterrupt while queued (main thread): the exception propagates,
    the semaphore is not held, and the checker no longer counts it as held
    (a stale entry would report the next acquisition as recursion)."""
    sem = mln.RWSemaphore(name="interrupted")
    release = threading.Event()
    holder = Worker(lambda: (sem.down_write(), release.wait(TIMEOUT), sem.up_write())).begin()
    wait_until(lambda: sem.is_write_locked(), f"the holder's write hold on {sem!r}")
    main = threading.main_thread()
    returned = threading.Event()

    def signaller() -> None:
        try:
            wait_queued(sem, 0, 1)
            signal.pthread_kill(main.ident, signal.SIGINT)
            assert returned.wait(TIMEOUT), "the main thread did not return"
        finally:
            release.set()           # whatever happened, the main thread cannot hang

    caught = call_while_signalled(signal.SIGINT, signal.default_int_handler, signaller,
                                  sem.down_write, returned)
    holder.finish()
    assert isinstance(caught, KeyboardInterrupt), caught
    assert depth() == 0 and not sem.is_locked()
    sem.down_write()                # not reported as recursion: the entry went
    sem.up_write()
