"""Misuse raises LockError (a RuntimeError) naming the lock, the operation and
the state found, and leaves the lock as it was, usable."""
from __future__ import annotations

import errno
import re

import pytest

import mmap_lock_native as mln
from conftest import Worker, assert_free, hold, queue_up

NAME = "victim-lock"


def check_error(exc: mln.LockError, sem: mln.RWSemaphore, op: str, state: str,
                code: int, named: bool = True) -> None:
    msg = str(exc)
    assert isinstance(exc, RuntimeError)
    assert exc.operation == op
    assert exc.errno == code
    assert msg.startswith(f"{op} on RWSemaphore")
    if named:
        assert f"'{NAME}'" in msg
    else:
        assert re.match(rf"{op} on RWSemaphore at 0x[0-9a-f]+: ", msg), msg
    assert errno.errorcode[code] in msg
    assert msg.endswith(f"state: {state}"), msg


def snapshot(sem: mln.RWSemaphore):
    return (sem.is_locked(), sem.is_write_locked(), sem.readers, sem.owner, sem.queue(),
            sem.state())


@pytest.fixture(params=[True, False], ids=["named", "unnamed"])
def named(request):
    return request.param


@pytest.fixture
def sem(named):
    return mln.RWSemaphore(name=NAME if named else None)


def expect_misuse(sem, named, call, op, state, code):
    before = snapshot(sem)
    with pytest.raises(mln.LockError) as info:
        call()
    check_error(info.value, sem, op, state, code, named)
    assert snapshot(sem) == before, "a refused misuse changed the lock"


# -- on a free lock -----------------------------------------------------------------

@pytest.mark.parametrize("op", ["up_read", "up_read_non_owner", "up_write", "downgrade_write"])
def test_release_of_free_lock(sem, named, op):
    expect_misuse(sem, named, getattr(sem, op), op, "unlocked", errno.EPERM)
    assert_free(sem)


def test_double_up_read(sem, named):
    sem.down_read()
    sem.up_read()
    expect_misuse(sem, named, sem.up_read, "up_read", "unlocked", errno.EPERM)
    assert_free(sem)


def test_up_read_once_too_often_with_readers_left(sem, named):
    """Two holds, three releases: the third is refused, the count not wrapped."""
    sem.down_read()
    sem.down_read()
    sem.up_read()
    sem.up_read()
    expect_misuse(sem, named, sem.up_read, "up_read", "unlocked", errno.EPERM)
    assert sem.readers == 0
    assert_free(sem)


def test_double_up_write(sem, named):
    sem.down_write()
    sem.up_write()
    expect_misuse(sem, named, sem.up_write, "up_write", "unlocked", errno.EPERM)
    assert_free(sem)


# -- on a lock the caller holds for write --------------------------------------------

@pytest.mark.parametrize("op,code", [
    ("up_read", errno.EPERM),
    ("up_read_non_owner", errno.EPERM),
    ("down_read", errno.EDEADLK),
    ("down_write", errno.EDEADLK),
    ("down_read_killable", errno.EDEADLK),
    ("down_write_killable", errno.EDEADLK),
    ("down_read_non_owner", errno.EDEADLK),
    ("destroy", errno.EBUSY),
])
def test_misuse_while_holding_write(sem, named, op, code):
    sem.down_write()
    me = mln.current_task()
    expect_misuse(sem, named, getattr(sem, op), op, f"write-locked by task {me}", code)
    if code == errno.EDEADLK:
        assert "already holds it for write" in str(pytest.raises(
            mln.LockError, getattr(sem, op)).value)
    assert sem.owner == me
    sem.up_write()
    assert_free(sem)


@pytest.mark.parametrize("op", ["acquire_read", "acquire_write"])
def test_timed_acquire_while_holding_write_is_misuse_not_timeout(sem, named, op):
    sem.down_write()
    me = mln.current_task()
    expect_misuse(sem, named, lambda: getattr(sem, op)(timeout=0.05), op,
                  f"write-locked by task {me}", errno.EDEADLK)
    sem.up_write()
    assert_free(sem)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_context_manager_while_holding_write(sem, named, mode):
    """``with sem.read():`` / ``with sem.write():`` inside a write hold; the
    operation is named after the context manager or the acquire it runs."""
    sem.down_write()
    me = mln.current_task()
    before = snapshot(sem)
    for timeout in (None, 0.05):
        with pytest.raises(mln.LockError) as info:
            with getattr(sem, mode)(timeout=timeout):
                pytest.fail("entered")
        op = info.value.operation
        assert op in (mode, f"down_{mode}", f"acquire_{mode}")
        check_error(info.value, sem, op, f"write-locked by task {me}", errno.EDEADLK, named)
        assert snapshot(sem) == before
    sem.up_write()
    assert_free(sem)


def test_down_write_nested_while_holding_write(sem, named):
    """The error names the operation the caller used, down_write_nested."""
    sem.down_write()
    me = mln.current_task()
    expect_misuse(sem, named, lambda: sem.down_write_nested(mln.SINGLE_DEPTH_NESTING),
                  "down_write_nested", f"write-locked by task {me}", errno.EDEADLK)
    sem.up_write()
    assert_free(sem)


# -- on a lock held for read ------------------------------------------------------------

def test_up_write_of_read_held_lock(sem, named):
    sem.down_read()
    me = mln.current_task()
    expect_misuse(sem, named, sem.up_write, "up_write",
                  f"read-locked by 1 reader, last reader task {me}", errno.EPERM)
    sem.up_read()
    assert_free(sem)


def test_downgrade_without_write(sem, named):
    sem.down_read()
    me = mln.current_task()
    expect_misuse(sem, named, sem.downgrade_write, "downgrade_write",
                  f"read-locked by 1 reader, last reader task {me}", errno.EPERM)
    sem.up_read()
    assert_free(sem)


def test_destroy_while_read_held(sem, named):
    sem.down_read()
    me = mln.current_task()
    expect_misuse(sem, named, sem.destroy, "destroy",
                  f"read-locked by 1 reader, last reader task {me}", errno.EBUSY)
    sem.up_read()
    assert_free(sem)


# -- on a lock another thread holds or waits for -----------------------------------------

@pytest.mark.parametrize("op", ["up_write", "downgrade_write", "up_read"])
def test_release_of_another_threads_write_hold(sem, named, op):
    w = hold(sem, "write")
    expect_misuse(sem, named, getattr(sem, op), op, f"write-locked by task {w.task}",
                  errno.EPERM)
    # From a third thread too.
    third = Worker(getattr(sem, op)).begin()
    with pytest.raises(mln.LockError):
        third.finish()
    assert sem.owner == w.task
    w.unlock()
    w.finish()
    assert_free(sem)


def test_destroy_while_waited_on(sem, named):
    """Not held (any more) but a writer is queued behind a reader."""
    r = hold(sem, "read")
    w = queue_up(sem, "write", (0, 1))
    with pytest.raises(mln.LockError) as info:
        sem.destroy()
    assert info.value.operation == "destroy"
    assert info.value.errno == errno.EBUSY
    assert "queued: 0 reader(s), 1 writer(s)" in str(info.value)
    r.unlock()
    w.wait_acquired()
    w.unlock()
    r.finish()
    w.finish()
    assert_free(sem)
    sem.destroy()
    assert sem.state() == "destroyed"


def test_misuse_leaves_waiters_intact(sem, named):
    """A refused release while others are queued wakes nobody wrongly and
    loses nobody: every waiter gets the lock afterwards."""
    sem.down_write()
    r = queue_up(sem, "read", (1, 0))
    w = queue_up(sem, "write", (1, 1))
    for op in ["up_read", "up_read_non_owner"]:
        with pytest.raises(mln.LockError):
            getattr(sem, op)()
    with pytest.raises(mln.LockError):
        sem.down_read()
    with pytest.raises(mln.LockError):
        sem.destroy()
    assert sem.queue() == (1, 1)
    assert sem.owner == mln.current_task()
    sem.up_write()
    r.wait_acquired()
    r.unlock()
    w.wait_acquired()
    w.unlock()
    r.finish()
    w.finish()
    assert_free(sem)


def test_up_read_after_destroy_and_destroy_twice(sem, named):
    sem.destroy()
    with pytest.raises(mln.LockError) as info:
        sem.destroy()
    check_error(info.value, sem, "destroy", "destroyed", errno.EINVAL, named)
    assert "it has been destroyed" in str(info.value)
    with pytest.raises(mln.LockError) as info:
        sem.down_read()
    check_error(info.value, sem, "down_read", "destroyed", errno.EINVAL, named)
    with pytest.raises(mln.LockError) as info:
        sem.up_read()
    check_error(info.value, sem, "up_read", "destroyed", errno.EPERM, named)
