"""No busy waiting: a thread blocked for a second burns almost no CPU."""
from __future__ import annotations

import os
import time

import pytest

import mmap_lock_native as mln
from mmap_lock_native._ffi import lib
from conftest import Worker, assert_free, hold, queue_up, wait_queued

BLOCKED_FOR = 1.0
#: CPU seconds the blocked thread may use over its whole blocked acquisition
#: (generous: the bounded writer spin is ~20 us, a futex sleep ~0).
CPU_BOUND = 0.05


def _timed(fn):
    """Run ``fn`` in the calling thread; (its result, thread CPU s, wall s)."""
    c0, w0 = time.thread_time(), time.monotonic()
    result = fn()
    return result, time.thread_time() - c0, time.monotonic() - w0


def _read_cm(sem):
    with sem.read():
        pass


SCENARIOS = {
    # name: (holder mode, waiter's acquire-and-release, expected queue while it waits)
    "down_read-behind-writer": ("write", lambda s: (s.down_read(), s.up_read()), (1, 0)),
    "down_write-behind-writer": ("write", lambda s: (s.down_write(), s.up_write()), (0, 1)),
    "down_write-behind-reader": ("read", lambda s: (s.down_write(), s.up_write()), (0, 1)),
    "down_write_killable-behind-reader": ("read", lambda s: (s.down_write_killable(),
                                                             s.up_write()), (0, 1)),
    "read_cm-behind-writer": ("write", _read_cm, (1, 0)),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_blocked_waiter_sleeps(name):
    holder_mode, call, queued = SCENARIOS[name]
    sem = mln.RWSemaphore(name=name)
    holder = hold(sem, holder_mode)
    w = Worker(_timed, lambda: call(sem), name="blocked").begin()
    wait_queued(sem, *queued, workers=(w,))
    time.sleep(BLOCKED_FOR)  # the point of the test: stay blocked this long
    assert not w.finished.is_set()
    holder.unlock()
    _, cpu, wall = w.finish()
    assert wall >= BLOCKED_FOR
    assert cpu < CPU_BOUND, f"{cpu:.4f} s of CPU while blocked for {wall:.2f} s"
    holder.finish()
    assert_free(sem)


def test_reader_behind_queued_writer_sleeps():
    """A reader kept out by a queued writer (the lock only read-held)."""
    sem = mln.RWSemaphore()
    r0 = hold(sem, "read")
    w = queue_up(sem, "write", (0, 1), hold=False)
    blocked = Worker(_timed, lambda: (sem.down_read(), sem.up_read()), name="blocked").begin()
    wait_queued(sem, 1, 1, workers=(blocked,))
    time.sleep(BLOCKED_FOR)
    r0.unlock()
    _, cpu, wall = blocked.finish()
    assert wall >= BLOCKED_FOR
    assert cpu < CPU_BOUND, f"{cpu:.4f} s of CPU while blocked for {wall:.2f} s"
    w.finish()
    r0.finish()
    assert_free(sem)


def test_timed_wait_that_expires_sleeps():
    sem = mln.RWSemaphore()
    holder = hold(sem, "write")
    ok, cpu, wall = Worker(_timed, lambda: sem.acquire_write(timeout=BLOCKED_FOR),
                           name="timed").begin().finish()
    assert ok is False
    assert wall >= BLOCKED_FOR
    assert cpu < CPU_BOUND, f"{cpu:.4f} s of CPU while blocked for {wall:.2f} s"
    holder.unlock()
    holder.finish()
    assert_free(sem)


def _spin_cpus_on_a_thread(cpus: "set[int]") -> int:
    """The spin decision's CPU count on a new thread restricted to ``cpus``
    (os.sched_setaffinity(0, ...) sets the calling thread's mask on Linux)."""
    def probe() -> int:
        os.sched_setaffinity(0, cpus)
        return lib.rwsem_spin_cpus()
    return Worker(probe).begin().finish()


def test_spin_decision_follows_the_affinity_mask():
    """``taskset -c 0`` must not spin on a machine with more CPUs online: the
    count is the thread's affinity mask's, not the online count."""
    allowed = sorted(os.sched_getaffinity(0))
    assert _spin_cpus_on_a_thread({allowed[0]}) == 1
    assert _spin_cpus_on_a_thread(set(allowed)) == len(allowed)


def test_pinned_writer_decides_on_its_mask_when_contended():
    """The count a contended acquisition looks up (and keeps for the thread)
    is the mask's: a writer pinned to one CPU behind a write holder does not
    spin, and still gets the lock when it is freed."""
    sem = mln.RWSemaphore()
    holder = hold(sem, "write")
    cpu0 = {min(os.sched_getaffinity(0))}

    def pinned_writer() -> int:
        os.sched_setaffinity(0, cpu0)
        sem.down_write()          # the first lookup of this thread happens here
        sem.up_write()
        return lib.rwsem_spin_cpus()

    w = Worker(pinned_writer).begin()
    wait_queued(sem, 0, 1, workers=(w,))
    holder.unlock()
    assert w.finish() == 1
    holder.finish()
    assert_free(sem)
