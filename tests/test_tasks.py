"""current_task / set_current_task / task_kill / task_revive / task_is_killed."""
from __future__ import annotations

import errno
import threading

import pytest

import mmap_lock_native as mln
from conftest import TIMEOUT, Worker, assert_free, hold, wait_queued


@pytest.fixture
def task_ids():
    """Task ids for a test; any left killed are revived afterwards."""
    ids = [7_000_001, 7_000_002, 7_000_003]
    yield ids
    for t in ids:
        if mln.task_is_killed(t):
            mln.task_revive(t)


def test_current_task_is_the_os_thread_id():
    assert mln.current_task() == threading.get_native_id()
    ids = Worker(lambda: (mln.current_task(), threading.get_native_id())).begin().finish()
    assert ids[0] == ids[1]
    assert ids[0] != mln.current_task()


def test_set_current_task_binds_per_thread(task_ids):
    me = threading.get_native_id()
    mln.set_current_task(task_ids[0])
    try:
        assert mln.current_task() == task_ids[0]
        # Another thread is unaffected, and may bind its own id.
        def other():
            before = mln.current_task()
            mln.set_current_task(task_ids[1])
            return before, threading.get_native_id(), mln.current_task()
        before, native, bound = Worker(other).begin().finish()
        assert before == native
        assert bound == task_ids[1]
        assert mln.current_task() == task_ids[0]
        mln.set_current_task(mln.TASK_ID_MAX)
        assert mln.current_task() == mln.TASK_ID_MAX
    finally:
        mln.set_current_task(None)
    assert mln.current_task() == me


@pytest.mark.parametrize("func", [mln.set_current_task, mln.task_kill, mln.task_revive,
                                  mln.task_is_killed])
@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError),
                                     (mln.TASK_ID_MAX + 1, ValueError), (1 << 64, ValueError),
                                     ("1", TypeError), (1.0, TypeError), (True, TypeError)])
def test_task_ids_are_validated(func, bad, exc):
    with pytest.raises(exc, match=func.__name__):
        func(bad)
    assert mln.current_task() == threading.get_native_id()


def test_kill_revive_is_killed(task_ids):
    t = task_ids[0]
    assert mln.task_is_killed(t) is False
    assert mln.task_kill(t) is None
    assert mln.task_is_killed(t) is True
    assert mln.task_is_killed(task_ids[1]) is False
    mln.task_kill(t)  # idempotent
    assert mln.task_is_killed(t) is True
    assert mln.task_revive(t) is None
    assert mln.task_is_killed(t) is False
    with pytest.raises(ProcessLookupError) as info:
        mln.task_revive(t)
    assert info.value.errno == errno.ESRCH
    assert str(t) in str(info.value)


def test_killed_task_acquires_a_free_lock(task_ids):
    """As in the kernel, killable acquisitions that need not wait succeed."""
    sem = mln.RWSemaphore()
    mln.set_current_task(task_ids[0])
    mln.task_kill(task_ids[0])
    assert sem.down_read_killable() == 0
    sem.up_read()
    assert sem.down_write_killable() == 0
    assert sem.owner == task_ids[0]
    sem.up_write()
    mln.task_revive(task_ids[0])
    mln.set_current_task(None)
    assert_free(sem)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_killed_task_fails_at_once_where_it_would_wait(task_ids, mode):
    sem = mln.RWSemaphore()
    holder = hold(sem, "write")

    def body():
        mln.set_current_task(task_ids[0])
        return getattr(sem, f"down_{mode}_killable")()

    mln.task_kill(task_ids[0])
    assert Worker(body).begin().finish() == -errno.EINTR
    assert sem.queue() == (0, 0)
    assert sem.owner == holder.task
    # Revived, it waits again (and gets the lock once released).
    mln.task_revive(task_ids[0])
    w = Worker(body).begin()
    wait_queued(sem, int(mode == "read"), int(mode == "write"), workers=(w,))
    holder.unlock()
    assert w.finish() == 0
    if mode == "read":
        assert sem.readers == 1
        sem.up_read()
    else:
        assert sem.owner == task_ids[0]
        mln.set_current_task(task_ids[0])
        sem.up_write()
        mln.set_current_task(None)
    holder.finish()
    assert_free(sem)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_kill_ends_a_wait_in_progress(mode):
    """The default task id is the thread id: killing it ends the thread's
    killable wait with -EINTR; the lock is untouched."""
    sem = mln.RWSemaphore()
    sem.down_write()
    w = Worker(getattr(sem, f"down_{mode}_killable")).begin()
    wait_queued(sem, int(mode == "read"), int(mode == "write"), workers=(w,))
    mln.task_kill(w.task)
    try:
        assert w.finish() == -errno.EINTR
    finally:
        mln.task_revive(w.task)
    assert sem.queue() == (0, 0)
    assert sem.owner == mln.current_task()
    sem.up_write()
    assert_free(sem)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_kill_does_not_end_plain_waits(task_ids, mode):
    """down_read/down_write are not killable: a killed task keeps waiting and
    gets the lock when it is released."""
    sem = mln.RWSemaphore()
    sem.down_write()

    def body():
        mln.set_current_task(task_ids[0])
        getattr(sem, f"down_{mode}")()
        out = (sem.readers, sem.owner)
        getattr(sem, f"up_{mode}")()
        return out

    w = Worker(body).begin()
    wait_queued(sem, int(mode == "read"), int(mode == "write"), workers=(w,))
    mln.task_kill(task_ids[0])
    assert not w.finished.wait(0.2)  # still waiting, not returned
    assert sem.queue() == (int(mode == "read"), int(mode == "write"))
    sem.up_write()
    assert w.finish() == ((1, None) if mode == "read" else (0, task_ids[0]))
    assert_free(sem)


def test_kill_of_another_task_leaves_a_waiter_waiting(task_ids):
    sem = mln.RWSemaphore()
    sem.down_write()

    def body():
        mln.set_current_task(task_ids[0])
        return sem.down_write_killable()

    w = Worker(body).begin()
    wait_queued(sem, 0, 1, workers=(w,))
    mln.task_kill(task_ids[1])  # wakes every sleeper to recheck; not this one's task
    assert not w.finished.wait(0.2)
    assert sem.queue() == (0, 1)
    mln.task_kill(task_ids[0])
    assert w.finish() == -errno.EINTR
    assert sem.queue() == (0, 0)
    sem.up_write()
    assert_free(sem)


def test_kill_follows_the_bound_task_not_the_thread(task_ids):
    """A thread bound to a custom task: killing that task ends its killable
    wait; killing its OS thread id does not."""
    sem = mln.RWSemaphore()
    sem.down_write()
    bound = threading.Event()

    def body():
        mln.set_current_task(task_ids[2])
        bound.set()
        return sem.down_read_killable()

    w = Worker(body).begin()
    assert bound.wait(TIMEOUT)
    wait_queued(sem, 1, 0, workers=(w,))
    mln.task_kill(w.native_id)
    try:
        assert not w.finished.wait(0.2)
    finally:
        mln.task_revive(w.native_id)
    mln.task_kill(task_ids[2])
    assert w.finish() == -errno.EINTR
    sem.up_write()
    assert_free(sem)
