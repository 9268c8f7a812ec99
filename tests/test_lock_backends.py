"""Every lock backend behind the mmap locking API passes the semantic tests
that apply to it: exclusion, sharing (rwlocks), trylocks, downgrade, misuse
errors, assertions, statistics, tracepoints, the sequence count, and the mm
operations on top.  (Kill, timeouts, Ctrl-C while blocked, contention
reports and an atomic downgrade are the rwsem's alone.)"""
from __future__ import annotations

import errno
import signal
import threading
from typing import List

import pytest

import mmap_lock_native as mln
from conftest import TIMEOUT, Worker, call_while_signalled, mm_hold
from mmap_lock_native import bench
from mmap_lock_native.mm import LOCK_BACKENDS

BACKENDS = list(LOCK_BACKENDS)
RW_BACKENDS = [b for b in BACKENDS if b != "mutex"]


@pytest.fixture(params=BACKENDS)
def mm(request):
    m = mln.MM(name=f"backend-{request.param}", lock=request.param)
    yield m
    m.close()


def test_backend_is_reported_and_kept_by_fork(mm):
    """MM.lock_backend names it; a fork's child uses the same."""
    child = mm.fork()
    assert mm.lock_backend == child.lock_backend
    child.close()


def test_write_lock_excludes_other_threads(mm):
    """A writer holding the lock makes other threads' trylocks fail."""
    h = mm_hold(mm, "write")
    try:
        got = Worker(lambda: (mln.mmap_read_trylock(mm), mln.mmap_write_trylock(mm))).begin()
        assert got.finish() == (False, False)
    finally:
        h.done()
    assert mln.mmap_write_trylock(mm)
    mln.mmap_write_unlock(mm)


def test_blocked_writer_gets_in_after_release(mm):
    """A writer blocked behind a holder acquires once it lets go."""
    h = mm_hold(mm, "write")
    entered = threading.Event()

    def writer():
        mln.mmap_write_lock(mm)
        entered.set()
        mln.mmap_write_unlock(mm)

    w = Worker(writer).begin()
    assert not entered.wait(0.05)
    h.done()
    w.finish()
    assert entered.is_set()


@pytest.mark.parametrize("backend", RW_BACKENDS)
def test_readers_share(backend):
    """Read locks are shared (rwlocks; the mutex backend is exclusive by design)."""
    m = mln.MM(lock=backend)
    h = mm_hold(m, "read")
    try:
        assert Worker(lambda: (mln.mmap_read_trylock(m), mln.mmap_read_unlock(m))[0]).begin().finish()
    finally:
        h.done()
    m.close()


def test_downgrade_keeps_a_read_hold(mm):
    """After mmap_write_downgrade the caller holds the lock for read."""
    mln.mmap_write_lock(mm)
    mln.mmap_write_downgrade(mm)
    mln.mmap_assert_locked(mm)
    with pytest.raises(AssertionError):
        mln.mmap_assert_write_locked(mm)
    mln.mmap_read_unlock(mm)
    with pytest.raises(AssertionError):
        mln.mmap_assert_locked(mm)


def test_misuse_is_an_error_not_a_corruption(mm):
    """Releasing what is not held, or relocking one's own write lock, raises."""
    with pytest.raises(mln.LockError):
        mln.mmap_read_unlock(mm)
    with pytest.raises(mln.LockError):
        mln.mmap_write_unlock(mm)
    mln.mmap_write_lock(mm)
    with pytest.raises(mln.LockError):
        mln.mmap_write_lock(mm)
    mln.mmap_write_unlock(mm)
    assert mln.mmap_write_trylock(mm)
    mln.mmap_write_unlock(mm)


def test_statistics_count_every_backend(mm):
    """The same statistics for every backend: acquisitions, trylock failures, downgrades."""
    for _ in range(5):
        mln.mmap_read_lock(mm)
        mln.mmap_read_unlock(mm)
    mln.mmap_write_lock(mm)
    mln.mmap_write_downgrade(mm)
    mln.mmap_read_unlock(mm)
    h = mm_hold(mm, "write")
    try:
        assert Worker(lambda: mln.mmap_read_trylock(mm)).begin().finish() is False
    finally:
        h.done()
    st = mm.lock_stats()
    assert st.read_acquisitions == 5
    assert st.write_acquisitions == 2       # ours, and the holder's
    assert st.read_trylock_failures == 1
    assert st.downgrades == 1


def test_tracepoints_fire_the_same(mm):
    """start_locking, acquire_returned and released fire as for the rwsem."""
    events: List[tuple] = []
    mln.trace.set_hooks(start_locking=lambda m, w: events.append(("S", w)),
                        acquire_returned=lambda m, w, ok: events.append(("A", w, ok)),
                        released=lambda m, w: events.append(("R", w)))
    try:
        mln.mmap_read_lock(mm)
        mln.mmap_read_unlock(mm)
        mln.mmap_write_lock(mm)
        mln.mmap_write_unlock(mm)
    finally:
        mln.trace.clear_hooks()
    assert events == [("S", False), ("A", False, True), ("R", False),
                      ("S", True), ("A", True, True), ("R", True)]


def test_sequence_count(mm):
    """Speculation sees write sections whatever the backend."""
    seq = mln.mmap_lock_speculate_try_begin(mm)
    assert seq is not None
    mln.mmap_write_lock(mm)
    assert mln.mmap_lock_speculate_try_begin(mm) is None
    mln.mmap_write_unlock(mm)
    assert mln.mmap_lock_speculate_retry(mm, seq)


def test_mm_operations_on_every_backend(mm):
    """The mm emulation runs unchanged on each backend."""
    a = mm.mmap(4 * mln.PAGE_SIZE, mln.PROT_READ | mln.PROT_WRITE,
                mln.MAP_PRIVATE | mln.MAP_ANONYMOUS)
    mm.write(a, b"backend")
    mm.munmap(a + mln.PAGE_SIZE, mln.PAGE_SIZE)
    assert mm.read(a, 7) == b"backend"
    with pytest.raises(mln.SegmentationFault):
        mm.fault(a + mln.PAGE_SIZE)


def test_debug_mode_checks_every_backend():
    """The lock-order checker sees each backend's acquisitions."""
    for backend in BACKENDS:
        mln.lockdep_reset()
        m = mln.MM(lock=backend, debug=True)
        mln.mmap_read_lock(m)
        with pytest.raises(mln.LockOrderError):
            mln.mmap_read_lock(m)
        mln.mmap_read_unlock(m)
        m.close()
    mln.lockdep_reset()


def test_unknown_backend_is_refused():
    """MM(lock=...) names the choices when given an unknown one."""
    with pytest.raises(ValueError, match="pthread_rwlock"):
        mln.MM(lock="spinlock")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bench_runs_on_every_backend(backend):
    """The workload runner's counts hold on every backend."""
    r = bench.run_one("mmap1", 2, lock=backend, duration=0.2, warmup=0.05,
                      region_bytes=1 << 20)
    assert r["errors"] == 0 and r["lock"] == backend
    assert r["write_acquisitions"] == 2 * r["ops_all"]


def test_errors_name_the_backend_state(mm):
    """Misuse messages and repr show the state of the lock in use, for every backend."""
    h = mm_hold(mm, "write")
    try:
        with pytest.raises(mln.LockError, match="write-locked by task"):
            mln.mmap_write_unlock(mm)
        assert "write-locked" in repr(mm)
    finally:
        h.done()
    assert "unlocked" in mm.lock_state()


# -- the give-up exits, under contention ------------------------------------------

def _on_start_locking(mm, thread: threading.Thread, event: threading.Event) -> None:
    """Set ``event`` once ``thread`` starts acquiring ``mm`` (it is about to wait)."""
    mln.trace.set_hooks(start_locking=lambda m, w: event.set()
                        if m is mm and threading.current_thread() is thread else None)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_timed_wait_gives_up_under_contention(mm, mode):
    """A timed wait on a write-held lock raises TimeoutError, counts a timeout,
    leaves the holder's lock alone; the lock works afterwards."""
    locked = mln.mmap_read_locked if mode == "read" else mln.mmap_write_locked
    h = mm_hold(mm, "write")
    try:
        with pytest.raises(TimeoutError):
            with locked(mm, timeout=0.1):
                pass
        assert f"write-locked by task {h.task}" in mm.lock_state()
        assert getattr(mm.lock_stats(), f"{mode}_timeouts") == 1
    finally:
        h.done()
    with locked(mm, timeout=TIMEOUT):
        pass
    assert "unlocked" in mm.lock_state()


@pytest.mark.parametrize("mode", ["read", "write"])
def test_killable_wait_returns_eintr_when_killed(mm, mode):
    """A killable wait behind a writer returns -EINTR once its task is killed."""
    fn = getattr(mln, f"mmap_{mode}_lock_killable")
    h = mm_hold(mm, "write")
    waiting = threading.Event()
    victim = Worker(lambda: fn(mm), name="victim")
    _on_start_locking(mm, victim, waiting)
    try:
        victim.begin()
        assert waiting.wait(TIMEOUT)
        mln.task_kill(victim.task)
        try:
            assert victim.finish() == -errno.EINTR
        finally:
            mln.task_revive(victim.task)
    finally:
        mln.trace.clear_hooks()
        h.done()
    assert getattr(mm.lock_stats(), f"{mode}_killable_failures") == 1
    assert "unlocked" in mm.lock_state()


def test_keyboard_interrupt_while_blocked(mm):
    """Ctrl-C while the main thread waits on a backend's lock: KeyboardInterrupt
    propagates, nothing is held, and the lock works afterwards."""
    h = mm_hold(mm, "write")
    main = threading.main_thread()
    waiting, returned = threading.Event(), threading.Event()

    def signaller():
        try:
            assert waiting.wait(TIMEOUT)
            signal.pthread_kill(main.ident, signal.SIGINT)
            assert returned.wait(TIMEOUT), "the main thread did not return"
        except BaseException:
            h.unlock()                  # so that the main thread cannot hang
            raise

    _on_start_locking(mm, main, waiting)
    try:
        caught = call_while_signalled(signal.SIGINT, signal.default_int_handler, signaller,
                                      lambda: mln.mmap_read_lock(mm), returned)
    finally:
        mln.trace.clear_hooks()
    assert isinstance(caught, KeyboardInterrupt), caught
    assert f"write-locked by task {h.task}" in mm.lock_state()
    h.done()
    assert "unlocked" in mm.lock_state()
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
