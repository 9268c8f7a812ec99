"""Each mm operation takes the mmap_lock in the mode csrc/mm/mm.h documents, as
the tracepoints show it (start_locking / acquire_returned / released, in
order), as a concurrent holder of the lock feels it (a reader lets readers
through and holds writers back), and as the lock-order checker sees fork's
nested locking of the child.  Every test runs on every lock design; per_vma's
faults and guest accesses take only their VMA's lock, so the mmap lock sees
none of them (their fallbacks aside)."""
from __future__ import annotations

import warnings
from typing import Any, Callable, List, Tuple

import pytest

import mmap_lock_native as mln
from mmap_lock_native._ffi import lib
from conftest import DESIGNS, TIMEOUT, Worker, mm_hold, wait_blocked

P = mln.PAGE_SIZE
RW = mln.PROT_READ | mln.PROT_WRITE
PRIV = mln.MAP_PRIVATE | mln.MAP_ANONYMOUS
SHARED = mln.MAP_SHARED | mln.MAP_ANONYMOUS

W_LOCK = [("S", "w"), ("A", "w", True)]
W_UNLOCK = [("R", "w")]
WRITE = W_LOCK + W_UNLOCK
READ = [("S", "r"), ("A", "r", True), ("R", "r")]
DOWNGRADE = W_LOCK + [("A", "r", True), ("R", "r")]


def _addr(mm: Any) -> int:
    return mm.address if isinstance(mm, mln.MM) else int(mm)


class Events:
    """Tracepoint events of every mm, as (mm address, event...) tuples."""

    def __init__(self) -> None:
        self.log: List[Tuple] = []

    def __enter__(self) -> "Events":
        def mode(write: bool) -> str:
            return "w" if write else "r"
        mln.trace.set_hooks(
            start_locking=lambda mm, w: self.log.append((_addr(mm), "S", mode(w))),
            acquire_returned=lambda mm, w, ok: self.log.append((_addr(mm), "A", mode(w), ok)),
            released=lambda mm, w: self.log.append((_addr(mm), "R", mode(w))))
        return self

    def __exit__(self, *exc: Any) -> None:
        mln.trace.clear_hooks()

    def of(self, mm: mln.MM) -> List[Tuple]:
        return [e[1:] for e in self.log if e[0] == mm.address]

    def take(self, mm: mln.MM) -> List[Tuple]:
        out = self.of(mm)
        self.log.clear()
        return out


def traced(mm: mln.MM, fn: Callable[[], Any]) -> List[Tuple]:
    with Events() as ev:
        fn()
    return ev.of(mm)


@pytest.fixture(params=DESIGNS)
def mm(request):
    m = mln.MM(name="locking", lock=request.param)
    yield m
    mln.trace.clear_hooks()
    m.close()


def lock_mode(mm: mln.MM) -> "str | None":
    """How the mm's lock is held now, whatever the design: "write", "read" or None."""
    if lib.mmap_lock_check_held(mm._mm, 1) == lib.MMAP_CHECK_OK:
        return "write"
    return None if lib.mmap_lock_check_held(mm._mm, 0) == lib.MMAP_CHECK_UNLOCKED else "read"


#: What per_vma does under the VMA's lock alone: faults and guest accesses.
VMA_LOCKED_OPS = {"fault", "fault_write", "read", "write"}


@pytest.fixture
def populated(mm):
    """An mm with a private and a shared mapping (a at BASE-4P, s at BASE-6P), a heap and a page of data."""
    a = mm.mmap(4 * P, RW, PRIV)
    s = mm.mmap(2 * P, RW, SHARED)
    mm.brk(0x555555560000 + P)
    mm.write(a, b"data")
    return mm, a, s


# -- the tracepoints of each operation ---------------------------------------------------------

def test_mmap_takes_the_write_lock(populated):
    mm, a, s = populated
    assert traced(mm, lambda: mm.mmap(P, RW, PRIV)) == WRITE
    assert traced(mm, lambda: mm.mmap(P, RW, PRIV | mln.MAP_FIXED, a)) == WRITE
    # Refused under the lock (EEXIST): still one write hold.
    with Events() as ev:
        with pytest.raises(FileExistsError):
            mm.mmap(P, RW, PRIV | mln.MAP_FIXED_NOREPLACE, a)
    assert ev.of(mm) == WRITE
    # Refused by the argument checks: the lock is not touched.
    with Events() as ev:
        with pytest.raises(OSError):
            mm.mmap(0, RW, PRIV)
    assert ev.of(mm) == []


def test_mprotect_and_brk_take_the_write_lock(populated):
    mm, a, s = populated
    assert traced(mm, lambda: mm.mprotect(a, P, mln.PROT_READ)) == WRITE
    assert traced(mm, lambda: mm.mprotect(a, 0, mln.PROT_READ)) == []   # a no-op before the lock
    with Events() as ev:
        with pytest.raises(OSError):
            mm.mprotect(a, 100 * P, mln.PROT_READ)                      # ENOMEM under the lock
    assert ev.of(mm) == WRITE
    assert traced(mm, lambda: mm.brk(0)) == WRITE
    assert traced(mm, lambda: mm.brk(0x555555560000 + 3 * P)) == WRITE
    assert traced(mm, lambda: mm.brk(0x555555560000)) == WRITE


def test_madvise_fork_advice_takes_the_write_lock_and_populate_the_read_lock(populated):
    """As Linux's madvise_need_mmap_write(): advice changing vm_flags writes,
    advice about pages (dropping, prefaulting, reclaim hints) reads."""
    mm, a, s = populated
    for advice in (mln.MADV_DONTFORK, mln.MADV_DOFORK, mln.MADV_WIPEONFORK,
                   mln.MADV_KEEPONFORK):
        assert traced(mm, lambda: mm.madvise(a + P, P, advice)) == WRITE
    with Events() as ev:
        with pytest.raises(OSError):
            mm.madvise(s, P, mln.MADV_WIPEONFORK)    # EINVAL (shared) under the lock
    assert ev.of(mm) == WRITE
    for advice in (mln.MADV_POPULATE_READ, mln.MADV_POPULATE_WRITE):
        assert traced(mm, lambda: mm.madvise(a, 4 * P, advice)) == READ
    # The hints Linux keeps in vm_flags write; those about pages only read.
    for advice in (mln.MADV_NORMAL, mln.MADV_RANDOM, mln.MADV_SEQUENTIAL, mln.MADV_HUGEPAGE,
                   mln.MADV_NOHUGEPAGE, mln.MADV_DONTDUMP, mln.MADV_DODUMP):
        assert traced(mm, lambda: mm.madvise(a, 4 * P, advice)) == WRITE, advice
    for advice in (mln.MADV_WILLNEED, mln.MADV_COLD, mln.MADV_PAGEOUT, mln.MADV_DONTNEED,
                   mln.MADV_DONTNEED_LOCKED, mln.MADV_FREE):
        assert traced(mm, lambda: mm.madvise(a, 4 * P, advice)) == READ, advice


def test_register_unregister_close_and_limit_take_the_write_lock(mm):
    with Events() as ev:
        h = mm.register_notifier(object())
    assert ev.of(mm) == WRITE
    assert traced(mm, h.unregister) == WRITE
    assert traced(mm, lambda: mm.set_max_map_count(100)) == WRITE
    assert traced(mm, mm.close) == WRITE
    assert traced(mm, mm.close) == []                  # already closed: not even checked under it


def test_munmap_downgrades_to_read_for_the_teardown(populated):
    mm, a, s = populated
    assert traced(mm, lambda: mm.munmap(a + 3 * P, P)) == DOWNGRADE
    assert traced(mm, lambda: mm.munmap(0x300000000, P)) == DOWNGRADE  # nothing there, same path
    with Events() as ev:
        with pytest.raises(OSError):
            mm.munmap(a + 1, P)                        # EINVAL before the lock
    assert ev.of(mm) == []
    mm.set_max_map_count(mm.map_count)
    with Events() as ev:
        with pytest.raises(OSError):
            mm.munmap(a + P, P)                        # ENOMEM (a split) under the write lock
    assert ev.of(mm) == WRITE


def test_brk_shrink_does_not_downgrade(populated):
    mm, a, s = populated
    mm.brk(0x555555560000 + 3 * P)
    assert traced(mm, lambda: mm.brk(0x555555560000 + P)) == WRITE


@pytest.mark.parametrize("op", [
    "fault", "fault_write", "read", "write", "gup", "gup_write", "view", "dontneed", "willneed",
    "maps", "maps_text", "map_count", "brk_value", "segv_fault", "segv_read", "segv_write",
    "segv_gup"])
def test_read_side_operations_take_the_read_lock_once(populated, op):
    mm, a, s = populated
    calls = {
        "fault": lambda: mm.fault(a + 3),
        "fault_write": lambda: mm.fault(s, mln.Access.WRITE),
        "read": lambda: mm.read(a + P - 2, 3 * P),       # several pages: still one acquisition
        "write": lambda: mm.write(s + 10, b"x" * (P + 1)),
        "gup": lambda: mm.get_user_pages(a, 4).unpin(),
        "gup_write": lambda: mm.get_user_pages(s, 2, True).unpin(),
        "view": lambda: mm.view(a + 1, 2 * P).unpin(),
        "dontneed": lambda: mm.madvise(a, 4 * P, mln.MADV_DONTNEED),
        "willneed": lambda: mm.madvise(a, 4 * P, mln.MADV_WILLNEED),
        "maps": mm.maps,
        "maps_text": mm.maps_text,
        "map_count": lambda: mm.map_count,
        "brk_value": lambda: mm.brk_value,
        "segv_fault": lambda: pytest.raises(mln.SegmentationFault, mm.fault, a - 99 * P),
        "segv_read": lambda: pytest.raises(mln.SegmentationFault, mm.read, a + 3 * P, 2 * P),
        "segv_write": lambda: pytest.raises(mln.SegmentationFault, mm.write, a + 4 * P - 1, b"ab"),
        "segv_gup": lambda: pytest.raises(mln.SegmentationFault, mm.get_user_pages, a, 5),
    }
    expected = [] if mm.lock_backend == "per_vma" and op in VMA_LOCKED_OPS else READ
    assert traced(mm, calls[op]) == expected


def test_fork_write_locks_parent_then_child_nested(populated):
    mm, a, s = populated
    with Events() as ev:
        child = mm.fork()
    try:
        parent_addr, child_addr = mm.address, child.address
        log = [e for e in ev.log if e[0] in (parent_addr, child_addr)]
        P_, C_ = parent_addr, child_addr
        assert log == [(P_, "S", "w"), (P_, "A", "w", True),
                       (C_, "S", "w"), (C_, "A", "w", True),
                       (C_, "R", "w"), (P_, "R", "w")]
    finally:
        child.close()


def test_fork_of_a_closed_mm_only_takes_the_parent_lock(mm):
    mm.close()
    with Events() as ev:
        with pytest.raises(OSError):
            mm.fork()
    assert ev.of(mm) == WRITE


def test_notifier_callbacks_run_under_the_lock_in_the_operations_mode(populated):
    mm, a, s = populated
    seen: List[Tuple] = []

    class Probe:
        def invalidate_range_start(self, start: int, end: int) -> None:
            seen.append(("start", lock_mode(mm)))

        def invalidate_range_end(self, start: int, end: int) -> None:
            seen.append(("end", lock_mode(mm)))

        def release(self) -> None:
            seen.append(("release", lock_mode(mm)))

    mm.register_notifier(Probe())
    mm.munmap(a + P, P)          # start under the write lock, end after the downgrade
    assert seen == [("start", "write"), ("end", "read")]
    seen.clear()
    mm.madvise(a, P, mln.MADV_DONTNEED)
    assert seen == [("start", "read"), ("end", "read")]
    seen.clear()
    mm.mprotect(a, P, mln.PROT_READ)
    assert seen == [("start", "write"), ("end", "write")]
    seen.clear()
    mm.write(a + 2 * P, b"x")
    child = mm.fork()
    assert seen and all(m == "write" for _, m in seen)
    seen.clear()
    mm.write(a + 2 * P, b"y")    # COW break: under the read lock (per_vma retries for it)
    assert seen == [("start", "read"), ("end", "read")]
    child.close()
    seen.clear()
    mm.close()
    assert seen[0] == ("release", "write") and all(m == "write" for _, m in seen)


# -- how a concurrent lock holder feels it --------------------------------------------------------

READERS = {
    "fault": lambda mm, a: mm.fault(a, True),
    "read": lambda mm, a: mm.read(a, 10),
    "write": lambda mm, a: mm.write(a, b"x"),
    "gup": lambda mm, a: mm.get_user_pages(a, 1).unpin(),
    "dontneed": lambda mm, a: mm.madvise(a, P, mln.MADV_DONTNEED),
    "populate": lambda mm, a: mm.madvise(a, P, mln.MADV_POPULATE_WRITE),
    "maps": lambda mm, a: mm.maps(),
}
WRITERS = {
    "mmap": lambda mm, a: mm.mmap(P, RW, PRIV),
    "munmap": lambda mm, a: mm.munmap(a, P),
    "mprotect": lambda mm, a: mm.mprotect(a, P, mln.PROT_READ),
    "brk": lambda mm, a: mm.brk(0),
    "dontfork": lambda mm, a: mm.madvise(a, P, mln.MADV_DONTFORK),
    "fork": lambda mm, a: mm.fork().close(),
    "register_notifier": lambda mm, a: mm.register_notifier(object()),
    "close": lambda mm, a: mm.close(),
}


@pytest.mark.parametrize("op", sorted(READERS))
def test_read_side_operations_run_beside_a_reader_and_wait_for_a_writer(mm, op):
    a = mm.mmap(P, RW, PRIV)
    if mm.lock_backend == "mutex":
        pytest.skip("the mutex design excludes readers from each other by definition")
    holder = mm_hold(mm, "read")
    try:
        Worker(READERS[op], mm, a, name=op).begin().finish(TIMEOUT)   # not blocked
    finally:
        holder.done()
    holder = mm_hold(mm, "write")
    try:
        w = Worker(READERS[op], mm, a, name=op).begin()
        if mm.lock_backend == "per_vma" and op in VMA_LOCKED_OPS:
            w.finish(TIMEOUT)   # the writer changes no VMA: the fault needs only its own
        else:
            wait_blocked(mm, w, 1, 0)
    finally:
        holder.done()
    w.finish(TIMEOUT)


@pytest.mark.parametrize("op", sorted(WRITERS))
def test_write_side_operations_wait_for_a_reader(mm, op):
    a = mm.mmap(P, RW, PRIV)
    holder = mm_hold(mm, "read")
    try:
        w = Worker(WRITERS[op], mm, a, name=op).begin()
        wait_blocked(mm, w, 0, 1)
        assert not w.finished.is_set()
    finally:
        holder.done()
    w.finish(TIMEOUT)


# -- fork and the lock-order checker ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["warn", "raise"])
def test_fork_in_debug_mode_reports_no_lock_order_problem(lockdep_clean, mode):
    mln.set_lockdep_mode(mode)
    parent = mln.MM(debug=True, name="dbg-parent")
    a = parent.mmap(2 * P, RW, PRIV)
    parent.write(a, b"x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kids = []
        for i in range(20):
            child = parent.fork()
            assert lib.mln_lockdep_depth() == 0
            assert child.read(a, 1) == b"x"
            grandchild = child.fork()               # the child as a parent in its turn
            mln.mmap_write_lock(grandchild)         # and both fully unlocked afterwards
            mln.mmap_write_unlock(grandchild)
            with mln.mmap_read_locked(child):
                pass
            kids += [child, grandchild]
        # From another thread too, while this one holds nothing.
        Worker(parent.fork, name="forker").begin().finish(TIMEOUT).close()
        for k in kids:
            k.close()
        parent.close()
    bad = [str(w.message) for w in caught if issubclass(w.category, mln.LockOrderWarning)]
    assert bad == []
    assert lib.mln_lockdep_depth() == 0
    assert mln.debug.last_report()[0] == ""


def test_the_checker_would_see_fork_without_nesting(lockdep_clean):
    """The control: two mms of one class locked as fork locks them, but without
    the nesting annotation, are reported, so the clean fork above means something."""
    mln.set_lockdep_mode("warn")
    a, b = mln.MM(debug=True), mln.MM(debug=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mln.mmap_write_lock(a)
        mln.mmap_write_lock(b)
        mln.mmap_write_unlock(b)
        mln.mmap_write_unlock(a)
    assert any(issubclass(w.category, mln.LockOrderWarning) for w in caught)
