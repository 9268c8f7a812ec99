"""The kernel's mmap locking API (``mmap_*`` functions taking an ``MM``):
return conventions, cross-thread semantics, misuse, assertions, lockless
speculation, and a signal interrupting a blocked ``mmap_write_lock``."""
from __future__ import annotations

import errno
import math
import signal
import sys
import threading
import time

import pytest

import mmap_lock_native as mln
from mmap_lock_native import mmap_lock as mmap_lock_module
from conftest import (TIMEOUT, Worker, assert_free, call_while_signalled, mm_hold, mm_queue,
                      wait_asleep_on_lock, wait_queued, wait_until)


@pytest.fixture
def mm():
    return mln.MM(name="api", debug=False)


# -- names and return conventions ------------------------------------------------------

def test_every_public_mmap_name_is_exported_and_callable():
    """Each name of mmap_lock.__all__ is re-exported by the package, is callable, and is the same object."""
    assert len(mmap_lock_module.__all__) == 20
    for name in mmap_lock_module.__all__:
        assert name.startswith("mmap_"), name
        assert name in mln.__all__, name
        assert getattr(mln, name) is getattr(mmap_lock_module, name), name
        assert callable(getattr(mln, name)), name


def test_void_functions_return_none(mm):
    """The functions the kernel declares void return None."""
    me = mln.current_task()
    assert mln.mmap_init_lock(mm) is None
    assert mln.mmap_write_lock(mm) is None
    assert mm.mmap_lock.owner == me
    assert mln.mmap_assert_locked(mm) is None
    assert mln.mmap_assert_write_locked(mm) is None
    assert mln.mmap_write_downgrade(mm) is None
    assert mm.mmap_lock.readers == 1 and not mm.mmap_lock.is_write_locked()
    assert mln.mmap_assert_locked(mm) is None
    assert mln.mmap_read_unlock(mm) is None
    assert mln.mmap_write_lock_nested(mm, mln.SINGLE_DEPTH_NESTING) is None
    assert mm.mmap_lock.owner == me
    assert mln.mmap_write_unlock(mm) is None
    assert mln.mmap_read_lock(mm) is None
    assert mln.mmap_read_unlock(mm) is None
    assert mln.mmap_read_trylock_non_owner(mm) is True
    assert mln.mmap_read_unlock_non_owner(mm) is None
    assert_free(mm.mmap_lock)


def test_killable_functions_return_int_zero_uncontended(mm):
    """mmap_*_lock_killable return the int 0 (not False, not None) when they acquire."""
    rc = mln.mmap_read_lock_killable(mm)
    assert rc == 0 and type(rc) is int
    assert mm.mmap_lock.readers == 1
    mln.mmap_read_unlock(mm)
    rc = mln.mmap_write_lock_killable(mm)
    assert rc == 0 and type(rc) is int
    assert mm.mmap_lock.owner == mln.current_task()
    mln.mmap_write_unlock(mm)
    assert_free(mm.mmap_lock)


def test_trylocks_and_queries_return_bool(mm):
    """Trylocks, is_contended and speculate_retry return real bools."""
    r = mln.mmap_read_trylock(mm)
    assert r is True
    assert mln.mmap_write_trylock(mm) is False      # read-held
    assert mln.mmap_lock_is_contended(mm) is False
    mln.mmap_read_unlock(mm)
    assert mln.mmap_write_trylock(mm) is True
    assert mln.mmap_read_trylock(mm) is False       # write-held
    assert mln.mmap_read_trylock_non_owner(mm) is False
    mln.mmap_write_unlock(mm)
    seq = mln.mmap_lock_speculate_try_begin(mm)
    assert type(seq) is int
    assert mln.mmap_lock_speculate_retry(mm, seq) is False
    assert_free(mm.mmap_lock)


def test_mmap_init_lock_refuses_a_held_lock(mm):
    """mmap_init_lock on a held lock raises LockError naming the mm and leaves the lock held."""
    mln.mmap_write_lock(mm)
    with pytest.raises(mln.LockError) as ei:
        mln.mmap_init_lock(mm)
    msg = str(ei.value)
    assert "mmap_init_lock" in msg and "MM 'api'" in msg and "write-locked by task" in msg
    assert mm.mmap_lock.owner == mln.current_task()
    mln.mmap_write_unlock(mm)
    assert_free(mm.mmap_lock)


# -- MM.mmap_lock ------------------------------------------------------------------------

def test_mm_mmap_lock_is_an_rwsemaphore_reflecting_the_state(mm):
    """mm.mmap_lock is an RWSemaphore whose is_locked/owner/readers follow the mmap_* calls."""
    sem = mm.mmap_lock
    assert isinstance(sem, mln.RWSemaphore)
    assert mm.mmap_lock is sem
    assert "MM 'api'" in repr(sem)
    assert not sem.is_locked() and sem.owner is None
    mln.mmap_write_lock(mm)
    assert sem.is_locked() and sem.is_write_locked()
    assert sem.owner == mln.current_task()
    assert repr(mm).endswith(f"write-locked by task {mln.current_task()}>")
    mln.mmap_write_unlock(mm)
    assert not sem.is_locked() and sem.owner is None
    mln.mmap_read_lock(mm)
    mln.mmap_read_lock(mm)
    assert sem.is_locked() and not sem.is_write_locked()
    assert sem.readers == 2 and sem.owner is None
    mln.mmap_read_unlock(mm)
    mln.mmap_read_unlock(mm)
    assert_free(sem)


# -- context managers ----------------------------------------------------------------------

def test_read_locked_context_manager(mm):
    """with mmap_read_locked(mm) holds the read lock in the block, yields the mm, releases after."""
    with mln.mmap_read_locked(mm) as got:
        assert got is mm
        assert mm.mmap_lock.readers == 1 and not mm.mmap_lock.is_write_locked()
        with mln.mmap_read_locked(mm):          # the cached guard nests
            assert mm.mmap_lock.readers == 2
        assert mm.mmap_lock.readers == 1
    assert_free(mm.mmap_lock)


def test_write_locked_context_manager(mm):
    """with mmap_write_locked(mm) holds the write lock in the block and releases after."""
    with mln.mmap_write_locked(mm) as got:
        assert got is mm
        assert mm.mmap_lock.owner == mln.current_task()
    assert_free(mm.mmap_lock)
    with mln.mmap_write_locked(mm, timeout=1.0):
        assert mm.mmap_lock.owner == mln.current_task()
    assert_free(mm.mmap_lock)


@pytest.mark.parametrize("mode", ["read", "write"])
@pytest.mark.parametrize("timeout", [None, 5.0])
def test_context_manager_releases_on_exception(mm, mode, timeout):
    """An exception leaving the with block releases the lock and propagates."""
    cm = getattr(mln, f"mmap_{mode}_locked")
    with pytest.raises(ZeroDivisionError):
        with cm(mm, timeout=timeout):
            assert mm.mmap_lock.is_locked()
            1 / 0
    assert_free(mm.mmap_lock)


@pytest.mark.parametrize("holder_mode,mode", [("write", "read"), ("write", "write"),
                                              ("read", "write")])
def test_context_manager_timeout_under_contention(mm, holder_mode, mode):
    """A timed mmap_*_locked raises TimeoutError naming the mm; it holds nothing and leaves the queue."""
    holder = mm_hold(mm, holder_mode)
    cm = getattr(mln, f"mmap_{mode}_locked")
    entered = False
    with pytest.raises(TimeoutError) as ei:
        with cm(mm, timeout=0.05):
            entered = True
    assert not entered
    msg = str(ei.value)
    assert f"mmap_{mode}_lock" in msg and "MM 'api'" in msg
    assert mm.mmap_lock.queue() == (0, 0), mm.mmap_lock.state()
    if holder_mode == "write":
        assert mm.mmap_lock.owner == holder.task
    else:
        assert mm.mmap_lock.readers == 1
    holder.done()
    assert_free(mm.mmap_lock)


@pytest.mark.parametrize("mode", ["read", "write"])
@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan])
def test_context_manager_bad_timeout(mm, mode, timeout):
    """A negative or NaN timeout raises ValueError at once, before anything is locked."""
    cm = getattr(mln, f"mmap_{mode}_locked")
    with pytest.raises(ValueError):
        cm(mm, timeout=timeout)
    holder = mm_hold(mm, "write")
    with pytest.raises(ValueError):
        with cm(mm, timeout=timeout):
            pass
    assert mm.mmap_lock.queue() == (0, 0)
    holder.done()
    assert_free(mm.mmap_lock)


def test_context_manager_waits_when_released_in_time(mm):
    """A timed mmap_write_locked that the holder releases in time acquires."""
    holder = mm_hold(mm, "read")
    result = {}

    def writer():
        with mln.mmap_write_locked(mm, timeout=TIMEOUT):
            result["owner"] = mm.mmap_lock.owner
        return mln.current_task()

    w = Worker(writer).begin()
    wait_queued(mm.mmap_lock, 0, 1, workers=(w,))
    holder.done()
    task = w.finish()
    assert result["owner"] == task
    assert_free(mm.mmap_lock)


# -- exclusion and sharing across threads ---------------------------------------------------

def test_write_excludes_readers_and_writers(mm):
    """While one thread write-holds the lock, other threads' trylocks fail and their locks wait."""
    mln.mmap_write_lock(mm)
    tries = Worker(lambda: (mln.mmap_read_trylock(mm), mln.mmap_write_trylock(mm))).begin()
    assert tries.finish() == (False, False)
    log: list = []
    r = mm_queue(mm, "read", (1, 0), name="r", log=log)
    w = mm_queue(mm, "write", (1, 1), name="w", log=log)
    assert log == []
    assert mm.mmap_lock.owner == mln.current_task()
    mln.mmap_write_unlock(mm)
    r.wait_acquired()
    assert not w.acquired.is_set() and mm.mmap_lock.queue() == (0, 1)
    r.done()
    w.wait_acquired()
    assert mm.mmap_lock.owner == w.task
    w.done()
    assert log == ["r", "w"]
    assert_free(mm.mmap_lock)


def test_writer_waits_for_a_reader(mm):
    """mmap_write_lock in another thread waits while a reader holds the lock."""
    mln.mmap_read_lock(mm)
    w = mm_queue(mm, "write", (0, 1))
    assert not w.acquired.is_set()
    mln.mmap_read_unlock(mm)
    w.wait_acquired()
    assert mm.mmap_lock.owner == w.task
    w.done()
    assert_free(mm.mmap_lock)


def test_readers_share(mm):
    """Several threads hold the read lock at the same time."""
    n = 4
    inside = threading.Barrier(n + 1, timeout=TIMEOUT)
    leave = threading.Event()

    def reader():
        mln.mmap_read_lock(mm)
        try:
            inside.wait()
            assert leave.wait(TIMEOUT)
        finally:
            mln.mmap_read_unlock(mm)

    workers = [Worker(reader, name=f"r{i}").begin() for i in range(n)]
    inside.wait()                   # all n hold it now
    assert mm.mmap_lock.readers == n
    assert mm.mmap_lock.queue() == (0, 0)
    assert mln.mmap_read_trylock(mm) is True
    mln.mmap_read_unlock(mm)
    leave.set()
    for w in workers:
        w.finish()
    assert_free(mm.mmap_lock)


# -- downgrade -----------------------------------------------------------------------------

def test_downgrade_is_atomic(mm):
    """At a downgrade the queued reader gets in with us, the queued writer stays queued until the last read release."""
    log: list = []
    mln.mmap_write_lock(mm)
    r = mm_queue(mm, "read", (1, 0), name="r", log=log)
    w = mm_queue(mm, "write", (1, 1), name="w", log=log)
    mln.mmap_write_downgrade(mm)
    r.wait_acquired()
    sem = mm.mmap_lock
    assert sem.readers == 2 and not sem.is_write_locked()
    assert sem.queue() == (0, 1)
    assert not w.acquired.is_set()
    assert mln.mmap_write_trylock(mm) is False
    r.done()
    wait_until(lambda: sem.readers == 1, "the woken reader's release")
    assert not w.acquired.is_set() and sem.queue() == (0, 1)
    mln.mmap_read_unlock(mm)
    w.wait_acquired()
    w.done()
    assert log == ["r", "w"]
    assert_free(sem)


# -- killable --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,holder_mode", [("read", "write"), ("write", "write"),
                                              ("write", "read")])
def test_killable_returns_eintr_when_killed_then_revives(mm, mode, holder_mode):
    """A killable wait returns -EINTR when its task is killed, leaves the queue; revived, the task waits and acquires again."""
    holder = mm_hold(mm, holder_mode)
    fn = getattr(mln, f"mmap_{mode}_lock_killable")
    unlock = getattr(mln, f"mmap_{mode}_unlock")
    killed_rc = {}
    revived = threading.Event()

    def victim():
        killed_rc["rc"] = fn(mm)
        assert revived.wait(TIMEOUT)
        rc = fn(mm)                 # waits again, now that it is revived
        if rc == 0:
            unlock(mm)
        return rc

    v = Worker(victim, name="victim").begin()
    expect = (1, 0) if mode == "read" else (0, 1)
    wait_queued(mm.mmap_lock, *expect, workers=(v,))
    try:
        mln.task_kill(v.task)
        wait_until(lambda: "rc" in killed_rc, "the killed wait to return")
    finally:
        if mln.task_is_killed(v.task):
            mln.task_revive(v.task)
    assert killed_rc["rc"] == -errno.EINTR
    # The killed waiter left the queue; the holder still holds.
    if holder_mode == "write":
        assert mm.mmap_lock.owner == holder.task
    else:
        assert mm.mmap_lock.readers == 1
    revived.set()
    wait_queued(mm.mmap_lock, *expect, workers=(v,))
    holder.done()
    assert v.finish() == 0
    assert_free(mm.mmap_lock)


def test_killed_task_gets_eintr_at_once_but_a_free_lock_still(mm):
    """A task killed before calling gets -EINTR at once on a held lock, but acquires a free one (as in the kernel)."""
    me = mln.current_task()
    holder = mm_hold(mm, "write")
    mln.task_kill(me)
    try:
        assert mln.mmap_read_lock_killable(mm) == -errno.EINTR
        assert mln.mmap_write_lock_killable(mm) == -errno.EINTR
        assert mm.mmap_lock.queue() == (0, 0)
        holder.done()
        assert mln.mmap_write_lock_killable(mm) == 0
        mln.mmap_write_unlock(mm)
    finally:
        mln.task_revive(me)
    assert_free(mm.mmap_lock)


# -- trylocks -------------------------------------------------------------------------------

def test_trylocks_fail_while_write_held(mm):
    """Both trylocks fail while another thread write-holds the lock; nothing is left behind."""
    holder = mm_hold(mm, "write")
    assert mln.mmap_read_trylock(mm) is False
    assert mln.mmap_write_trylock(mm) is False
    assert mln.mmap_read_trylock_non_owner(mm) is False
    assert mm.mmap_lock.owner == holder.task and mm.mmap_lock.queue() == (0, 0)
    holder.done()
    assert_free(mm.mmap_lock)


def test_trylocks_fail_while_a_writer_is_queued(mm):
    """Once a writer queues behind a reader, read trylocks fail too (writer preference)."""
    mln.mmap_read_lock(mm)
    assert mln.mmap_read_trylock(mm) is True    # no writer yet: it shares
    mln.mmap_read_unlock(mm)
    w = mm_queue(mm, "write", (0, 1))
    other = Worker(lambda: (mln.mmap_read_trylock(mm), mln.mmap_write_trylock(mm),
                            mln.mmap_read_trylock_non_owner(mm))).begin()
    assert other.finish() == (False, False, False)
    assert mln.mmap_read_trylock(mm) is False
    assert mln.mmap_write_trylock(mm) is False
    assert mm.mmap_lock.readers == 1 and mm.mmap_lock.queue() == (0, 1)
    mln.mmap_read_unlock(mm)
    w.wait_acquired()
    w.done()
    assert_free(mm.mmap_lock)


def test_non_owner_trylock_released_by_another_thread(mm):
    """mmap_read_trylock_non_owner's hold is released by another thread with mmap_read_unlock_non_owner."""
    assert mln.mmap_read_trylock_non_owner(mm) is True
    assert mm.mmap_lock.readers == 1 and mm.mmap_lock.owner is None
    assert Worker(mln.mmap_read_unlock_non_owner, mm).begin().finish() is None
    assert_free(mm.mmap_lock)


# -- misuse -----------------------------------------------------------------------------

def _check_misuse(exc: BaseException, op: str, state: str) -> None:
    msg = str(exc)
    assert isinstance(exc, mln.LockError)
    assert isinstance(exc, RuntimeError)
    assert "MM 'api'" in msg, msg
    assert op in msg, msg
    assert exc.operation == op
    assert f"state: {state}" in msg, msg


@pytest.mark.parametrize("op", ["mmap_read_unlock", "mmap_write_unlock",
                                "mmap_read_unlock_non_owner", "mmap_write_downgrade"])
def test_release_of_an_unheld_lock_raises(mm, op):
    """Releasing or downgrading a lock nobody holds raises LockError naming the mm, the operation and the state."""
    with pytest.raises(mln.LockError) as ei:
        getattr(mln, op)(mm)
    _check_misuse(ei.value, op, "unlocked")
    assert ei.value.errno == errno.EPERM
    assert_free(mm.mmap_lock)


def test_write_unlock_by_a_non_owner_raises_and_keeps_the_lock(mm):
    """mmap_write_unlock by a thread that is not the writer raises and leaves the writer's hold intact."""
    holder = mm_hold(mm, "write")
    for op in ("mmap_write_unlock", "mmap_write_downgrade", "mmap_read_unlock"):
        with pytest.raises(mln.LockError) as ei:
            getattr(mln, op)(mm)
        _check_misuse(ei.value, op, f"write-locked by task {holder.task}")
        assert mm.mmap_lock.owner == holder.task
    holder.done()
    assert_free(mm.mmap_lock)


def test_write_unlock_and_downgrade_of_a_read_hold_raise(mm):
    """mmap_write_unlock or mmap_write_downgrade while only read-holding raise; the read hold stays."""
    mln.mmap_read_lock(mm)
    for op in ("mmap_write_unlock", "mmap_write_downgrade"):
        with pytest.raises(mln.LockError) as ei:
            getattr(mln, op)(mm)
        _check_misuse(ei.value, op, "read-locked by 1 reader")
        assert mm.mmap_lock.readers == 1
    mln.mmap_read_unlock(mm)
    assert_free(mm.mmap_lock)


def test_double_unlock_raises(mm):
    """A second mmap_read_unlock after the only read hold was released raises LockError."""
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
    with pytest.raises(mln.LockError) as ei:
        mln.mmap_read_unlock(mm)
    _check_misuse(ei.value, "mmap_read_unlock", "unlocked")
    assert_free(mm.mmap_lock)


def test_write_lock_by_the_write_owner_raises_instead_of_deadlocking(mm):
    """mmap_write_lock by the task that already write-holds it raises LockError (EDEADLK), the hold intact."""
    mln.mmap_write_lock(mm)
    with pytest.raises(mln.LockError) as ei:
        mln.mmap_write_lock(mm)
    assert ei.value.errno == errno.EDEADLK
    _check_misuse(ei.value, "mmap_write_lock", f"write-locked by task {mln.current_task()}")
    assert "already holds it for write" in str(ei.value)
    assert mm.mmap_lock.owner == mln.current_task() and mm.mmap_lock.queue() == (0, 0)
    mln.mmap_write_unlock(mm)
    assert_free(mm.mmap_lock)


@pytest.mark.parametrize("subclass", [8, -1, 1000])
def test_write_lock_nested_bad_subclass(mm, subclass):
    """mmap_write_lock_nested with a subclass outside 0..7 raises ValueError and takes nothing."""
    with pytest.raises(ValueError) as ei:
        mln.mmap_write_lock_nested(mm, subclass)
    assert "MM 'api'" in str(ei.value) and str(subclass) in str(ei.value)
    assert_free(mm.mmap_lock)


def test_write_lock_nested_accepts_every_subclass(mm):
    """mmap_write_lock_nested takes the write lock for each subclass 0..7."""
    for sub in range(8):
        mln.mmap_write_lock_nested(mm, sub)
        assert mm.mmap_lock.owner == mln.current_task()
        mln.mmap_write_unlock(mm)
    assert_free(mm.mmap_lock)


# -- assertions (no debug mode) ----------------------------------------------------------

def test_assertions_without_debug_mode(mm):
    """Without debug mode the assertions check the lock state, whoever holds it, and name the mm and state when they fail."""
    with pytest.raises(AssertionError) as ei:
        mln.mmap_assert_locked(mm)
    msg = str(ei.value)
    assert "mmap_assert_locked" in msg and "MM 'api'" in msg and "not locked" in msg
    assert "state: unlocked" in msg
    with pytest.raises(AssertionError) as ei:
        mln.mmap_assert_write_locked(mm)
    assert "MM 'api'" in str(ei.value) and "not locked" in str(ei.value)

    holder = mm_hold(mm, "read")
    mln.mmap_assert_locked(mm)          # another thread holds it: fine without debug
    with pytest.raises(AssertionError) as ei:
        mln.mmap_assert_write_locked(mm)
    msg = str(ei.value)
    assert "mmap_assert_write_locked" in msg and "MM 'api'" in msg
    assert "locked for read, not for write" in msg and "read-locked by 1 reader" in msg
    holder.done()

    holder = mm_hold(mm, "write")
    mln.mmap_assert_locked(mm)
    mln.mmap_assert_write_locked(mm)
    holder.done()
    assert_free(mm.mmap_lock)


# -- contention hint ------------------------------------------------------------------------

def test_is_contended_while_a_waiter_is_queued(mm):
    """mmap_lock_is_contended is True exactly while a waiter is queued."""
    assert mln.mmap_lock_is_contended(mm) is False
    mln.mmap_write_lock(mm)
    assert mln.mmap_lock_is_contended(mm) is False      # held, nobody waits
    r = mm_queue(mm, "read", (1, 0))
    assert mln.mmap_lock_is_contended(mm) is True
    mln.mmap_write_unlock(mm)
    r.wait_acquired()
    assert mln.mmap_lock_is_contended(mm) is False
    r.done()
    assert_free(mm.mmap_lock)


# -- speculation -------------------------------------------------------------------------------

def test_speculate_try_begin_values(mm):
    """try_begin returns an even int when unlocked or read-locked, None at once while write-locked."""
    seq = mln.mmap_lock_speculate_try_begin(mm)
    assert type(seq) is int and seq % 2 == 0
    mln.mmap_read_lock(mm)
    assert mln.mmap_lock_speculate_try_begin(mm) == seq
    mln.mmap_read_unlock(mm)
    mln.mmap_write_lock(mm)
    assert mln.mmap_lock_speculate_try_begin(mm) is None
    mln.mmap_write_downgrade(mm)
    after = mln.mmap_lock_speculate_try_begin(mm)
    assert type(after) is int and after % 2 == 0 and after != seq
    mln.mmap_read_unlock(mm)
    # A writer in another thread: None at once, without waiting for it.
    holder = mm_hold(mm, "write")
    assert mln.mmap_lock_speculate_try_begin(mm) is None
    holder.done()
    end = mln.mmap_lock_speculate_try_begin(mm)
    assert type(end) is int and end % 2 == 0 and end != after


def test_speculate_retry(mm):
    """retry is False with no write section since try_begin, True after a write cycle or while a writer holds it."""
    seq = mln.mmap_lock_speculate_try_begin(mm)
    assert mln.mmap_lock_speculate_retry(mm, seq) is False
    mln.mmap_read_lock(mm)              # readers do not invalidate
    mln.mmap_read_unlock(mm)
    assert mln.mmap_read_trylock(mm)
    mln.mmap_read_unlock(mm)
    assert mln.mmap_lock_speculate_retry(mm, seq) is False

    mln.mmap_write_lock(mm)
    mln.mmap_write_unlock(mm)
    assert mln.mmap_lock_speculate_retry(mm, seq) is True

    seq = mln.mmap_lock_speculate_try_begin(mm)
    holder = mm_hold(mm, "write")       # a writer has since taken the lock
    assert mln.mmap_lock_speculate_retry(mm, seq) is True
    holder.done()
    assert mln.mmap_lock_speculate_retry(mm, seq) is True

    for how in ("trylock", "killable", "nested"):
        seq = mln.mmap_lock_speculate_try_begin(mm)
        if how == "trylock":
            assert mln.mmap_write_trylock(mm)
        elif how == "killable":
            assert mln.mmap_write_lock_killable(mm) == 0
        else:
            mln.mmap_write_lock_nested(mm, 1)
        assert mln.mmap_lock_speculate_retry(mm, seq) is True, how
        mln.mmap_write_unlock(mm)
        assert mln.mmap_lock_speculate_retry(mm, seq) is True, how


def test_failed_write_trylock_does_not_invalidate_speculation(mm):
    """A failed write trylock is no write section: retry stays False."""
    mln.mmap_read_lock(mm)
    seq = mln.mmap_lock_speculate_try_begin(mm)
    assert Worker(mln.mmap_write_trylock, mm).begin().finish() is False
    assert mln.mmap_lock_speculate_retry(mm, seq) is False
    mln.mmap_read_unlock(mm)


def test_speculation_never_accepts_a_torn_pair(mm):
    """A reader speculating while a writer updates two fields under the write lock never validates a torn pair."""
    state = {"a": 0, "b": 0}
    stop = threading.Event()
    started = threading.Barrier(2, timeout=TIMEOUT)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)         # switch threads often, between the two stores too

    def writer():
        i = 0
        started.wait()
        while not stop.is_set() and i < 2_000_000:     # bounded
            i += 1
            mln.mmap_write_lock(mm)
            try:
                state["a"] = i
                if i % 3 == 0:
                    time.sleep(0)       # drop the GIL mid-update now and then
                state["b"] = i
            finally:
                mln.mmap_write_unlock(mm)
            if i % 2 == 0:
                time.sleep(0)           # and between updates, so that readers validate too
        return i

    validated = torn_rejected = refused = 0
    try:
        w = Worker(writer).begin()
        started.wait()
        deadline = time.monotonic() + TIMEOUT
        try:
            for n in range(10_000_000):     # bounded by the deadline too
                if (n >= 30_000 and validated >= 100) or time.monotonic() > deadline:
                    break
                seq = mln.mmap_lock_speculate_try_begin(mm)
                if seq is None:
                    refused += 1
                    continue
                if n % 2 == 0:
                    time.sleep(0)       # let the writer in before the loads
                a = state["a"]
                b = state["b"]
                if mln.mmap_lock_speculate_retry(mm, seq):
                    torn_rejected += a != b
                    continue
                assert a == b, f"validated a torn pair a={a} b={b} (seq {seq})"
                validated += 1
        finally:
            stop.set()
        writes = w.finish()
    finally:
        sys.setswitchinterval(old_interval)
    assert writes > 0
    assert validated > 0, (refused, torn_rejected)     # the check above ran
    seq = mln.mmap_lock_speculate_try_begin(mm)
    assert seq is not None and state["a"] == state["b"] == writes
    assert not mln.mmap_lock_speculate_retry(mm, seq)
    assert_free(mm.mmap_lock)


# -- a signal interrupts a blocked mmap_write_lock ---------------------------------------

class Interrupted(Exception):
    """Raised by the test's signal handler."""


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
@pytest.mark.parametrize("how", ["custom_exception", "keyboard_interrupt", "context_manager"])
def test_signal_interrupts_blocked_mmap_write_lock(mm, how):
    """A signal handler's exception propagates out of a blocked mmap_write_lock; the lock is not held by us and the queue still works."""
    sem = mm.mmap_lock
    reader = mm_hold(mm, "read", name="reader")
    main = threading.main_thread()
    returned = threading.Event()
    ran = threading.Event()

    if how == "keyboard_interrupt":
        signum, expected = signal.SIGINT, KeyboardInterrupt

        def handler(signo, frame):
            ran.set()
            signal.default_int_handler(signo, frame)
    else:
        signum, expected = signal.SIGUSR1, Interrupted

        def handler(signo, frame):
            ran.set()
            raise Interrupted(f"signal {signo}")

    def signaller():
        try:
            wait_queued(sem, 0, 1)
            wait_asleep_on_lock(sem, main.native_id)
            assert not returned.is_set(), "the main thread is not blocked"
            signal.pthread_kill(main.ident, signum)
            assert returned.wait(TIMEOUT), "the main thread did not return"
        except BaseException:
            reader.unlock()             # so that the main thread cannot hang
            raise

    acquired = False

    def blocked_write_lock():
        nonlocal acquired
        if how == "context_manager":
            with mln.mmap_write_locked(mm):
                acquired = True
        else:
            mln.mmap_write_lock(mm)
            acquired = True
            mln.mmap_write_unlock(mm)

    caught = call_while_signalled(signum, handler, signaller, blocked_write_lock, returned)
    assert ran.is_set()
    assert isinstance(caught, expected), caught
    assert not acquired
    me = mln.current_task()
    assert sem.owner != me and not sem.is_write_locked()
    assert sem.readers == 1 and sem.queue() == (0, 0), sem.state()
    assert reader.acquired.is_set() and not reader.finished.is_set()
    # The queue is intact: a later writer waits behind the reader and gets in.
    w = mm_queue(mm, "write", (0, 1), name="later-writer")
    reader.done()
    w.wait_acquired()
    assert sem.owner == w.task
    w.done()
    assert_free(sem)
