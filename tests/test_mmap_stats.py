"""Per-mm lock statistics (``mm.lock_stats()``): exact counters for counted
workloads, contended waits and their histogram, reset, enable/disable, hold
sampling, text rendering, many threads (the overflow block) and handoffs."""
from __future__ import annotations

import errno
import re
import threading

import pytest

import mmap_lock_native as mln
from mmap_lock_native.stats import HIST_BUCKETS
from conftest import (TIMEOUT, Worker, assert_free, lock_cycles, mm_hold, mm_queue,
                      wait_handoff_pending, wait_until)

COUNTERS = ("read_acquisitions", "write_acquisitions", "read_contended", "write_contended",
            "read_trylock_failures", "write_trylock_failures", "read_killable_failures",
            "write_killable_failures", "read_timeouts", "write_timeouts", "downgrades",
            "handoffs", "max_wait_ns", "read_wait_ns_total", "write_wait_ns_total",
            "read_hold_ns_total", "write_hold_ns_total", "read_hold_samples",
            "write_hold_samples")


# -- helpers -----------------------------------------------------------------------------

def contended_write(mm: mln.MM, *, until_handoff: bool = False) -> None:
    """A writer thread queues behind this thread's read hold, which is then
    released (with ``until_handoff``, once the writer has reserved the lock);
    the writer takes the write lock and releases it."""
    mln.mmap_read_lock(mm)
    w = mm_queue(mm, "write", (0, 1), name="writer")
    if until_handoff:
        wait_handoff_pending(mm.mmap_lock)
    mln.mmap_read_unlock(mm)
    w.wait_acquired()
    w.done()


def assert_all_zero(stats: mln.LockStats, *, but: "tuple[str, ...]" = ()) -> None:
    for name in COUNTERS:
        if name not in but:
            assert getattr(stats, name) == 0, (name, stats)
    for mode in ("read", "write"):
        assert stats.wait_histogram[mode] == [0] * HIST_BUCKETS, mode
        assert stats.hold_histogram[mode] == [0] * HIST_BUCKETS, mode


def bucket_of(ns: int) -> int:
    """The log2 bucket of ``ns`` (bucket 0: [0, 2) ns)."""
    return 0 if ns < 2 else min(ns.bit_length() - 1, HIST_BUCKETS - 1)


@pytest.fixture
def mm():
    return mln.MM(name="stats", debug=False)


# -- counted workloads ---------------------------------------------------------------------

def test_fresh_mm_has_zero_statistics(mm):
    """A new mm's snapshot is all zero, enabled, sampling 1 in 64."""
    stats = mm.lock_stats()
    assert isinstance(stats, mln.LockStats)
    assert_all_zero(stats)
    assert stats.enabled is True
    assert stats.hold_sampling_period == 64
    assert stats.trylock_failures == 0 and stats.killable_failures == 0


def test_counted_workload_gives_exact_counters(mm):
    """N read pairs, M write pairs, K failed trylocks per mode, D downgrades and kills give exactly those counts."""
    N, M, K, D, KILLS = 37, 23, 5, 7, 3
    lock_cycles(mm, "read", N)
    lock_cycles(mm, "write", M)
    lock_cycles(mm, "downgrade", D)
    holder = mm_hold(mm, "write")           # one more write acquisition, in its thread
    for _ in range(K):
        assert mln.mmap_read_trylock(mm) is False
        assert mln.mmap_write_trylock(mm) is False
        assert mln.mmap_read_trylock_non_owner(mm) is False
    me = mln.current_task()
    mln.task_kill(me)
    try:
        for _ in range(KILLS):
            assert mln.mmap_read_lock_killable(mm) == -errno.EINTR
            assert mln.mmap_write_lock_killable(mm) == -errno.EINTR
        assert mln.mmap_write_lock_killable(mm) == -errno.EINTR
    finally:
        mln.task_revive(me)
    holder.done()

    s = mm.lock_stats()
    assert s.read_acquisitions == N                 # a downgrade is not a read acquisition
    assert s.write_acquisitions == M + D + 1
    assert s.read_trylock_failures == 2 * K         # non-owner trylocks are read trylocks
    assert s.write_trylock_failures == K
    assert s.trylock_failures == 3 * K
    assert s.downgrades == D
    assert s.read_killable_failures == KILLS
    assert s.write_killable_failures == KILLS + 1
    assert s.killable_failures == 2 * KILLS + 1
    assert s.read_contended == 0 and s.write_contended == 0
    assert s.read_timeouts == 0 and s.write_timeouts == 0
    assert s.wait_histogram["read"] == [0] * HIST_BUCKETS
    assert s.wait_histogram["write"] == [0] * HIST_BUCKETS
    assert s.handoffs == 0
    assert_free(mm.mmap_lock)


def test_every_acquiring_call_counts_once(mm):
    """Killable, nested, trylock, non-owner and context-manager acquisitions each count one acquisition of their mode."""
    assert mln.mmap_read_lock_killable(mm) == 0
    mln.mmap_read_unlock(mm)
    assert mln.mmap_read_trylock(mm)
    mln.mmap_read_unlock(mm)
    assert mln.mmap_read_trylock_non_owner(mm)
    mln.mmap_read_unlock_non_owner(mm)
    with mln.mmap_read_locked(mm):
        pass
    with mln.mmap_read_locked(mm, timeout=1.0):
        pass
    assert mln.mmap_write_lock_killable(mm) == 0
    mln.mmap_write_unlock(mm)
    mln.mmap_write_lock_nested(mm, 1)
    mln.mmap_write_unlock(mm)
    assert mln.mmap_write_trylock(mm)
    mln.mmap_write_unlock(mm)
    with mln.mmap_write_locked(mm):
        pass
    s = mm.lock_stats()
    assert s.read_acquisitions == 5
    assert s.write_acquisitions == 4
    assert s.trylock_failures == 0 and s.downgrades == 0


def test_direct_semaphore_use_is_not_counted(mm):
    """mm.mmap_lock used directly bypasses the statistics, as down_read(&mm->mmap_lock) does."""
    sem = mm.mmap_lock
    sem.down_read()
    sem.up_read()
    sem.down_write()
    sem.up_write()
    assert_all_zero(mm.lock_stats())


@pytest.mark.parametrize("mode", ["read", "write"])
def test_timeouts_are_counted(mm, mode):
    """A timed context manager that expires counts one timeout of its mode, no acquisition."""
    holder = mm_hold(mm, "write")
    with pytest.raises(TimeoutError):
        with getattr(mln, f"mmap_{mode}_locked")(mm, timeout=0.02):
            pass
    holder.done()
    s = mm.lock_stats()
    assert getattr(s, f"{mode}_timeouts") == 1
    assert s.read_acquisitions == 0
    assert s.write_acquisitions == 1                # the holder
    assert s.read_contended == 0 and s.write_contended == 0
    assert s.max_wait_ns >= 10_000_000              # it waited (most of) its 20 ms timeout


# -- contended waits ---------------------------------------------------------------------

def test_contended_writer_counts_one_wait_sample(mm):
    """A writer made to wait behind a reader counts write_contended == 1 and one histogram sample in its log2 bucket."""
    contended_write(mm)
    s = mm.lock_stats()
    assert s.read_acquisitions == 1 and s.write_acquisitions == 1
    assert s.read_contended == 0
    assert s.write_contended == 1
    wait_ns = s.write_wait_ns_total
    assert wait_ns > 0
    hist = s.wait_histogram["write"]
    assert sum(hist) == 1
    k = hist.index(1)
    assert k == bucket_of(wait_ns)
    assert (1 << k if k else 0) <= wait_ns < (1 << (k + 1)) or k == HIST_BUCKETS - 1
    assert s.wait_histogram["read"] == [0] * HIST_BUCKETS
    assert s.read_wait_ns_total == 0
    assert s.max_wait_ns >= wait_ns
    assert_free(mm.mmap_lock)


def test_contended_readers_count_per_mode(mm):
    """Two readers waiting behind a writer count read_contended == 2 and two read wait samples."""
    mln.mmap_write_lock(mm)
    rs = [mm_queue(mm, "read", (i + 1, 0), name=f"r{i}") for i in range(2)]
    mln.mmap_write_unlock(mm)
    for r in rs:
        r.wait_acquired()
    for r in rs:
        r.done()
    s = mm.lock_stats()
    assert s.read_contended == 2 and s.read_acquisitions == 2
    assert s.write_contended == 0 and s.write_acquisitions == 1
    assert sum(s.wait_histogram["read"]) == 2
    assert s.max_wait_ns >= s.read_wait_ns_total // 2
    assert s.max_wait_ns <= s.read_wait_ns_total


def test_as_dict_keys(mm):
    """as_dict has flat keys for every figure, including the contract's and the histograms."""
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
    d = mm.lock_stats().as_dict()
    for key in ("read_acquisitions", "write_acquisitions", "read_contended", "write_contended",
                "trylock_failures", "downgrades", "max_wait_ns", "killable_failures",
                "handoffs"):
        assert key in d, key
        assert isinstance(d[key], int), key
    assert d["read_acquisitions"] == 1
    for kind in ("wait", "hold"):
        for mode in ("read", "write"):
            hist = d[f"{kind}_hist_{mode}"]
            assert isinstance(hist, list) and len(hist) == HIST_BUCKETS
    assert HIST_BUCKETS == mln.stats.HIST_BUCKETS == 40


# -- reset, enable, sampling ---------------------------------------------------------------

def test_reset_zeroes_everything_and_counting_resumes(mm):
    """reset() zeroes every counter, histogram and max_wait_ns; later calls count from zero."""
    mm.set_hold_sampling(1)
    contended_write(mm)
    lock_cycles(mm, "downgrade")
    before = mm.lock_stats()
    assert before.max_wait_ns > 0 and before.write_contended == 1 and before.downgrades == 1
    assert before.read_hold_samples >= 1
    before.reset()
    # The snapshot keeps its values.
    assert before.write_contended == 1
    after = mm.lock_stats()
    assert_all_zero(after)
    assert after.hold_sampling_period == 1          # the setting survives a reset
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
    mln.mmap_write_lock(mm)
    mln.mmap_write_unlock(mm)
    again = mm.lock_stats()
    assert again.read_acquisitions == 1 and again.write_acquisitions == 1
    assert again.read_hold_samples == 1 and again.write_hold_samples == 1
    assert again.write_contended == 0 and again.max_wait_ns == 0
    mm.reset_lock_stats()
    assert_all_zero(mm.lock_stats())


def test_max_wait_restarts_after_reset(mm):
    """After a reset, max_wait_ns reflects only waits since the reset, from the same thread too."""
    for expect_write_contended in (1, 1):
        contended_write(mm)
        s = mm.lock_stats()
        assert s.write_contended == expect_write_contended
        assert s.max_wait_ns == s.write_wait_ns_total
        s.reset()
        assert mm.lock_stats().max_wait_ns == 0


def test_mmap_init_lock_resets_statistics(mm):
    """mmap_init_lock on a free mm resets its statistics."""
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
    assert mm.lock_stats().read_acquisitions == 1
    mln.mmap_init_lock(mm)
    assert_all_zero(mm.lock_stats())


def _workload(mm: mln.MM) -> None:
    """Pairs, a downgrade, failed trylocks and a contended wait."""
    for _ in range(10):
        lock_cycles(mm, "read")
        lock_cycles(mm, "write")
    lock_cycles(mm, "downgrade")
    holder = mm_hold(mm, "write")
    assert not mln.mmap_read_trylock(mm)
    assert not mln.mmap_write_trylock(mm)
    r = mm_queue(mm, "read", (1, 0), name="waiting-reader")
    holder.done()
    r.wait_acquired()
    r.done()


def test_stats_disabled_mm_counts_nothing():
    """MM(stats=False) counts nothing, whatever the workload."""
    mm = mln.MM(stats=False)
    mm.set_hold_sampling(1)
    _workload(mm)
    s = mm.lock_stats()
    assert s.enabled is False
    # (a wait may have lasted long enough for a handoff: that is the next test's subject)
    assert_all_zero(s, but=("handoffs",))
    assert "statistics are off" in str(s)


def test_stats_disabled_mm_counts_no_handoff():
    """MM(stats=False) reports no handoff either, even when one took place."""
    mm = mln.MM(stats=False)
    contended_write(mm, until_handoff=True)
    assert mm.mmap_lock.handoffs == 1               # it did happen
    assert mm.lock_stats().handoffs == 0


def test_set_lock_stats_toggles(mm):
    """set_lock_stats(False) stops counting, set_lock_stats(True) resumes from the same totals."""
    _workload(mm)
    base = mm.lock_stats()
    assert base.enabled and base.read_acquisitions == 11
    mm.set_lock_stats(False)
    _workload(mm)
    off = mm.lock_stats()
    assert off.enabled is False
    same = {"enabled": True, "handoffs": 0}     # handoffs: see the stats=False tests
    assert off.as_dict() | same == base.as_dict() | same
    mm.set_lock_stats(True)
    _workload(mm)
    on = mm.lock_stats()
    assert on.enabled is True
    assert on.read_acquisitions == 2 * base.read_acquisitions
    assert on.write_acquisitions == 2 * base.write_acquisitions
    assert on.read_contended == 2 * base.read_contended == 2
    assert on.trylock_failures == 2 * base.trylock_failures == 4
    assert on.downgrades == 2


def test_hold_sampling_every_hold(mm):
    """set_hold_sampling(1) times every hold: hold_samples == acquisitions per mode for one thread."""
    mm.set_hold_sampling(1)
    assert mm.lock_stats().hold_sampling_period == 1
    lock_cycles(mm, "read", 50)
    lock_cycles(mm, "write", 30)
    s = mm.lock_stats()
    assert s.read_hold_samples == s.read_acquisitions == 50
    assert s.write_hold_samples == s.write_acquisitions == 30
    assert sum(s.hold_histogram["read"]) == 50
    assert sum(s.hold_histogram["write"]) == 30
    assert s.read_hold_ns_total > 0 and s.write_hold_ns_total > 0


def test_hold_sampling_default_is_one_in_64(mm):
    """By default one hold in 64 is timed: hold_samples == acquisitions // 64 (+-1)."""
    n = 1000
    lock_cycles(mm, "read", n)
    s = mm.lock_stats()
    assert s.hold_sampling_period == 64
    assert s.read_acquisitions == n
    assert abs(s.read_hold_samples - n // 64) <= 1
    assert sum(s.hold_histogram["read"]) == s.read_hold_samples


def test_hold_sampling_other_period(mm):
    """set_hold_sampling(8) times one hold in 8 (+-1)."""
    mm.set_hold_sampling(8)
    lock_cycles(mm, "write", 100)
    s = mm.lock_stats()
    assert s.hold_sampling_period == 8
    assert abs(s.write_hold_samples - 100 // 8) <= 1


@pytest.mark.parametrize("period", [0, 3, 2**21, -1, 6, 2**20 + 1])
def test_hold_sampling_rejects_bad_periods(mm, period):
    """A period that is not a power of two in 1..2**20 raises ValueError and keeps the setting."""
    with pytest.raises(ValueError):
        mm.set_hold_sampling(period)
    assert mm.lock_stats().hold_sampling_period == 64


def test_hold_sampling_accepts_the_bounds(mm):
    """Periods 1 and 2**20 are accepted."""
    mm.set_hold_sampling(1 << 20)
    assert mm.lock_stats().hold_sampling_period == 1 << 20
    mm.set_hold_sampling(1)
    assert mm.lock_stats().hold_sampling_period == 1


def test_refused_release_does_not_disturb_hold_sampling(mm):
    """A release refused as misuse changes no statistic: the hold being sampled is still timed when really released."""
    mm.set_hold_sampling(1)
    mln.mmap_read_lock(mm)
    with pytest.raises(mln.LockError):
        mln.mmap_write_unlock(mm)           # misuse: we hold it for read
    mln.mmap_read_unlock(mm)
    mln.mmap_write_lock(mm)
    other = Worker(lambda: pytest.raises(mln.LockError, mln.mmap_write_unlock, mm)).begin()
    other.finish()                          # misuse by a non-owner thread
    mln.mmap_write_unlock(mm)
    s = mm.lock_stats()
    assert s.read_acquisitions == 1 and s.write_acquisitions == 1
    assert s.read_hold_samples == 1
    assert s.write_hold_samples == 1
    assert sum(s.hold_histogram["read"]) == 1 and sum(s.hold_histogram["write"]) == 1


# -- text ------------------------------------------------------------------------------------

def test_str_draws_histograms_and_counts(mm):
    """str(stats) shows the counts per mode, the histogram bars and the downgrade/handoff line."""
    mm.set_hold_sampling(1)
    lock_cycles(mm, "read", 12)
    lock_cycles(mm, "downgrade", 3)
    contended_write(mm)
    s = mm.lock_stats()
    text = str(s)
    assert "MM 'stats'" in text
    assert " read: 13 acquired, 0 contended" in text
    assert " write: 4 acquired, 1 contended" in text
    assert re.search(r"downgrades 3, handoffs \d+, max wait \S+", text), text
    assert "#" in text                              # bars
    # The write wait histogram: one row, for the writer's bucket, count 1, a full bar.
    write_part = text[text.index(" write: "):]
    wait_part = write_part[write_part.index("wait, contended only"):
                           write_part.index("hold, 1 in 1 sampled")]
    rows = [ln.split() for ln in wait_part.splitlines()[1:] if ln.strip()]
    assert len(rows) == 1, wait_part
    label, count, bar = rows[0]
    assert count == "1" and bar == "#" * 40
    assert label == mln.stats._bucket_label(bucket_of(s.write_wait_ns_total))
    # The read hold histogram (every hold sampled) accounts for all 13 + 3 holds.
    read_part = text[text.index(" read: "):text.index(" write: ")]
    assert "(16 samples)" in read_part, read_part
    assert "LockStats" in repr(s)


# -- many threads ---------------------------------------------------------------------------

def test_many_threads_counts_are_exact():
    """140 threads (more than the 128 private blocks) each doing 100 read pairs give read_acquisitions == 14000 exactly."""
    mm = mln.MM(name="many")
    n_threads, pairs = 140, 100
    # Each thread takes its statistics block with a first pair, then waits
    # until all are alive, so that >128 blocks are in use at once and the
    # rest share the overflow block.
    gate = threading.Barrier(n_threads, timeout=3 * TIMEOUT)

    def body():
        lock_cycles(mm, "read")
        gate.wait()
        lock_cycles(mm, "read", pairs - 1)

    workers = [Worker(body, name=f"t{i}") for i in range(n_threads)]
    for w in workers:
        w.begin()
    for w in workers:
        w.finish(3 * TIMEOUT)
    s = mm.lock_stats()
    assert s.read_acquisitions == n_threads * pairs
    assert s.write_acquisitions == 0
    assert s.read_contended == 0
    assert_free(mm.mmap_lock)


def test_many_threads_mixed_modes_counts_are_exact():
    """140 threads mixing read pairs, write pairs and failing trylocks count exactly, through the overflow block too."""
    mm = mln.MM(name="many-mixed")
    n_threads, pairs = 140, 30
    gate = threading.Barrier(n_threads, timeout=3 * TIMEOUT)

    def body(i):
        lock_cycles(mm, "read")
        gate.wait()
        lock_cycles(mm, "write" if i % 2 else "read", pairs)

    workers = [Worker(body, i, name=f"t{i}") for i in range(n_threads)]
    for w in workers:
        w.begin()
    for w in workers:
        w.finish(3 * TIMEOUT)
    s = mm.lock_stats()
    assert s.read_acquisitions == n_threads + (n_threads // 2) * pairs
    assert s.write_acquisitions == (n_threads // 2) * pairs
    assert s.max_wait_ns >= 0
    assert s.read_contended + s.write_contended == \
        sum(s.wait_histogram["read"]) + sum(s.wait_histogram["write"])
    s.reset()
    assert_all_zero(mm.lock_stats())


# -- handoffs ---------------------------------------------------------------------------------

def test_handoff_counted_after_writer_starves_behind_readers(mm):
    """A writer starved >4 ms behind read holders reserves the lock; the handoff is counted and it gets in before the readers queued behind it."""
    log: list = []
    readers = [mm_hold(mm, "read", name=f"r{i}") for i in range(2)]   # keep it read-held
    w = mm_queue(mm, "write", (0, 1), name="writer", log=log)
    wait_handoff_pending(mm.mmap_lock)
    # Later readers queue behind the reserved lock.
    late = [mm_queue(mm, "read", (i + 1, 1), name=f"late{i}", log=log) for i in range(2)]
    assert mm.lock_stats().handoffs == 0
    for r in readers:
        r.done()
    w.wait_acquired()
    assert log == ["writer"]
    assert mm.lock_stats().handoffs == 1           # counted when the writer got it
    w.done()
    for r in late:
        r.wait_acquired()
    for r in late:
        r.done()
    s = mm.lock_stats()
    # The late readers may have starved long enough for a handoff of their own.
    assert s.handoffs in (1, 2)
    assert s.write_contended == 1
    assert s.max_wait_ns >= 4_000_000               # it waited out the handoff delay
    assert s.read_contended == 2
    s.reset()
    assert mm.lock_stats().handoffs == 0
    assert_free(mm.mmap_lock)


def test_handoff_with_a_reader_stream(mm):
    """A stream of readers passing the read lock among themselves starves a writer; after ~4 ms it reserves the lock and a handoff is counted."""
    stop = threading.Event()
    baton = threading.Lock()
    held = {"n": 0}

    def stream():
        # Two overlapping readers in turn: a new read hold is taken (trylock,
        # which fails once a writer waits) before the previous one is dropped.
        mln.mmap_read_lock(mm)
        mine = 1
        for _ in range(1_000_000):          # bounded
            if stop.is_set():
                break
            if mln.mmap_read_trylock(mm):
                mine += 1
            if mine > 1:
                mln.mmap_read_unlock(mm)
                mine -= 1
            with baton:
                held["n"] += 1
        for _ in range(mine):
            mln.mmap_read_unlock(mm)

    s_thread = Worker(stream, name="stream").begin()
    wait_until(lambda: held["n"] > 10, "the reader stream to run")
    try:
        w = mm_queue(mm, "write", (0, 1), name="writer")
        wait_handoff_pending(mm.mmap_lock)
    finally:
        stop.set()
    s_thread.finish()
    w.wait_acquired()
    w.done()
    s = mm.lock_stats()
    assert s.handoffs == 1
    assert s.write_contended == 1
    assert s.read_trylock_failures >= 1            # the stream was shut out once the writer waited
    assert_free(mm.mmap_lock)
