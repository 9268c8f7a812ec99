"""The mm emulation under concurrency: faults, reads, writes and
get_user_pages racing munmap / MAP_FIXED re-mmap and mprotect of the same
ranges; many threads faulting one page (exactly one page installed); faults
on different pages running in parallel; pins held across a concurrent
munmap; fork's copy-on-write snapshot taken while writers run.

Every thread is a conftest Worker started behind a barrier, every loop is
bounded, and every join is bounded."""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any, Dict, List, Tuple

import pytest

import mmap_lock_native as mln
from conftest import TIMEOUT, Worker

P = mln.PAGE_SIZE
RW = mln.PROT_READ | mln.PROT_WRITE
RO = mln.PROT_READ
NONE = mln.PROT_NONE
PRIV = mln.MAP_PRIVATE | mln.MAP_ANONYMOUS
SHARED = mln.MAP_SHARED | mln.MAP_ANONYMOUS
FIXED = mln.MAP_FIXED
X = 0x10000000          # where the contested ranges go

# The whole module runs once per lock design (conftest.every_design).
pytestmark = pytest.mark.usefixtures("every_design")


def start_all(workers: List[Worker]) -> None:
    for w in workers:
        w.begin()


def finish_all(workers: List[Worker], timeout: float = 3 * TIMEOUT) -> List[Any]:
    deadline = time.monotonic() + timeout
    return [w.finish(max(0.1, deadline - time.monotonic())) for w in workers]


# -- faults against munmap / re-mmap / mprotect -------------------------------------------------------

UNMAP_PAGES = range(0, 4)      # private: unmapped and re-mapped (MAP_FIXED), never mprotected
PROT_PAGES = range(4, 8)       # shared: mprotected RW / RO / NONE, never unmapped
NTHREADS = 3
MUTATIONS = 500


def test_accesses_racing_munmap_remap_and_mprotect_fail_only_as_they_may():
    mm = mln.MM(name="race")
    mm.mmap(4 * P, RW, PRIV | FIXED, X)
    mm.mmap(4 * P, RW, SHARED | FIXED, X + 4 * P)
    barrier = threading.Barrier(NTHREADS + 2, timeout=TIMEOUT)
    stop = threading.Event()

    def accessor(tid: int) -> Tuple[Counter, List[str], Dict[int, bytes]]:
        rng = random.Random(tid)
        stats: Counter = Counter()
        bad: List[str] = []
        last: Dict[int, bytes] = {}          # protect-zone page -> this thread's last stamp
        barrier.wait()
        i = 0
        while (not stop.is_set() or i < 300) and i < 50000:
            i += 1
            unmap_zone = rng.random() < 0.5
            page = rng.choice(UNMAP_PAGES if unmap_zone else PROT_PAGES)
            op = rng.choice(["fault", "fault_w", "read", "read2", "write", "gup"])
            base = X + page * P
            stamp = f"t{tid}p{page}i{i:07d}".encode().ljust(32, b".")
            addr, n, write = base + rng.randrange(P), 1, op in ("fault_w", "write")
            try:
                if op in ("fault", "fault_w"):
                    mm.fault(addr, write)
                elif op == "read":
                    mm.read(addr, 1)
                elif op == "read2":
                    # Two pages of the same zone (the second may be the zone's first).
                    addr, n = base + P - 100, 200
                    if page in (UNMAP_PAGES[-1], PROT_PAGES[-1]):
                        addr = base - P + P - 100
                    mm.read(addr, n)
                elif op == "write":
                    addr, n = base + 32 * tid, 32     # this thread's slot in the page
                    mm.write(addr, stamp)
                    if not unmap_zone:
                        last[page] = stamp
                else:
                    addr = base
                    mm.get_user_pages(addr, 1).unpin()
                stats["ok"] += 1
            except mln.SegmentationFault as e:
                zone_code = mln.SEGV_MAPERR if unmap_zone else mln.SEGV_ACCERR
                where_ok = (e.addr == addr if n == 1 else
                            addr <= e.addr < addr + n and (e.addr == addr or e.addr % P == 0))
                if e.si_code != zone_code or not where_ok or e.write != write:
                    bad.append(f"{op} at {addr:#x}+{n}: {e} (si_code {e.si_code})")
                stats["maperr" if e.si_code == mln.SEGV_MAPERR else "accerr"] += 1
            except BaseException as e:  # noqa: B902 - anything else is a failure
                bad.append(f"{op} at {addr:#x}: {e!r}")
        stats["iterations"] = i
        return stats, bad, last

    def unmapper() -> int:
        rng = random.Random(100)
        barrier.wait()
        for _ in range(MUTATIONS):
            page = rng.choice(UNMAP_PAGES)
            npages = rng.randint(1, len(UNMAP_PAGES) - page)
            mm.munmap(X + page * P, npages * P)
            time.sleep(0.0002)
            mm.mmap(npages * P, RW, PRIV | FIXED, X + page * P)
            time.sleep(0.0001)
        return MUTATIONS

    def protector() -> int:
        rng = random.Random(200)
        barrier.wait()
        for _ in range(MUTATIONS):
            page = rng.choice(PROT_PAGES)
            npages = rng.randint(1, PROT_PAGES[-1] + 1 - page)
            mm.mprotect(X + page * P, npages * P, rng.choice([RW, RW, RO, NONE]))
            time.sleep(0.0002)
        return MUTATIONS

    accessors = [Worker(accessor, t, name=f"accessor{t}") for t in range(NTHREADS)]
    mutators = [Worker(unmapper, name="unmapper"), Worker(protector, name="protector")]
    start_all(accessors + mutators)
    try:
        finish_all(mutators)
    finally:
        stop.set()
    results = finish_all(accessors)

    total: Counter = Counter()
    for stats, bad, _ in results:
        assert bad == [], bad[:10]
        total.update(stats)
    # Both kinds of refusal happened, and most accesses succeeded (counts in the message).
    assert total["ok"] > total["maperr"] > 0 and total["accerr"] > 0, dict(total)

    # The end state: the unmap zone one private VMA again, the protect zone
    # all shared pieces of one backing, contiguous, offsets in order.
    mm.mprotect(X + 4 * P, 4 * P, RW)
    maps = mm.maps()
    assert (maps[0].start, maps[0].end, maps[0].prot, maps[0].flags) == (X, X + 4 * P, RW,
                                                                         mln.MAP_PRIVATE)
    at = X + 4 * P
    for v in maps[1:]:
        assert (v.start, v.prot, v.flags, v.pgoff) == (at, RW, mln.MAP_SHARED, (at - X) // P - 4)
        at = v.end
    assert at == X + 8 * P
    # Each thread's last successful stamp in each protect-zone page is there.
    for tid, (_, _, last) in enumerate(results):
        for page, stamp in last.items():
            assert mm.read(X + page * P + 32 * tid, 32) == stamp, (tid, page)
    mm.close()


# -- one page, many faulting threads ------------------------------------------------------------------

@pytest.mark.parametrize("flags", [PRIV, SHARED], ids=["private", "shared"])
def test_concurrent_faults_on_one_page_install_exactly_one(flags):
    """Rounds of N threads racing to fault the same fresh page (read or write
    faults, get_user_pages, or a write of the thread's own byte): one page per
    round, every thread's byte in it, every pin on that same page."""
    nthreads, rounds = 6, 40
    mm = mln.MM(name="one-page")
    a = mm.mmap(rounds * P, RW, flags)
    barriers = [threading.Barrier(nthreads, timeout=TIMEOUT) for _ in range(rounds)]
    pins: List[List[Any]] = [[] for _ in range(rounds)]
    lock = threading.Lock()

    def racer(tid: int) -> int:
        for r in range(rounds):
            page = a + r * P
            barriers[r].wait()
            kind = (tid + r) % 3
            if kind == 0:
                mm.fault(page + tid, bool(r % 2))
            elif kind == 1:
                pinned = mm.get_user_pages(page, 1, write=bool(r % 2))
                with lock:
                    pins[r].append(pinned)
            mm.write(page + 64 + tid, bytes([tid + 1]))
        return rounds

    workers = [Worker(racer, t, name=f"racer{t}") for t in range(nthreads)]
    start_all(workers)
    assert finish_all(workers) == [rounds] * nthreads
    try:
        assert mm.nr_pages() == rounds
        expect = bytes(range(1, nthreads + 1))
        for r in range(rounds):
            page = a + r * P
            assert mm.read(page + 64, nthreads) == expect, r
            mm.write(page, b"first")
            for pinned in pins[r]:
                # A pin of a loser page would not see the writes.
                assert bytes(pinned.pages[0][:5]) == b"first", r
                assert bytes(pinned.pages[0][64:64 + nthreads]) == expect, r
    finally:
        for lst in pins:
            for pinned in lst:
                pinned.unpin()
    assert mm.nr_pages() == rounds
    mm.close()


def test_faults_on_different_pages_fill_the_range():
    nthreads, per = 4, 64
    mm = mln.MM(name="many-pages")
    a = mm.mmap(nthreads * per * P, RW, PRIV)
    barrier = threading.Barrier(nthreads, timeout=TIMEOUT)

    def filler(tid: int) -> int:
        barrier.wait()
        for k in range(per):
            page = a + (k * nthreads + tid) * P     # interleaved: neighbours race on leaves
            mm.write(page, f"{tid}:{k}".encode())
        return per

    workers = [Worker(filler, t, name=f"filler{t}") for t in range(nthreads)]
    start_all(workers)
    finish_all(workers)
    assert mm.nr_pages() == nthreads * per
    for tid in range(nthreads):
        for k in range(per):
            want = f"{tid}:{k}".encode()
            assert mm.read(a + (k * nthreads + tid) * P, len(want)) == want
    mm.close()


def test_faults_on_different_pages_run_in_parallel():
    """Two copy-on-write breaks on different pages are inside the notifier at
    the same time: both faults hold the read lock at once. (Serialised faults
    would leave the barrier waiting for its second party.)"""
    mm = mln.MM(name="parallel")
    if mm.lock_backend == "mutex":
        mm.close()
        pytest.skip("the mutex design serialises readers: that is what it is for")
    a = mm.mmap(2 * P, RW, PRIV)
    mm.write(a, b"x")
    mm.write(a + P, b"y")
    child = mm.fork()                             # both pages copy-on-write now
    readers_seen: List[int] = []
    # The action runs once both are inside, before either leaves.
    both_inside = threading.Barrier(2, timeout=TIMEOUT,
                                    action=lambda: readers_seen.append(mm.lock_holders()[1]))

    class Rendezvous:
        def invalidate_range_start(self, start: int, end: int) -> None:
            if end - start == P:                  # the COW breaks (not the close at the end)
                both_inside.wait()                # BrokenBarrierError if alone

    mm.register_notifier(Rendezvous())
    start = threading.Barrier(2, timeout=TIMEOUT)

    def cow(addr: int, data: bytes) -> None:
        start.wait()
        mm.write(addr, data)

    workers = [Worker(cow, a, b"X", name="cow0"), Worker(cow, a + P, b"Y", name="cow1")]
    start_all(workers)
    finish_all(workers)
    assert readers_seen == [2]
    assert mm.read(a, 1) + mm.read(a + P, 1) == b"XY"
    assert child.read(a, 1) + child.read(a + P, 1) == b"xy"
    child.close()
    mm.close()


# -- pins across munmap ---------------------------------------------------------------------------

def test_pins_stay_readable_across_concurrent_munmap():
    """A thread pins the range, fills the pinned pages through the pins and
    keeps checking them while another thread unmaps and re-maps the range
    (each pin is held across at least one whole munmap + mmap): the pinned
    memory is never freed, reused or zeroed under the pin."""
    mm = mln.MM(name="pins")
    npages, rounds = 4, 40
    a = mm.mmap(npages * P, RW, SHARED | FIXED, X)
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    done = threading.Event()
    remaps = [0]
    state: Dict[str, Any] = {}

    def pinner() -> Counter:
        stats: Counter = Counter()
        barrier.wait()
        try:
            while stats["rounds"] < rounds and stats["attempts"] < 20000:
                stats["attempts"] += 1
                pattern = bytes([stats["rounds"] % 251 + 1]) * P
                try:
                    pinned = mm.get_user_pages(a, npages, write=True)
                except mln.SegmentationFault as e:
                    assert e.si_code == mln.SEGV_MAPERR  # between munmap and mmap
                    stats["maperr"] += 1
                    time.sleep(0.0001)
                    continue
                try:
                    for p in pinned.pages:
                        p[:] = pattern                    # only this thread writes them
                    seen = remaps[0]
                    deadline = time.monotonic() + TIMEOUT
                    while remaps[0] < seen + 2 and time.monotonic() < deadline:
                        for p in pinned.pages:
                            if bytes(p) != pattern:
                                state["bad"] = (stats["rounds"], bytes(p[:8]))
                        stats["checks"] += 1
                        time.sleep(0.0001)
                    if remaps[0] < seen + 2:
                        state["stalled"] = remaps[0]
                        break
                finally:
                    pinned.unpin()
                stats["rounds"] += 1
        finally:
            done.set()
        return stats

    def unmapper() -> int:
        barrier.wait()
        while not done.is_set() and remaps[0] < 100000:
            mm.munmap(a, npages * P)
            mm.mmap(npages * P, RW, SHARED | FIXED, a)
            remaps[0] += 1
            time.sleep(0.0001)
        return remaps[0]

    workers = [Worker(pinner, name="pinner"), Worker(unmapper, name="unmapper")]
    start_all(workers)
    stats, _ = finish_all(workers)
    assert state == {}, state
    assert stats["rounds"] == rounds, dict(stats)
    assert mm.nr_pages() <= npages
    mm.close()


def test_pins_taken_before_munmap_outlive_it_and_the_mm():
    mm = mln.MM(name="pins2")
    a = mm.mmap(2 * P, RW, PRIV)
    mm.write(a, b"A" * P + b"B" * P)
    pinned = mm.get_user_pages(a, 2)
    done = Worker(mm.munmap, a, 2 * P, name="munmap").begin()
    done.finish(TIMEOUT)
    mm.close()
    try:
        assert bytes(pinned.pages[0]) == b"A" * P and bytes(pinned.pages[1]) == b"B" * P
    finally:
        pinned.unpin()


def test_dontneed_racing_writers_never_tears_a_slot():
    """MADV_DONTNEED (read lock) racing writes (read lock) to the same private
    pages: a write may be dropped with its page, but what stays in a slot is
    zero or one whole stamp its writer wrote, and the zapped pages come back."""
    nthreads, npages = 3, 4
    mm = mln.MM(name="dontneed")
    a = mm.mmap(npages * P, RW, PRIV)
    barrier = threading.Barrier(nthreads + 1, timeout=TIMEOUT)
    stop = threading.Event()

    def writer(tid: int) -> set:
        written = set()
        barrier.wait()
        i = 0
        while (not stop.is_set() or i < 200) and i < 50000:
            i += 1
            stamp = f"w{tid}-{i:08d}".encode().ljust(64, b"#")
            mm.write(a + (i % npages) * P + 64 * tid, stamp)
            written.add(stamp)
        return written

    def zapper() -> int:
        barrier.wait()
        for k in range(300):
            mm.madvise(a + (k % npages) * P, P, mln.MADV_DONTNEED)
            time.sleep(0.0001)
        return 300

    writers = [Worker(writer, t, name=f"writer{t}") for t in range(nthreads)]
    z = Worker(zapper, name="zapper")
    start_all(writers + [z])
    try:
        z.finish(3 * TIMEOUT)
    finally:
        stop.set()
    stamps = finish_all(writers)
    for tid in range(nthreads):
        for page in range(npages):
            slot = mm.read(a + page * P + 64 * tid, 64)
            assert slot == bytes(64) or slot in stamps[tid], (tid, page, slot)
    assert mm.nr_pages() <= npages
    mm.close()


# -- fork while writers run ----------------------------------------------------------------------------

def test_fork_snapshots_are_consistent_and_isolated_while_writers_run():
    """Writers fill their own private page with one byte value per write; the
    forks taken meanwhile see every page whole (a write is never half in a
    snapshot) and keep that snapshot while the writers go on."""
    nwriters, nforks = 3, 15
    mm = mln.MM(name="fork-race")
    a = mm.mmap((nwriters + 1) * P, RW, PRIV)
    s = mm.mmap(P, RW, SHARED)
    stop = threading.Event()
    barrier = threading.Barrier(nwriters + 1, timeout=TIMEOUT)

    def writer(tid: int) -> int:
        barrier.wait()
        v = 0
        while not stop.is_set() and v < 100000:
            v += 1
            mm.write(a + tid * P, bytes([v % 256]) * P)
            mm.write(s + 8 * tid, v.to_bytes(8, "little"))
        return v

    workers = [Worker(writer, t, name=f"writer{t}") for t in range(nwriters)]
    start_all(workers)
    snapshots = []
    try:
        barrier.wait()
        for _ in range(nforks):
            child = mm.fork()
            pages = [child.read(a + t * P, P) for t in range(nwriters)]
            for t, page in enumerate(pages):
                assert page == page[:1] * P, f"torn page {t} in a fork"
            snapshots.append((child, pages))
            time.sleep(0.002)
    finally:
        stop.set()
    counts = finish_all(workers)
    assert all(c > 0 for c in counts)
    final = [mm.read(a + t * P, P) for t in range(nwriters)]
    counters = [int.from_bytes(mm.read(s + 8 * t, 8), "little") for t in range(nwriters)]
    assert counters == counts
    for child, pages in snapshots:
        # Private: frozen at the fork.  Shared: the writers' latest values.
        assert [child.read(a + t * P, P) for t in range(nwriters)] == pages
        assert [int.from_bytes(child.read(s + 8 * t, 8), "little")
                for t in range(nwriters)] == counters
        child.close()
    assert [mm.read(a + t * P, P) for t in range(nwriters)] == final
    mm.close()
