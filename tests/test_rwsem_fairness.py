"""Writer preference, batched readers, and bounded waits both ways."""
from __future__ import annotations

import threading
import time

import pytest

import mmap_lock_native as mln
from conftest import (TIMEOUT, Worker, assert_free, hold, queue_up, wait_handoff_pending,
                      wait_queued)

#: A waiter's wait while others hammer the lock must stay below this (the
#: kernel hands off after ~4 ms; the rest is slack for the GIL and a noisy box).
WAIT_BOUND = 0.5


def test_queued_writer_blocks_new_readers():
    """Read-held lock, writer queued: a reader arriving later waits (it does
    not join the current reader), and gets in after the writer."""
    sem = mln.RWSemaphore(name="fair")
    log = []
    r0 = hold(sem, "read", name="r0")
    w = queue_up(sem, "write", (0, 1), name="w", log=log)
    r1 = queue_up(sem, "read", (1, 1), name="r1", log=log)
    assert sem.readers == 1
    assert not r1.acquired.is_set()
    # Trylocks and zero timeouts fail rather than cut in.
    assert sem.down_read_trylock() is False
    assert sem.acquire_read(timeout=0) is False
    assert sem.queue() == (1, 1)
    r0.unlock()
    w.wait_acquired()
    assert sem.queue() == (1, 0)
    assert not r1.acquired.is_set()
    w.unlock()
    r1.wait_acquired()
    r1.unlock()
    for t in (r0, w, r1):
        t.finish()
    assert log == ["w", "r1"]
    assert_free(sem)


def test_writer_release_admits_every_queued_reader_as_one_batch():
    """Queue r1, w, r2 behind a writer: its release grants r1 and r2 together
    (the second reader does not wait for w), then w follows them."""
    sem = mln.RWSemaphore(name="batch")
    sem.down_write()
    log = []
    barrier = threading.Barrier(2, timeout=TIMEOUT)

    def reader(name):
        sem.down_read()
        log.append(name)
        try:
            barrier.wait()  # both hold it at once, or this times out
        finally:
            sem.up_read()

    r1 = Worker(reader, "r1", name="r1").begin()
    wait_queued(sem, 1, 0, workers=(r1,))
    w = queue_up(sem, "write", (1, 1), name="w", hold=False, log=log)
    r2 = Worker(reader, "r2", name="r2").begin()
    wait_queued(sem, 2, 1, workers=(r2,))
    sem.up_write()
    r1.finish()
    r2.finish()
    w.finish()
    assert sorted(log[:2]) == ["r1", "r2"] and log[2] == "w"
    assert_free(sem)


def test_phases_alternate():
    """Writers w1, w2 and readers queued behind a reader: the last reader's
    release admits one writer; its release admits the queued readers (not the
    second writer); their release admits the second writer."""
    sem = mln.RWSemaphore(name="phases")
    log = []
    sem.down_read()
    w1 = queue_up(sem, "write", (0, 1), name="w1", log=log)
    w2 = queue_up(sem, "write", (0, 2), name="w2", log=log)
    r1 = queue_up(sem, "read", (1, 2), name="r1", log=log)
    r2 = queue_up(sem, "read", (2, 2), name="r2", log=log)
    sem.up_read()
    first = w1 if wait_first(w1, w2) is w1 else w2
    second = w2 if first is w1 else w1
    assert sem.queue() == (2, 1)
    first.unlock()
    r1.wait_acquired()
    r2.wait_acquired()
    assert sem.readers == 2
    assert sem.queue() == (0, 1)
    assert not second.acquired.is_set()
    r1.unlock()
    r2.unlock()
    second.wait_acquired()
    second.unlock()
    for t in (w1, w2, r1, r2):
        t.finish()
    assert log[0] == first.name and sorted(log[1:3]) == ["r1", "r2"] and log[3] == second.name
    assert_free(sem)


def wait_first(a, b):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for t in (a, b):
            if t.acquired.is_set():
                return t
        time.sleep(0.0005)
    pytest.fail("neither writer got the lock")


def test_starved_reader_reserves_against_a_writer():
    """A reader queued behind a writer for more than ~4 ms reserves the lock:
    a writer spinning/trying at the release cannot take it first."""
    sem = mln.RWSemaphore(name="reserve")
    sem.down_write()
    r = queue_up(sem, "read", (1, 0), name="r")
    wait_handoff_pending(sem)
    sem.up_write()
    r.wait_acquired()
    assert sem.handoffs == 1
    r.unlock()
    r.finish()
    assert_free(sem)


def _hammer(sem, mode, stop, stats):
    """Take and release ``sem`` in a tight loop until ``stop``; holding it,
    yield the GIL (sleep(0)) so that holds of different threads overlap."""
    acquire = getattr(sem, f"down_{mode}")
    release = getattr(sem, f"up_{mode}")
    n = 0
    while not stop.is_set():
        acquire()
        stats["max_readers"] = max(stats.get("max_readers", 0), sem.readers)
        time.sleep(0)
        release()
        n += 1
    return n


def _measure(sem, mode, rounds, hammer_mode, hammers=2):
    stop = threading.Event()
    stats = {}
    workers = [Worker(_hammer, sem, hammer_mode, stop, stats, name=f"{hammer_mode}-hammer{i}")
               for i in range(hammers)]
    for w in workers:
        w.begin()
    acquire = getattr(sem, f"down_{mode}")
    release = getattr(sem, f"up_{mode}")
    waits = []

    def measure():
        time.sleep(0.05)  # let the hammers get going
        for _ in range(rounds):
            t0 = time.perf_counter()
            acquire()
            waits.append(time.perf_counter() - t0)
            release()
            time.sleep(0.002)  # let the hammers take it again

    try:
        Worker(measure, name=f"{mode}-measurer").begin().finish(3 * TIMEOUT)
    finally:
        stop.set()
        counts = [w.finish() for w in workers]
    return waits, counts, stats


def test_writer_wait_is_bounded_while_readers_hammer():
    sem = mln.RWSemaphore(name="readers-hammer")
    waits, counts, stats = _measure(sem, "write", 40, "read")
    assert min(counts) > 40, counts  # the readers really kept at it
    assert stats["max_readers"] >= 2, stats  # and their holds overlapped
    assert max(waits) < WAIT_BOUND, sorted(waits)[-5:]
    assert_free(sem)


def test_reader_wait_is_bounded_while_writers_hammer():
    sem = mln.RWSemaphore(name="writers-hammer")
    waits, counts, _ = _measure(sem, "read", 40, "write")
    assert min(counts) > 40, counts
    assert max(waits) < WAIT_BOUND, sorted(waits)[-5:]
    assert_free(sem)


def test_writers_take_turns_while_writers_hammer():
    sem = mln.RWSemaphore(name="writers-hammer")
    waits, counts, _ = _measure(sem, "write", 40, "write")
    assert min(counts) > 40, counts
    assert max(waits) < WAIT_BOUND, sorted(waits)[-5:]
    assert_free(sem)
