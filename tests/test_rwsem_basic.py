"""Semantics of each RWSemaphore method, one thread or a few, no misuse."""
from __future__ import annotations

import math
import threading
import time

import pytest

import mmap_lock_native as mln
from conftest import (TIMEOUT, Worker, assert_free, hold, queue_up, wait_handoff_pending,
                      wait_queued)


@pytest.fixture(params=[False, True], ids=["private", "shared"])
def sem(request):
    return mln.RWSemaphore(shared=request.param, name="basic")


def test_new_semaphore_is_free(sem):
    assert sem.shared in (False, True)
    assert sem.name == "basic"
    assert_free(sem)
    assert repr(sem).startswith("<RWSemaphore 'basic' at 0x")
    assert repr(sem).endswith(": unlocked>")


def test_constants():
    assert mln.SINGLE_DEPTH_NESTING == 1
    assert mln.RWSemaphore.SIZE >= 8
    assert mln.RWSemaphore.ALIGNMENT in (4, 8, 16)
    assert mln.TASK_ID_MAX == (1 << 62) - 1
    assert issubclass(mln.LockError, RuntimeError)


# -- read -------------------------------------------------------------------

def test_down_read_up_read(sem):
    assert sem.down_read() is None
    assert sem.is_locked()
    assert not sem.is_write_locked()
    assert sem.readers == 1
    assert sem.owner is None
    assert sem.state() == f"read-locked by 1 reader, last reader task {mln.current_task()}"
    assert sem.up_read() is None
    assert_free(sem)


def test_read_is_recursive_without_waiters(sem):
    sem.down_read()
    sem.down_read()
    assert sem.readers == 2
    assert sem.state().startswith("read-locked by 2 readers")
    sem.up_read()
    assert sem.readers == 1
    sem.up_read()
    assert_free(sem)


def test_readers_hold_concurrently(sem):
    """Three threads hold the read lock at the same time: each waits, holding
    it, until all three hold it (a barrier that would time out otherwise)."""
    barrier = threading.Barrier(3, timeout=TIMEOUT)
    counts = []

    def reader():
        with sem.read():
            barrier.wait()
            counts.append(sem.readers)
            barrier.wait()

    workers = [Worker(reader, name=f"r{i}").begin() for i in range(3)]
    for w in workers:
        w.finish()
    assert counts == [3, 3, 3]
    assert_free(sem)


def test_down_read_blocks_while_write_held(sem):
    sem.down_write()
    reader = queue_up(sem, "read", (1, 0))
    assert sem.is_contended()
    assert not reader.acquired.is_set()
    sem.up_write()
    reader.wait_acquired()
    assert reader.seen == (1, False, None)
    reader.unlock()
    reader.finish()
    assert_free(sem)


def test_down_read_killable_uncontended_returns_zero(sem):
    rc = sem.down_read_killable()
    assert rc == 0 and type(rc) is int
    assert sem.readers == 1
    sem.up_read()
    assert_free(sem)


# -- write ------------------------------------------------------------------

def test_down_write_up_write(sem):
    assert sem.down_write() is None
    me = mln.current_task()
    assert sem.is_locked()
    assert sem.is_write_locked()
    assert sem.readers == 0
    assert sem.owner == me
    assert sem.state() == f"write-locked by task {me}"
    assert sem.up_write() is None
    assert_free(sem)


def test_down_write_killable_uncontended_returns_zero(sem):
    rc = sem.down_write_killable()
    assert rc == 0 and type(rc) is int
    assert sem.owner == mln.current_task()
    sem.up_write()
    assert_free(sem)


def test_down_write_blocks_while_read_held(sem):
    sem.down_read()
    writer = queue_up(sem, "write", (0, 1))
    assert sem.is_contended()
    sem.up_read()
    writer.wait_acquired()
    assert writer.seen == (0, True, writer.task)
    writer.unlock()
    writer.finish()
    assert_free(sem)


def test_down_write_blocks_while_write_held(sem):
    sem.down_write()
    writer = queue_up(sem, "write", (0, 1))
    assert sem.owner == mln.current_task()
    sem.up_write()
    writer.wait_acquired()
    assert sem.owner == writer.task
    writer.unlock()
    writer.finish()
    assert_free(sem)


def test_down_write_nested(sem):
    inner = mln.RWSemaphore(name="inner")
    sem.down_write()
    inner.down_write_nested(mln.SINGLE_DEPTH_NESTING)
    assert inner.owner == mln.current_task()
    assert sem.owner == mln.current_task()
    inner.up_write()
    sem.up_write()
    for subclass in range(8):
        sem.down_write_nested(subclass)
        sem.up_write()
    assert_free(sem)
    assert_free(inner)


@pytest.mark.parametrize("subclass", [-1, 8, 100])
def test_down_write_nested_rejects_bad_subclass(sem, subclass):
    with pytest.raises(ValueError, match=r"down_write_nested.*subclass"):
        sem.down_write_nested(subclass)
    assert_free(sem)


def test_owner_is_the_writing_thread(sem):
    """owner is the writer's current_task(), seen from any thread, and None
    when read-locked or free."""
    w = hold(sem, "write")
    assert w.task != mln.current_task()
    assert w.task == w.native_id
    assert sem.owner == w.task
    assert sem.state() == f"write-locked by task {w.task}"
    w.unlock()
    w.finish()
    assert sem.owner is None
    r = hold(sem, "read")
    assert sem.owner is None
    r.unlock()
    r.finish()
    assert_free(sem)


# -- trylocks -----------------------------------------------------------------

def test_trylocks_on_free_and_read_held_lock(sem):
    ok = sem.down_read_trylock()
    assert ok is True
    assert sem.down_read_trylock() is True
    assert sem.readers == 2
    assert sem.down_write_trylock() is False
    sem.up_read()
    sem.up_read()
    assert sem.down_write_trylock() is True
    assert sem.owner == mln.current_task()
    assert sem.down_read_trylock() is False
    assert sem.up_write() is None
    assert_free(sem)


def test_trylocks_never_block(sem):
    """While another thread holds the lock for write, trylocks from a third
    thread return False at once, many times over (a blocking trylock would
    make the worker overrun its bound)."""
    w = hold(sem, "write")

    def try_many():
        t0 = time.monotonic()
        results = set()
        for _ in range(1000):
            results.add(sem.down_read_trylock())
            results.add(sem.down_write_trylock())
            results.add(sem.acquire_read(timeout=0))
            results.add(sem.acquire_write(timeout=0))
        return results, time.monotonic() - t0

    results, elapsed = Worker(try_many).begin().finish()
    assert results == {False}
    assert elapsed < 2.0
    assert sem.queue() == (0, 0)
    assert sem.owner == w.task
    w.unlock()
    w.finish()
    assert_free(sem)


def test_trylocks_fail_while_a_writer_waits(sem):
    """Writer preference: with a writer queued, a read trylock fails even
    though the lock is only read-held; nothing is queued by the attempts."""
    r = hold(sem, "read")
    w = queue_up(sem, "write", (0, 1))

    def attempts():
        return (sem.down_read_trylock(), sem.down_write_trylock(),
                sem.acquire_read(timeout=0), sem.acquire_write(timeout=0))

    assert Worker(attempts).begin().finish() == (False, False, False, False)
    assert attempts() == (False, False, False, False)
    assert sem.queue() == (0, 1)
    assert sem.readers == 1
    r.unlock()
    w.wait_acquired()
    w.unlock()
    r.finish()
    w.finish()
    assert_free(sem)


# -- is_contended -------------------------------------------------------------

def test_is_contended_sees_waiters(sem):
    assert not sem.is_contended()
    sem.down_write()
    assert not sem.is_contended()
    r = queue_up(sem, "read", (1, 0))
    assert sem.is_contended()
    w = queue_up(sem, "write", (1, 1))
    assert sem.is_contended()
    sem.up_write()
    r.wait_acquired()
    # The reader was granted; the writer still waits for it.
    assert sem.queue() == (0, 1)
    assert sem.is_contended()
    r.unlock()
    w.wait_acquired()
    assert not sem.is_contended()
    w.unlock()
    r.finish()
    w.finish()
    assert_free(sem)


# -- downgrade ------------------------------------------------------------------

def test_downgrade_write_single_thread(sem):
    sem.down_write()
    assert sem.downgrade_write() is None
    assert sem.is_locked()
    assert not sem.is_write_locked()
    assert sem.readers == 1
    assert sem.owner is None
    assert sem.down_write_trylock() is False
    # Other readers may join.
    assert Worker(lambda: (sem.down_read_trylock(), sem.up_read())).begin().finish() == (True, None)
    sem.up_read()
    assert_free(sem)


def test_downgrade_admits_queued_readers_and_keeps_queued_writer_out(sem):
    """Queue r1, w, r2 behind our write hold; downgrade: both readers get in
    (concurrently with our read hold), the writer stays queued until the last
    read hold, ours included, is released."""
    sem.down_write()
    log = []
    r1 = queue_up(sem, "read", (1, 0), name="r1", log=log)
    w = queue_up(sem, "write", (1, 1), name="w", log=log)
    r2 = queue_up(sem, "read", (2, 1), name="r2", log=log)
    sem.downgrade_write()
    r1.wait_acquired()
    r2.wait_acquired()
    assert sem.readers == 3
    assert not sem.is_write_locked()
    assert sem.queue() == (0, 1)
    assert not w.acquired.is_set()
    r1.unlock()
    r2.unlock()
    r1.finish()
    r2.finish()
    assert sem.readers == 1
    # Only our downgraded read hold is left, and it still keeps the writer out.
    wait_queued(sem, 0, 1)
    assert not w.acquired.is_set()
    assert sem.down_write_trylock() is False
    sem.up_read()
    w.wait_acquired()
    assert w.seen == (0, True, w.task)
    w.unlock()
    w.finish()
    assert log == ["r1", "r2", "w"] or log == ["r2", "r1", "w"]
    assert_free(sem)


def test_downgrade_write_lets_no_writer_slip_in(sem):
    """A writer that has waited long enough to reserve the lock (handoff)
    still does not get it at a downgrade: the lock goes write -> read."""
    sem.down_write()
    w = queue_up(sem, "write", (0, 1))
    wait_handoff_pending(sem)
    sem.downgrade_write()
    assert sem.readers == 1
    assert not sem.is_write_locked()
    assert sem.queue() == (0, 1)
    assert not w.acquired.is_set()
    sem.up_read()
    w.wait_acquired()
    w.unlock()
    w.finish()
    assert_free(sem)


# -- non-owner read -------------------------------------------------------------

def test_read_non_owner_released_by_another_thread(sem):
    Worker(sem.down_read_non_owner).begin().finish()
    assert sem.readers == 1
    sem.up_read_non_owner()  # from the main thread
    assert_free(sem)


def test_read_non_owner_records_no_owning_task(sem):
    """As the kernel (and the C core's down_read_non_owner), a non-owner read
    hold names no task as its last reader, uncontended or not: the hold
    belongs to nobody."""
    sem.down_read_non_owner()
    assert sem.state() == "read-locked by 1 reader"
    sem.up_read_non_owner()
    sem.down_write()
    taker = Worker(sem.down_read_non_owner, name="taker").begin()
    wait_queued(sem, 1, 0, workers=(taker,))
    sem.up_write()
    taker.finish()
    assert sem.state() == "read-locked by 1 reader"
    sem.up_read_non_owner()
    assert_free(sem)


def test_blocked_read_non_owner_then_released_elsewhere(sem):
    sem.down_write()
    r = queue_up(sem, "read_non_owner", (1, 0))
    sem.up_write()
    r.wait_acquired()
    assert sem.readers == 1
    r.unlock()  # it releases with up_read_non_owner in its own thread
    r.finish()
    assert_free(sem)

    # Taken blocked in one thread, released in another one.
    sem.down_write()
    taker = Worker(sem.down_read_non_owner, name="taker").begin()
    wait_queued(sem, 1, 0, workers=(taker,))
    sem.up_write()
    taker.finish()
    assert sem.readers == 1
    Worker(sem.up_read_non_owner, name="releaser").begin().finish()
    assert_free(sem)


# -- context managers -------------------------------------------------------------

def test_read_context_manager(sem):
    with sem.read() as s:
        assert s is sem
        assert sem.readers == 1
        with sem.read():
            assert sem.readers == 2
        assert sem.readers == 1
    assert_free(sem)
    with sem.read(timeout=1.0) as s:
        assert s is sem
        assert sem.readers == 1
    assert_free(sem)


def test_write_context_manager(sem):
    with sem.write() as s:
        assert s is sem
        assert sem.owner == mln.current_task()
    assert_free(sem)
    with sem.write(timeout=1.0):
        assert sem.is_write_locked()
    assert_free(sem)


@pytest.mark.parametrize("mode", ["read", "write"])
@pytest.mark.parametrize("timeout", [None, 5.0])
def test_context_manager_releases_on_exception(sem, mode, timeout):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with getattr(sem, mode)(timeout=timeout):
            assert sem.is_locked()
            raise Boom()
    assert_free(sem)


@pytest.mark.parametrize("holder_mode,mode", [("write", "read"), ("write", "write"),
                                              ("read", "write")])
def test_context_manager_timeout_raises_and_holds_nothing(sem, holder_mode, mode):
    h = hold(sem, holder_mode)
    before = (sem.readers, sem.is_write_locked(), sem.owner)
    entered = []

    def body():
        t0 = time.monotonic()
        try:
            with getattr(sem, mode)(timeout=0.2):
                entered.append(True)
        except TimeoutError as exc:
            return exc, time.monotonic() - t0
        return None, time.monotonic() - t0

    exc, elapsed = Worker(body).begin().finish()
    assert isinstance(exc, TimeoutError), exc
    assert not entered
    assert f"{mode} lock of RWSemaphore 'basic'" in str(exc)
    assert "not acquired within 0.2 s" in str(exc)
    assert "state: " in str(exc)
    assert elapsed >= 0.19
    # The timed-out acquisition left nothing behind.
    assert (sem.readers, sem.is_write_locked(), sem.owner) == before
    assert sem.queue() == (0, 0)
    assert not sem.is_contended()
    h.unlock()
    h.finish()
    assert_free(sem)


# -- timed acquisition -------------------------------------------------------------

def test_acquire_on_free_lock(sem):
    assert sem.acquire_read() is True
    assert sem.acquire_read(timeout=0) is True
    assert sem.readers == 2
    sem.up_read()
    sem.up_read()
    assert sem.acquire_write(timeout=0) is True
    assert sem.owner == mln.current_task()
    sem.up_write()
    assert sem.acquire_write(timeout=1.5) is True
    sem.up_write()
    assert_free(sem)


@pytest.mark.parametrize("holder_mode,mode", [("write", "read"), ("write", "write"),
                                              ("read", "write")])
@pytest.mark.parametrize("timeout", [0, 0.15])
def test_acquire_timeout_returns_false(sem, holder_mode, mode, timeout):
    h = hold(sem, holder_mode)
    acquire = getattr(sem, f"acquire_{mode}")

    def body():
        t0 = time.monotonic()
        ok = acquire(timeout=timeout)
        return ok, time.monotonic() - t0

    ok, elapsed = Worker(body).begin().finish()
    assert ok is False
    assert elapsed >= timeout - 0.001
    assert elapsed < timeout + 5.0
    assert sem.queue() == (0, 0)
    assert sem.is_write_locked() == (holder_mode == "write")
    assert sem.readers == (1 if holder_mode == "read" else 0)
    h.unlock()
    h.finish()
    assert_free(sem)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_acquire_succeeds_when_released_before_timeout(sem, mode):
    sem.down_write()
    acquire = getattr(sem, f"acquire_{mode}")
    release = getattr(sem, f"up_{mode}")
    let_go = threading.Event()

    def body():
        ok = acquire(timeout=TIMEOUT)
        seen = (sem.readers, sem.owner)
        if ok:
            let_go.wait(TIMEOUT)
            release()
        return ok, seen

    w = Worker(body).begin()
    wait_queued(sem, int(mode == "read"), int(mode == "write"), workers=(w,))
    sem.up_write()
    wait_queued(sem, 0, 0)
    let_go.set()
    ok, seen = w.finish()
    assert ok is True
    assert seen == ((1, None) if mode == "read" else (0, w.task))
    assert_free(sem)


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan])
def test_acquire_rejects_bad_timeouts(sem, timeout):
    sem.down_write()  # so that the timeout is actually looked at
    w = Worker(lambda: sem.acquire_read(timeout=timeout)).begin()
    with pytest.raises(ValueError, match="timeout"):
        w.finish()
    w = Worker(lambda: sem.acquire_write(timeout=timeout)).begin()
    with pytest.raises(ValueError, match="timeout"):
        w.finish()
    assert sem.queue() == (0, 0)
    sem.up_write()
    assert_free(sem)


@pytest.mark.parametrize("how,timeout", [("acquire_read", -1), ("acquire_write", -1),
                                         ("read", -1), ("write", -1), ("acquire_write", math.nan)])
def test_bad_timeouts_are_rejected_on_a_free_lock_too(how, timeout):
    """A bad timeout is an error whether or not the lock happens to be free
    (else code that works uncontended fails under contention)."""
    sem = mln.RWSemaphore()
    with pytest.raises(ValueError, match="timeout"):
        if how.startswith("acquire"):
            getattr(sem, how)(timeout=timeout)
        else:
            with getattr(sem, how)(timeout=timeout):
                pass
    assert_free(sem)


# -- tasks as owners ------------------------------------------------------------------

def test_custom_task_is_the_owner():
    """set_current_task() binds the id the lock records as owner; only that
    task may release; another task on the same thread is just another
    contender (it times out, it is not a recursive acquisition)."""
    sem = mln.RWSemaphore(name="tasks")

    def body():
        mln.set_current_task(4242)
        assert mln.current_task() == 4242
        sem.down_write()
        out = {"owner": sem.owner, "state": sem.state()}
        mln.set_current_task(4243)
        try:
            sem.up_write()
        except mln.LockError as exc:
            out["up_write_other"] = exc
        out["owner_after"] = sem.owner
        out["acquire_write_other"] = sem.acquire_write(timeout=0.05)
        out["acquire_read_other"] = sem.acquire_read(timeout=0.05)
        try:
            sem.downgrade_write()
        except mln.LockError as exc:
            out["downgrade_other"] = exc
        mln.set_current_task(4242)
        with pytest.raises(mln.LockError):
            sem.down_write()  # the owner task again: a recursive acquisition
        sem.up_write()
        mln.set_current_task(None)
        out["restored"] = mln.current_task() == threading.get_native_id()
        return out

    out = Worker(body).begin().finish()
    assert out["owner"] == 4242
    assert out["state"] == "write-locked by task 4242"
    exc = out["up_write_other"]
    assert isinstance(exc, mln.LockError)
    assert "up_write" in str(exc) and "write-locked by task 4242" in str(exc)
    assert out["owner_after"] == 4242
    assert out["acquire_write_other"] is False
    assert out["acquire_read_other"] is False
    assert isinstance(out["downgrade_other"], mln.LockError)
    assert out["restored"]
    assert_free(sem)


# -- state, handoffs, destroy -----------------------------------------------------------

def test_state_reports_queue(sem):
    sem.down_write()
    r = queue_up(sem, "read", (1, 0))
    w = queue_up(sem, "write", (1, 1))
    me = mln.current_task()
    assert sem.state().startswith(f"write-locked by task {me}; queued: 1 reader(s), 1 writer(s)")
    assert "queued: 1 reader(s), 1 writer(s)" in repr(sem)
    sem.up_write()
    r.unlock()
    w.unlock()
    r.finish()
    w.finish()
    assert_free(sem)


def test_handoffs_count_reservations_granted(sem):
    """A writer queued behind a reader for more than ~4 ms reserves the lock;
    the release hands it over and counts a handoff."""
    assert sem.handoffs == 0
    sem.down_read()
    w = queue_up(sem, "write", (0, 1))
    wait_handoff_pending(sem)
    # Reserved: nobody else may take it now, not even a reader trylock.
    assert sem.down_read_trylock() is False
    sem.up_read()
    w.wait_acquired()
    assert sem.handoffs == 1
    w.unlock()
    w.finish()
    assert sem.handoffs == 1
    assert_free(sem)


def test_destroy_free_lock(sem):
    sem.down_write()
    sem.up_write()
    assert sem.destroy() is None
    assert sem.state() == "destroyed"
    assert not sem.is_locked()
    assert sem.down_read_trylock() is False
    assert sem.down_write_trylock() is False
    for op in ["down_read", "down_write", "down_read_killable", "down_write_killable",
               "down_read_non_owner"]:
        with pytest.raises(mln.LockError, match=rf"^{op} on RWSemaphore 'basic' .*destroyed"):
            getattr(sem, op)()
    for op in ["acquire_read", "acquire_write"]:
        with pytest.raises(mln.LockError, match=rf"^{op} on .*destroyed"):
            getattr(sem, op)(timeout=1.0)
    with pytest.raises(mln.LockError, match="^destroy on .*destroyed"):
        sem.destroy()
    with pytest.raises(mln.LockError, match="^up_read on"):
        sem.up_read()
    with pytest.raises(mln.LockError, match="^up_write on"):
        sem.up_write()
    assert sem.state() == "destroyed"
    assert sem.queue() == (0, 0)
