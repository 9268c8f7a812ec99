"""Robust process-shared semaphores (issue 10, C): a process's death never
wedges a shared=True semaphore.

Each test SIGKILLs a process (multiprocessing) at one point of its life with
the lock: a read or write holder, a queued reader, a queued writer before and
after it reserved the lock, a process inside the internal wait lock (caught
by SIGSTOP sampling).  Then every survivor must take the lock for write and
for read within a bound, and the lock must end free.  After a write holder's
death acquisitions raise OwnerDiedError with the lock held, until a writer's.
"""
from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import random
import signal
import struct
import time
from multiprocessing import shared_memory
from typing import Any, List

import pytest

import mmap_lock_native as mln
from conftest import assert_free, join_processes, wait_handoff_pending, wait_queued

CTX = mp.get_context("fork")
#: Bound of every wait that must end.
TIMEOUT = 30.0
#: A survivor's recovery must come within this (the design's target is 0.1 s).
RECOVERY_BOUND = 1.0
#: The wait lock is the structure's second 32-bit word; a shared holder's
#: word has its pid in the low 22 bits (csrc/core/rwsem.h, wait_lock.h).
WAIT_LOCK_AT = 4
PID_MASK = (1 << 22) - 1


def _join(procs: List[Any]) -> List[Any]:
    return join_processes(procs, TIMEOUT)


def _hold(sem: mln.RWSemaphore, write: bool, ready: Any) -> None:
    """Child: take the lock, say so, and wait to be killed."""
    (sem.down_write if write else sem.down_read)()
    ready.set()
    while True:
        signal.pause()


def _queue_for(sem: mln.RWSemaphore, write: bool, done: Any) -> None:
    """Child: wait for the lock (it is killed while queued)."""
    (sem.down_write if write else sem.down_read)()
    done.set()


def _take_both(sem: mln.RWSemaphore) -> str:
    """A survivor's round: write, then read, each within TIMEOUT.  An owner
    died indication is the lock too (released after the repair it asks)."""
    for write in (True, False):
        try:
            got = (sem.acquire_write if write else sem.acquire_read)(timeout=TIMEOUT)
        except mln.OwnerDiedError as err:
            err.release()
            continue
        if not got:
            return f"no {'write' if write else 'read'} lock within {TIMEOUT} s: {sem.state()}"
        (sem.up_write if write else sem.up_read)()
    return "ok"


def _survivor(sem: mln.RWSemaphore, results: Any) -> None:
    results.put(_take_both(sem))


def assert_survivors_take_it(sem: mln.RWSemaphore, n: int = 2) -> None:
    """This process and ``n`` fresh ones take the lock, at once; then it is free."""
    results = CTX.Queue()
    procs = [CTX.Process(target=_survivor, args=(sem, results), name=f"survivor{i}")
             for i in range(n)]
    for p in procs:
        p.start()
    assert _take_both(sem) == "ok"
    assert _join(procs) == [0] * n
    assert sorted(results.get(timeout=TIMEOUT) for _ in procs) == ["ok"] * n
    assert_free(sem)


def _start_holder(sem: mln.RWSemaphore, write: bool) -> Any:
    ready = CTX.Event()
    p = CTX.Process(target=_hold, args=(sem, write, ready), name="holder")
    p.start()
    assert ready.wait(TIMEOUT), f"the holder did not take the lock: {sem.state()}"
    return p


def _kill(p: Any) -> float:
    """SIGKILL; the child stays a zombie until joined.  Returns when."""
    t = time.monotonic()
    os.kill(p.pid, signal.SIGKILL)
    return t


def _recovered(what: str, killed_at: float) -> None:
    took = time.monotonic() - killed_at
    assert took < RECOVERY_BOUND, f"{what}: {took * 1000:.0f} ms to recover"


# -- holders ---------------------------------------------------------------------------

def test_write_holder_killed_acquisitions_are_told_until_a_writers() -> None:
    sem = mln.RWSemaphore(shared=True, name="robust")
    p = _start_holder(sem, write=True)
    t = _kill(p)
    with pytest.raises(mln.OwnerDiedError) as info:
        with sem.read():
            pytest.fail("the block ran although the acquisition raised")
    _recovered("reader after a dead writer", t)
    err = info.value
    assert err.lock is sem and not err.write and err.operation == "read"
    assert "a process had died holding it for write" in str(err) and "'robust'" in str(err)
    assert sem.readers == 1  # held, all the same
    assert "a write holder died" in sem.state()
    err.release()
    with pytest.raises(mln.OwnerDiedError) as info:
        sem.down_read_trylock()  # every acquisition until a writer's
    info.value.release()
    with pytest.raises(mln.OwnerDiedError) as info:
        sem.down_write()  # the writer that must repair
    assert info.value.write and sem.owner == mln.current_task()
    info.value.release()
    assert sem.acquire_write(timeout=0)  # and the indication is gone
    sem.up_write()
    _join([p])
    assert_survivors_take_it(sem)


def test_queued_writer_hears_of_the_dead_writer() -> None:
    sem = mln.RWSemaphore(shared=True)
    p = _start_holder(sem, write=True)
    outcome = CTX.Queue()

    def queued_writer() -> None:
        try:
            sem.down_write()
            outcome.put("acquired")
            sem.up_write()
        except mln.OwnerDiedError as err:
            outcome.put(f"told: {err.operation}")
            err.release()

    w = CTX.Process(target=queued_writer, name="queued-writer")
    w.start()
    wait_queued(sem, 0, 1)
    _kill(p)
    assert outcome.get(timeout=TIMEOUT) == "told: down_write"
    assert _join([p, w])[1] == 0
    assert_survivors_take_it(sem)


def test_read_holder_killed() -> None:
    sem = mln.RWSemaphore(shared=True)
    p = _start_holder(sem, write=False)
    t = _kill(p)
    assert sem.acquire_write(timeout=TIMEOUT)  # readers write nothing: no indication
    _recovered("writer after a dead reader", t)
    sem.up_write()
    _join([p])
    assert_survivors_take_it(sem)


def test_a_live_readers_hold_is_not_reclaimed() -> None:
    sem = mln.RWSemaphore(shared=True)
    live = _start_holder(sem, write=False)
    dead = _start_holder(sem, write=False)
    _kill(dead)
    assert not sem.acquire_write(timeout=0.2)  # past several looks for the dead
    assert sem.readers == 1
    _kill(live)
    assert sem.acquire_write(timeout=TIMEOUT)
    sem.up_write()
    _join([live, dead])
    assert_survivors_take_it(sem)


# -- waiters ---------------------------------------------------------------------------

def _start_waiter(sem: mln.RWSemaphore, write: bool) -> Any:
    p = CTX.Process(target=_queue_for, args=(sem, write, CTX.Event()), name="waiter")
    p.start()
    wait_queued(sem, 0 if write else 1, 1 if write else 0)
    return p


def test_queued_reader_killed() -> None:
    sem = mln.RWSemaphore(shared=True)
    sem.down_write()
    p = _start_waiter(sem, write=False)
    t = _kill(p)
    sem.up_write()  # admits the dead reader
    assert sem.acquire_write(timeout=TIMEOUT)
    _recovered("writer after a dead queued reader", t)
    sem.up_write()
    _join([p])
    assert_survivors_take_it(sem)


def test_queued_writer_killed_before_reserving() -> None:
    """Stopped as soon as it is seen queued, before its 4 ms handoff timer can
    reserve the lock (a round where it did is tried again); then killed.  A
    reader of another process must get in: before, WAITERS stayed set."""
    for _ in range(20):
        sem = mln.RWSemaphore(shared=True)
        sem.down_read()
        p = _start_waiter(sem, write=True)
        os.kill(p.pid, signal.SIGSTOP)
        reserved = "handoff pending" in sem.state()
        t = _kill(p)
        sem.up_read()
        _join([p])
        if reserved:
            continue
        reader = CTX.Process(target=_take_both, args=(sem,), name="reader")
        reader.start()
        assert _join([reader]) == [0]
        _recovered("a reader and a writer after a dead unreserved writer", t)
        assert_survivors_take_it(sem)
        return
    pytest.fail("the writer reserved the lock before every one of 20 stops")


def test_queued_writer_killed_after_reserving() -> None:
    """Killed once it reserved the lock: before, the next release handed it
    the lock and nobody could release it.  It never held it: no indication."""
    sem = mln.RWSemaphore(shared=True)
    sem.down_read()
    p = _start_waiter(sem, write=True)
    wait_handoff_pending(sem, TIMEOUT)
    t = _kill(p)
    sem.up_read()  # hands it to the dead writer
    assert sem.acquire_write(timeout=TIMEOUT)
    _recovered("writer after a dead reserved writer", t)
    sem.up_write()
    _join([p])
    assert_survivors_take_it(sem)


# -- the internal wait lock --------------------------------------------------------------

def _churn(sem: mln.RWSemaphore, started: Any) -> None:
    """Child: every operation of a shared semaphore takes its wait lock."""
    started.set()
    while True:
        with sem.write():
            pass
        with sem.read():
            pass


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _run_a_little(seconds: float) -> None:
    """Busy for ``seconds``, leaving the other core to the sampled child."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _wait_stopped(pid: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while _proc_state(pid) != "T":
        assert time.monotonic() < deadline, f"process {pid} did not stop"


def test_killed_inside_the_wait_lock() -> None:
    """SIGSTOP the churning child until it is caught inside the wait lock (its
    pid in the word), SIGKILL it there; the survivors take the wait lock over
    and roll its section back.  Before, every later call hung."""
    area = mmap.mmap(-1, mmap.PAGESIZE)
    rng = random.Random(os.getpid())
    caught = samples = 0
    while caught < 2 and samples < 5000:
        sem = mln.RWSemaphore(buffer=area, offset=0, name="sampled")
        started = CTX.Event()
        p = CTX.Process(target=_churn, args=(sem, started), name="churn")
        p.start()
        assert started.wait(TIMEOUT)
        inside = False
        while not inside and samples < 5000:
            samples += 1
            os.kill(p.pid, signal.SIGSTOP)
            _wait_stopped(p.pid)
            (word,) = struct.unpack_from("<I", area, WAIT_LOCK_AT)
            inside = word & PID_MASK == p.pid
            if not inside:
                os.kill(p.pid, signal.SIGCONT)
                _run_a_little(rng.uniform(0, 0.002))  # a random next stopping point
        caught += inside
        t = _kill(p)
        _join([p])
        if inside:
            assert _take_both(sem) == "ok", sem.state()
            _recovered("writer and reader after a death inside the wait lock", t)
        assert_survivors_take_it(sem)
        del sem
    assert caught == 2, f"caught inside the wait lock {caught} times in {samples} samples"


# -- across spawned processes, attached to a SharedMemory buffer ------------------------------

def _attached_writer(shm_name: str, offset: int, ready: Any) -> None:
    shm = shared_memory.SharedMemory(name=shm_name)
    sem = mln.RWSemaphore(buffer=shm.buf, offset=offset, attach=True)
    sem.down_write()
    ready.set()
    while True:
        signal.pause()


def test_spawned_writer_killed_attached_survivor_is_told() -> None:
    ctx = mp.get_context("spawn")
    shm = shared_memory.SharedMemory(create=True, size=mmap.PAGESIZE)
    try:
        sem = mln.RWSemaphore(buffer=shm.buf, offset=64, name="placed")
        ready = ctx.Event()
        p = ctx.Process(target=_attached_writer, args=(shm.name, 64, ready), name="attached")
        p.start()
        assert ready.wait(TIMEOUT)
        p.kill()
        with pytest.raises(mln.OwnerDiedError) as info:
            sem.acquire_write(timeout=TIMEOUT)
        assert info.value.write and info.value.operation == "acquire_write"
        info.value.release()
        _join([p])
        assert_survivors_take_it(sem)
        del sem, info
    finally:
        shm.close()
        shm.unlink()


# -- limits ------------------------------------------------------------------------------

def test_more_processes_than_slots_wait_for_one() -> None:
    sem = mln.RWSemaphore(shared=True)
    n = mln.RWSemaphore.SLOTS + 3
    sem.down_write()
    procs = [CTX.Process(target=_take_both, args=(sem,), name=f"p{i}") for i in range(n)]
    for p in procs:
        p.start()
    sem.up_write()
    assert _join(procs) == [0] * n
    assert_free(sem)


def test_non_owner_read_hold_outlives_its_taker() -> None:
    """A non-owner hold is nobody's: its taker's death leaves it, for any
    process to release."""
    sem = mln.RWSemaphore(shared=True)
    p = CTX.Process(target=sem.down_read_non_owner, name="non-owner")
    p.start()
    assert _join([p]) == [0]
    assert sem.readers == 1 and not sem.acquire_write(timeout=0.1)
    with pytest.raises(mln.LockError, match="up_read"):
        sem.up_read()  # not this process's hold
    sem.up_read_non_owner()
    assert_survivors_take_it(sem, 1)


def test_up_read_from_a_process_that_holds_none_is_refused() -> None:
    sem = mln.RWSemaphore(shared=True)
    sem.down_read()

    def release_someone_elses() -> None:
        try:
            sem.up_read()
        except mln.LockError:
            os._exit(0)
        os._exit(1)

    p = CTX.Process(target=release_someone_elses)
    p.start()
    assert _join([p]) == [0]
    assert sem.readers == 1
    sem.up_read()
    assert_free(sem)


