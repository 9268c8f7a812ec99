"""The mm emulation's operations one by one: mmap, munmap, mprotect, brk,
madvise, faults, guest memory access, get_user_pages and view(), fork's
copy-on-write, close(), the maps and their /proc/pid/maps text, the errno of
each failure, and the MMU notifier brackets of each operation."""
from __future__ import annotations

import errno
from typing import Any, List, Optional, Tuple

import pytest

import mmap_lock_native as mln
from conftest import TIMEOUT, Worker, mm_hold, wait_blocked

P = mln.PAGE_SIZE
RW = mln.PROT_READ | mln.PROT_WRITE
RO = mln.PROT_READ
RWX = RW | mln.PROT_EXEC
PRIV = mln.MAP_PRIVATE | mln.MAP_ANONYMOUS
SHARED = mln.MAP_SHARED | mln.MAP_ANONYMOUS
FIXED = mln.MAP_FIXED
BASE = 0x7F0000000000          # MM_MMAP_BASE
START_BRK = 0x555555560000     # MM_START_BRK
MIN_ADDR = 65536               # MM_MMAP_MIN_ADDR
TASK = mln.TASK_SIZE

# The whole module runs once per lock design (conftest.every_design).
pytestmark = pytest.mark.usefixtures("every_design")


def layout(mm: mln.MM) -> List[Tuple[int, int, int, int]]:
    """(start, end, prot, MAP_SHARED/MAP_PRIVATE) of each VMA."""
    return [(v.start, v.end, v.prot, v.flags) for v in mm.maps()]


def errno_of(fn: Any, *args: Any) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args)
    return ei.value.errno


def segv(fn: Any, *args: Any) -> mln.SegmentationFault:
    with pytest.raises(mln.SegmentationFault) as ei:
        fn(*args)
    return ei.value


@pytest.fixture
def mm():
    m = mln.MM(name="ops")
    yield m
    m.close()


class Notes:
    """A notifier that logs its calls and checks the lock is held during each."""

    def __init__(self, mm: Optional[mln.MM] = None) -> None:
        self.mm = mm
        self.calls: List[tuple] = []
        self.unlocked: List[tuple] = []

    def _check(self, call: tuple) -> None:
        self.calls.append(call)
        if self.mm is not None and self.mm.lock_holders() == (None, 0):
            self.unlocked.append(call)

    def invalidate_range_start(self, start: int, end: int) -> None:
        self._check(("start", start, end))

    def invalidate_range_end(self, start: int, end: int) -> None:
        self._check(("end", start, end))

    def release(self) -> None:
        self._check(("release",))

    def take(self) -> List[tuple]:
        out, self.calls = self.calls, []
        return out


def assert_paired(calls: List[tuple]) -> None:
    """Every invalidate_range_end closes the latest open start of the same range,
    and none stays open."""
    open_: List[tuple] = []
    for c in calls:
        if c[0] == "start":
            open_.append(c[1:])
        elif c[0] == "end":
            assert open_ and open_[-1] == c[1:], f"unpaired {c} in {calls}"
            open_.pop()
    assert not open_, f"unclosed brackets {open_} in {calls}"


# -- mmap ------------------------------------------------------------------------------------

def test_mmap_places_top_down_below_mmap_base(mm):
    """Without a hint, mappings go top-down right below mmap_base; each is rw-p as asked."""
    a = mm.mmap(2 * P, RW, SHARED)
    assert a == BASE - 2 * P
    b = mm.mmap(3 * P, RO, PRIV)
    assert b == a - 3 * P
    assert layout(mm) == [(b, a, RO, mln.MAP_PRIVATE), (a, BASE, RW, mln.MAP_SHARED)]
    assert mm.map_count == 2


def test_mmap_rounds_length_up_to_pages(mm):
    a = mm.mmap(1, RW, PRIV)
    b = mm.mmap(P + 1, RO, PRIV)
    assert layout(mm) == [(b, b + 2 * P, RO, mln.MAP_PRIVATE), (a, a + P, RW, mln.MAP_PRIVATE)]


def test_mmap_uses_a_free_hint_and_ignores_a_taken_one(mm):
    hint = 0x200000000
    assert mm.mmap(P, RW, PRIV, hint) == hint
    # Taken now: placed top-down instead.
    assert mm.mmap(P, RW, PRIV, hint) == BASE - P
    # A hint below mmap_min_addr is lifted to it (round_hint_to_min), an
    # unaligned one rounded down.
    assert mm.mmap(P, RO, PRIV, 0x1000) == MIN_ADDR
    assert mm.mmap(P, RO, PRIV, 0x300000123) == 0x300000000


def test_mmap_goes_above_mmap_base_when_below_is_full(mm):
    mm.mmap(BASE - MIN_ADDR, mln.PROT_NONE, PRIV | FIXED, MIN_ADDR)
    assert mm.mmap(2 * P, RW, PRIV) == TASK - 2 * P
    assert mm.mmap(P, RW, SHARED) == TASK - 3 * P
    # Everything full: ENOMEM.
    mm.mmap(TASK - BASE - 3 * P, mln.PROT_NONE, PRIV | FIXED, BASE)
    assert errno_of(mm.mmap, P, RW, PRIV) == errno.ENOMEM


def test_map_fixed_replaces_and_zeroes(mm):
    a = mm.mmap(4 * P, RW, PRIV)
    mm.write(a, b"x" * (4 * P))
    assert mm.mmap(2 * P, RW, SHARED | FIXED, a + P) == a + P
    assert layout(mm) == [(a, a + P, RW, mln.MAP_PRIVATE), (a + P, a + 3 * P, RW, mln.MAP_SHARED),
                          (a + 3 * P, a + 4 * P, RW, mln.MAP_PRIVATE)]
    assert mm.read(a, 4 * P) == b"x" * P + bytes(2 * P) + b"x" * P
    # Private again with the same protection: all one VMA again, contents zero in the middle.
    mm.mmap(2 * P, RW, PRIV | FIXED, a + P)
    assert layout(mm) == [(a, a + 4 * P, RW, mln.MAP_PRIVATE)]
    assert mm.read(a + P, 2 * P) == bytes(2 * P)


def test_map_fixed_noreplace(mm):
    a = mm.mmap(2 * P, RW, PRIV)
    assert errno_of(mm.mmap, P, RW, PRIV | mln.MAP_FIXED_NOREPLACE, a + P) == errno.EEXIST
    assert errno_of(mm.mmap, 2 * P, RW, PRIV | mln.MAP_FIXED_NOREPLACE, a - P) == errno.EEXIST
    # Wins over MAP_FIXED when both are given.
    assert errno_of(mm.mmap, P, RW, PRIV | FIXED | mln.MAP_FIXED_NOREPLACE, a) == errno.EEXIST
    assert mm.mmap(P, RW, PRIV | mln.MAP_FIXED_NOREPLACE, a - P) == a - P
    assert layout(mm) == [(a - P, a + 2 * P, RW, mln.MAP_PRIVATE)]


@pytest.mark.parametrize("args,err", [
    ((0, RW, PRIV), errno.EINVAL),                                  # zero length
    ((P, RW, mln.MAP_PRIVATE), errno.EBADF),                        # no MAP_ANONYMOUS
    ((0, RW, mln.MAP_PRIVATE), errno.EBADF),                        # ... checked first
    ((P, RW, mln.MAP_ANONYMOUS), errno.EINVAL),                     # neither shared nor private
    ((P, RW, PRIV | mln.MAP_SHARED), errno.EINVAL),                 # both
    ((P, RW, PRIV | FIXED, 0x200000123), errno.EINVAL),             # unaligned fixed address
    ((P, RW, PRIV | mln.MAP_FIXED_NOREPLACE, 0x200000001), errno.EINVAL),
    ((P, RW, PRIV | FIXED, 0x1000), errno.EPERM),                   # below mmap_min_addr
    ((P, RW, PRIV | FIXED, 0), errno.EPERM),
    ((P, RW, PRIV | mln.MAP_FIXED_NOREPLACE, MIN_ADDR - P), errno.EPERM),
    ((TASK + 1, RW, PRIV), errno.ENOMEM),                           # longer than user space
    ((1 << 63, RW, PRIV), errno.ENOMEM),
    (((1 << 64) - 1, RW, PRIV), errno.ENOMEM),                      # rounding overflows
    ((2 * P, RW, PRIV | FIXED, TASK - P), errno.ENOMEM),            # past the top
])
def test_mmap_errors(mm, args, err):
    assert errno_of(mm.mmap, *args) == err
    assert mm.maps() == []


def test_mmap_ignores_unknown_prot_bits(mm):
    a = mm.mmap(P, RW | 0x8 | 0x40, PRIV)
    assert layout(mm) == [(a, a + P, RW, mln.MAP_PRIVATE)]


# -- munmap ---------------------------------------------------------------------------------

def test_munmap_middle_splits_and_whole_range_goes(mm):
    a = mm.mmap(5 * P, RW, PRIV)
    mm.munmap(a + P, 2 * P)
    assert layout(mm) == [(a, a + P, RW, mln.MAP_PRIVATE), (a + 3 * P, a + 5 * P, RW, mln.MAP_PRIVATE)]
    mm.munmap(a, 5 * P)             # holes inside are fine
    assert mm.maps() == []
    mm.munmap(a, 5 * P)             # nothing mapped: fine too
    b = mm.mmap(2 * P, RW, PRIV)
    mm.munmap(b, 1)                 # a partial page unmaps the whole page
    assert layout(mm) == [(b + P, b + 2 * P, RW, mln.MAP_PRIVATE)]


def test_munmap_spanning_several_vmas_and_unaligned_length(mm):
    a = mm.mmap(2 * P, RW, PRIV)
    b = mm.mmap(2 * P, RW, SHARED, a - 2 * P)
    c = mm.mmap(2 * P, RO, PRIV, b - 2 * P)
    assert (b, c) == (a - 2 * P, a - 4 * P)
    mm.munmap(c + P, 4 * P - 100)   # rounded up to 4 pages: c+P .. a+P
    assert layout(mm) == [(c, c + P, RO, mln.MAP_PRIVATE), (a + P, a + 2 * P, RW, mln.MAP_PRIVATE)]


@pytest.mark.parametrize("addr,length", [
    (0x200000001, P), (0x200000000, 0), (TASK - P, 2 * P), (TASK, P),
    (0x200000000, (1 << 64) - 1), ((1 << 64) - P, P)])
def test_munmap_errors(mm, addr, length):
    a = mm.mmap(P, RW, PRIV)
    assert errno_of(mm.munmap, addr, length) == errno.EINVAL
    assert layout(mm) == [(a, a + P, RW, mln.MAP_PRIVATE)]


# -- mprotect ------------------------------------------------------------------------------

def test_mprotect_splits_and_merges_back(mm):
    a = mm.mmap(6 * P, RW, PRIV)
    mm.mprotect(a + 2 * P, 2 * P, RO)
    assert layout(mm) == [(a, a + 2 * P, RW, mln.MAP_PRIVATE), (a + 2 * P, a + 4 * P, RO, mln.MAP_PRIVATE),
                          (a + 4 * P, a + 6 * P, RW, mln.MAP_PRIVATE)]
    mm.mprotect(a, P, RO)           # a new split at the start
    assert layout(mm)[0] == (a, a + P, RO, mln.MAP_PRIVATE)
    mm.mprotect(a + 4 * P, 1, RO)   # a partial page: merges the left run
    assert layout(mm)[-2:] == [(a + 2 * P, a + 5 * P, RO, mln.MAP_PRIVATE),
                               (a + 5 * P, a + 6 * P, RW, mln.MAP_PRIVATE)]
    mm.mprotect(a, 6 * P, RW)       # all back: one VMA again
    assert layout(mm) == [(a, a + 6 * P, RW, mln.MAP_PRIVATE)]


def test_mprotect_merges_with_both_neighbours(mm):
    a = mm.mmap(P, RW, PRIV)
    b = mm.mmap(P, RO, PRIV, a - P)
    c = mm.mmap(P, RW, PRIV, b - P)
    assert layout(mm) == [(c, c + P, RW, mln.MAP_PRIVATE), (b, b + P, RO, mln.MAP_PRIVATE),
                          (a, a + P, RW, mln.MAP_PRIVATE)]
    mm.mprotect(b, P, RW)
    assert layout(mm) == [(c, a + P, RW, mln.MAP_PRIVATE)]


def test_shared_mappings_never_merge_and_keep_their_offsets(mm):
    a = mm.mmap(4 * P, RW, SHARED)
    b = mm.mmap(2 * P, RW, SHARED, a - 2 * P)
    assert layout(mm) == [(b, a, RW, mln.MAP_SHARED), (a, a + 4 * P, RW, mln.MAP_SHARED)]
    mm.mprotect(a + P, P, RO)
    mm.mprotect(a + P, P, RW)       # back, but the pieces stay apart
    maps = mm.maps()
    assert [(v.start, v.end, v.pgoff) for v in maps] == [
        (b, a, 0), (a, a + P, 0), (a + P, a + 2 * P, 1), (a + 2 * P, a + 4 * P, 2)]
    # Private next to private across a shared one: no merge through it.
    p1 = mm.mmap(P, RW, PRIV, b - P)
    assert layout(mm)[0] == (p1, b, RW, mln.MAP_PRIVATE)


def test_mprotect_hole_is_enomem_after_the_part_before_it(mm):
    """As Linux: the VMAs up to the first hole change, then ENOMEM; a hole at
    the start changes nothing."""
    a = mm.mmap(4 * P, RW, PRIV)
    mm.munmap(a + P, P)
    assert errno_of(mm.mprotect, a, 4 * P, RO) == errno.ENOMEM
    assert layout(mm) == [(a, a + P, RO, mln.MAP_PRIVATE), (a + 2 * P, a + 4 * P, RW, mln.MAP_PRIVATE)]
    before = layout(mm)
    assert errno_of(mm.mprotect, a - P, 2 * P, RW) == errno.ENOMEM
    assert errno_of(mm.mprotect, 0x200000000, P, RO) == errno.ENOMEM
    assert layout(mm) == before


@pytest.mark.parametrize("addr,length,prot,err", [
    (0x200000001, P, RO, errno.EINVAL),             # unaligned
    (0x200000000, P, 0x10, errno.EINVAL),           # unknown protection bit
    (0x200000000, P, 0x1000000, errno.EINVAL),
    (0x200000000, (1 << 64) - 1, RO, errno.ENOMEM),  # the length overflows
    (TASK - P, 2 * P, RO, errno.ENOMEM),            # past the top
])
def test_mprotect_errors(mm, addr, length, prot, err):
    mm.mmap(P, RW, PRIV | FIXED, 0x200000000)
    assert errno_of(mm.mprotect, addr, length, prot) == err
    assert layout(mm) == [(0x200000000, 0x200000000 + P, RW, mln.MAP_PRIVATE)]


GROWS_AT = 0x300000000
GD = mln.PROT_GROWSDOWN


def _stack_and_neighbour(mm) -> None:
    """A 4-page MAP_GROWSDOWN mapping at GROWS_AT, a plain one just below its gap."""
    mm.mmap(4 * P, RW, PRIV | FIXED | mln.MAP_GROWSDOWN, GROWS_AT)
    mm.mmap(P, RW, PRIV | FIXED, GROWS_AT - 8 * P)


def test_mprotect_growsdown_extends_the_change_to_the_mappings_start(mm):
    _stack_and_neighbour(mm)
    mm.mprotect(GROWS_AT + 2 * P, P, RO | GD)
    assert layout(mm)[-2:] == [(GROWS_AT, GROWS_AT + 3 * P, RO, mln.MAP_PRIVATE | mln.MAP_GROWSDOWN),
                               (GROWS_AT + 3 * P, GROWS_AT + 4 * P, RW,
                                mln.MAP_PRIVATE | mln.MAP_GROWSDOWN)]
    # As Linux: a range starting in the hole below moves up to the mapping's start.
    mm.mprotect(GROWS_AT - 2 * P, 5 * P, RW | GD)
    assert layout(mm)[-1] == (GROWS_AT, GROWS_AT + 4 * P, RW, mln.MAP_PRIVATE | mln.MAP_GROWSDOWN)
    assert mm.sys_mprotect(GROWS_AT + P, P, mln.PROT_NONE | GD) == 0
    assert layout(mm)[-2][:3] == (GROWS_AT, GROWS_AT + 2 * P, mln.PROT_NONE)


@pytest.mark.parametrize("addr,length,prot,err", [
    (GROWS_AT - 8 * P, P, RO | GD, errno.EINVAL),           # not a growsdown mapping
    (GROWS_AT - 4 * P, P, RO | GD, errno.ENOMEM),           # no mapping in the range
    (GROWS_AT + P, P, RO | mln.PROT_GROWSUP, errno.EINVAL),  # nothing grows up on x86-64
    (GROWS_AT - P, 2 * P, RO | mln.PROT_GROWSUP, errno.ENOMEM),  # a hole at the start first
    (GROWS_AT + P + 1, P, RO | GD, errno.EINVAL),           # unaligned
    (GROWS_AT + P, P, 0x10 | GD, errno.EINVAL),             # an unknown bit beside it
    (GROWS_AT + P, P, RO | GD | mln.PROT_GROWSUP, errno.EINVAL),
    (GROWS_AT + P + 1, 0, GD | mln.PROT_GROWSUP, errno.EINVAL),  # both: before any other check
])
def test_mprotect_grows_errors_change_nothing(mm, addr, length, prot, err):
    _stack_and_neighbour(mm)
    before = layout(mm)
    assert errno_of(mm.mprotect, addr, length, prot) == err
    assert mm.sys_mprotect(addr, length, prot) == -err
    assert layout(mm) == before


def test_mprotect_accepts_prot_sem(mm):
    """PROT_SEM is a valid protection bit (x86), meaning nothing here."""
    a = mm.mmap(P, RW, PRIV)
    mm.mprotect(a, P, 0x8)
    assert layout(mm) == [(a, a + P, mln.PROT_NONE, mln.MAP_PRIVATE)]


def test_mprotect_zero_length_is_a_no_op_even_unmapped(mm):
    mm.mprotect(0x300000000, 0, RO)
    mm.mprotect(0x300000000, 0, 0xFF)       # the length is checked before the protection


def test_mprotect_read_only_makes_writes_fail_and_keeps_contents(mm):
    a = mm.mmap(2 * P, RW, PRIV)
    mm.write(a, b"hello")
    mm.mprotect(a, 2 * P, RO)
    e = segv(mm.write, a + 1, b"x")
    assert (e.addr, e.si_code, e.write) == (a + 1, mln.SEGV_ACCERR, True)
    assert mm.read(a, 5) == b"hello"
    mm.mprotect(a, 2 * P, mln.PROT_NONE)
    e = segv(mm.read, a, 1)
    assert (e.addr, e.si_code, e.write) == (a, mln.SEGV_ACCERR, False)
    mm.mprotect(a, 2 * P, RW)
    mm.write(a, b"J")
    assert mm.read(a, 5) == b"Jello"


# -- limits --------------------------------------------------------------------------------

def test_max_map_count(mm):
    """An operation that would leave more VMAs than the limit (merges
    included) and more than now fails with ENOMEM and changes nothing."""
    a = mm.mmap(4 * P, RW, PRIV)
    s = mm.mmap(P, RW, SHARED, 0x300000000)
    mm.set_max_map_count(2)
    before = layout(mm)
    assert errno_of(mm.mmap, P, RW, SHARED) == errno.ENOMEM       # a third VMA
    assert errno_of(mm.munmap, a + P, P) == errno.ENOMEM           # a split
    assert errno_of(mm.mprotect, a + P, P, RO) == errno.ENOMEM     # two splits
    assert errno_of(mm.mprotect, a, P, RO) == errno.ENOMEM         # one split
    assert errno_of(mm.mmap, P, RO, PRIV | FIXED, a - P) == errno.ENOMEM  # no merge: a third
    assert mm.brk(START_BRK + P) == START_BRK                     # a new heap VMA: refused
    assert layout(mm) == before
    # What keeps or lowers the count works: merges count.
    assert mm.mmap(P, RW, PRIV | FIXED, a - P) == a - P            # merges with a
    assert layout(mm) == [(s, s + P, RW, mln.MAP_SHARED), (a - P, a + 4 * P, RW, mln.MAP_PRIVATE)]
    mm.mprotect(a - P, 5 * P, RO)                                  # whole VMA: no split
    mm.munmap(a - P, P)                                            # trims, no split
    assert mm.mmap(2 * P, RO, PRIV | FIXED, a + P) == a + P        # same protection: merges
    mm.mprotect(a + P, P, RO)                                      # a no-op: no split
    assert layout(mm) == [(s, s + P, RW, mln.MAP_SHARED), (a, a + 4 * P, RO, mln.MAP_PRIVATE)]
    mm.munmap(s, P)
    assert mm.map_count == 1
    assert mm.brk(START_BRK + P) == START_BRK + P                  # 2 VMAs: at the limit
    assert mm.map_count == 2
    mm.set_max_map_count(65530)
    assert mm.mmap(P, RW, SHARED)


def test_max_map_count_allows_a_no_op_mprotect_of_part_of_a_shared_vma(mm):
    """mprotect with the protection a shared VMA already has leaves it whole
    (split_if_changing), so it cannot exceed the limit; the limit check must
    not count splits that will not happen."""
    s = mm.mmap(3 * P, RW, SHARED)
    mm.set_max_map_count(1)
    mm.mprotect(s + P, P, RW)
    assert layout(mm) == [(s, s + 3 * P, RW, mln.MAP_SHARED)]


def test_mprotect_to_the_same_protection_leaves_a_shared_vma_whole(mm):
    s = mm.mmap(4 * P, RW, SHARED)
    mm.mprotect(s + P, 2 * P, RW)
    assert [(v.start, v.end, v.pgoff) for v in mm.maps()] == [(s, s + 4 * P, 0)]
    mm.mprotect(s + P, P, RO)
    mm.mprotect(s, 4 * P, RO)       # only the changed pieces are touched; none re-merge
    assert [(v.start, v.end, v.prot, v.pgoff) for v in mm.maps()] == [
        (s, s + P, RO, 0), (s + P, s + 2 * P, RO, 1), (s + 2 * P, s + 4 * P, RO, 2)]


def test_set_max_map_count_rejects_zero(mm):
    with pytest.raises(ValueError):
        mm.set_max_map_count(0)


# -- brk ------------------------------------------------------------------------------------

def test_brk_grows_and_shrinks_the_heap(mm):
    assert mm.brk(0) == START_BRK
    assert mm.brk_value == START_BRK
    assert mm.brk(START_BRK + 100) == START_BRK + 100
    assert [(v.start, v.end, v.prot, v.heap) for v in mm.maps()] == [
        (START_BRK, START_BRK + P, RW, True)]
    assert mm.brk(START_BRK + P + 1) == START_BRK + P + 1
    assert layout(mm) == [(START_BRK, START_BRK + 2 * P, RW, mln.MAP_PRIVATE)]
    mm.write(START_BRK + P, b"heap")
    assert mm.brk(START_BRK + 10) == START_BRK + 10        # shrinks: the second page goes
    assert layout(mm) == [(START_BRK, START_BRK + P, RW, mln.MAP_PRIVATE)]
    assert mm.brk(START_BRK + 2 * P) == START_BRK + 2 * P  # and comes back zeroed
    assert mm.read(START_BRK + P, 4) == bytes(4)
    assert mm.brk(START_BRK) == START_BRK
    assert mm.maps() == []


def test_brk_refusals_return_the_current_break(mm):
    mm.brk(START_BRK + P)
    assert mm.brk(START_BRK - P) == START_BRK + P          # below the start
    assert mm.brk(TASK + P) == START_BRK + P               # past the top
    # A mapping above: the heap may grow up to a guard page below it.
    mm.mmap(P, RW, PRIV | FIXED, START_BRK + 4 * P)
    assert mm.brk(START_BRK + 4 * P) == START_BRK + P
    assert mm.brk(START_BRK + 3 * P + 5) == START_BRK + P
    assert mm.brk(START_BRK + 3 * P) == START_BRK + 3 * P
    assert layout(mm) == [(START_BRK, START_BRK + 3 * P, RW, mln.MAP_PRIVATE),
                          (START_BRK + 4 * P, START_BRK + 5 * P, RW, mln.MAP_PRIVATE)]


def test_brk_heap_flag_and_merging_with_a_mapping_below(mm):
    mm.mmap(P, RW, PRIV | FIXED, START_BRK - P)
    # Touches start_brk: shown as the heap, as the kernel's test does.
    assert mm.maps()[0].heap
    mm.brk(START_BRK + P)
    assert [(v.start, v.end, v.heap) for v in mm.maps()] == [(START_BRK - P, START_BRK + P, True)]
    other = mm.mmap(P, RW, PRIV)
    assert [v.heap for v in mm.maps() if v.start == other] == [False]


def test_brk_next_to_read_only_mapping_makes_a_new_vma(mm):
    mm.mmap(P, RO, PRIV | FIXED, START_BRK - P)
    mm.brk(START_BRK + P)
    assert layout(mm) == [(START_BRK - P, START_BRK, RO, mln.MAP_PRIVATE),
                          (START_BRK, START_BRK + P, RW, mln.MAP_PRIVATE)]


# -- madvise -------------------------------------------------------------------------------

def test_madvise_dontneed_zeroes_private_and_keeps_shared(mm):
    a = mm.mmap(2 * P, RW, PRIV)
    s = mm.mmap(2 * P, RW, SHARED)
    mm.write(a, b"private" * 1000)
    mm.write(s, b"shared!" * 1000)
    assert mm.nr_pages() == 4
    mm.madvise(a, 2 * P, mln.MADV_DONTNEED)
    mm.madvise(s, 2 * P, mln.MADV_DONTNEED)
    assert mm.nr_pages() == 0
    assert mm.read(a, 2 * P) == bytes(2 * P)
    assert mm.read(s, 7000) == b"shared!" * 1000
    assert layout(mm) == [(s, s + 2 * P, RW, mln.MAP_SHARED), (a, a + 2 * P, RW, mln.MAP_PRIVATE)]


def test_madvise_hole_is_enomem_but_the_mapped_part_is_done(mm):
    a = mm.mmap(3 * P, RW, PRIV)
    mm.write(a, b"z" * (3 * P))
    mm.munmap(a + P, P)
    assert errno_of(mm.madvise, a, 3 * P, mln.MADV_DONTNEED) == errno.ENOMEM
    assert mm.read(a, P) == bytes(P)
    assert mm.read(a + 2 * P, P) == bytes(P)
    # Hints over a hole: ENOMEM, and over a mapped range: fine.
    for advice in (mln.MADV_NORMAL, mln.MADV_RANDOM, mln.MADV_SEQUENTIAL, mln.MADV_WILLNEED):
        assert errno_of(mm.madvise, a, 3 * P, advice) == errno.ENOMEM
        mm.madvise(a, P, advice)
    assert layout(mm) == [(a, a + P, RW, mln.MAP_PRIVATE), (a + 2 * P, a + 3 * P, RW, mln.MAP_PRIVATE)]


def test_madvise_free_drops_private_pages_and_refuses_shared(mm):
    """MADV_FREE: Linux may drop a private page until it is written again;
    here it is dropped at once (reads give zeros).  Shared memory: EINVAL,
    nothing dropped."""
    a = mm.mmap(2 * P, RW, PRIV)
    s = mm.mmap(P, RW, SHARED)
    mm.write(a, b"f" * (2 * P))
    mm.write(s, b"s" * P)
    mm.madvise(a, 2 * P, mln.MADV_FREE)
    assert mm.read(a, 2 * P) == bytes(2 * P)
    assert errno_of(mm.madvise, s, P, mln.MADV_FREE) == errno.EINVAL
    assert mm.sys_madvise(s, P, mln.MADV_FREE) == -errno.EINVAL
    assert mm.read(s, P) == b"s" * P
    mm.write(a, b"g")
    mm.madvise(a, P, mln.MADV_DONTNEED_LOCKED)
    assert mm.read(a, 1) == b"\0"


@pytest.mark.parametrize("advice", ["MADV_COLD", "MADV_PAGEOUT", "MADV_HUGEPAGE",
                                    "MADV_NOHUGEPAGE", "MADV_DONTDUMP", "MADV_DODUMP"])
def test_madvise_hints_keep_the_data_and_check_the_range(mm, advice):
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"kept")
    assert mm.sys_madvise(a, P, getattr(mln, advice)) == 0
    assert mm.read(a, 4) == b"kept"
    assert mm.sys_madvise(a, 2 * P, getattr(mln, advice)) == -errno.ENOMEM


@pytest.mark.parametrize("advice", [9, 12, 13, 25, 100])
def test_madvise_not_emulated_is_einval(mm, advice):
    """REMOVE, MERGEABLE, UNMERGEABLE, COLLAPSE, HWPOISON: EINVAL, as from a
    kernel built without them; nothing changes."""
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"kept")
    assert mm.sys_madvise(a, P, advice) == -errno.EINVAL
    assert mm.read(a, 4) == b"kept"


def test_madvise_dontfork_leaves_the_range_out_of_the_child(mm):
    a = mm.mmap(6 * P, RW, PRIV)
    mm.write(a, bytes(range(256)) * (6 * P // 256))
    mm.madvise(a + 2 * P, 2 * P, mln.MADV_DONTFORK)
    # The VMA is split at the range's edges (maps shows it).
    assert layout(mm) == [(a, a + 2 * P, RW, mln.MAP_PRIVATE),
                          (a + 2 * P, a + 4 * P, RW, mln.MAP_PRIVATE),
                          (a + 4 * P, a + 6 * P, RW, mln.MAP_PRIVATE)]
    child = mm.fork()
    try:
        assert layout(child) == [(a, a + 2 * P, RW, mln.MAP_PRIVATE),
                                 (a + 4 * P, a + 6 * P, RW, mln.MAP_PRIVATE)]
        with pytest.raises(mln.SegmentationFault) as ei:
            child.read(a + 2 * P, 1)
        assert ei.value.si_code == mln.SEGV_MAPERR
        assert child.read(a + 5 * P, 4) == mm.read(a + 5 * P, 4)
    finally:
        child.close()
    assert mm.read(a + 3 * P, 3) == bytes([0, 1, 2])
    # DOFORK over the whole range: merged back, and copied.
    mm.madvise(a, 6 * P, mln.MADV_DOFORK)
    assert layout(mm) == [(a, a + 6 * P, RW, mln.MAP_PRIVATE)]
    child = mm.fork()
    try:
        assert child.read(a + 3 * P, 3) == bytes([0, 1, 2])
    finally:
        child.close()


def test_fork_advice_invalidates_nothing_and_leaves_the_vma_seq_alone_when_unchanged(mm):
    """Flag advice changes no translation: no invalidation record, where an
    mprotect of the same range records one; advice that changes nothing
    touches no VMA (the layout count stays)."""
    a = mm.mmap(6 * P, RW, PRIV)
    mm.write(a, b"x" * (6 * P))
    with mm.secondary_mmu() as smmu:
        for advice in (mln.MADV_DONTFORK, mln.MADV_WIPEONFORK, mln.MADV_KEEPONFORK,
                       mln.MADV_DOFORK):
            mm.madvise(a + P, 2 * P, advice)
        assert smmu.pending == 0 and smmu.drain() == []
        seq = mm.vma_seq
        mm.madvise(a, 6 * P, mln.MADV_DOFORK)       # already so: nothing changes
        assert mm.vma_seq == seq
        mm.mprotect(a + P, P, mln.PROT_READ)
        assert [r.reason for r in smmu.drain()] == [mln.InvalidationReason.PROTECT]


def test_mremap_moves_the_fork_advice_with_the_mapping(mm):
    a = mm.mmap(2 * P, RW, PRIV)
    mm.write(a, b"moved")
    mm.madvise(a, 2 * P, mln.MADV_DONTFORK)
    b = mm.mremap(a, 2 * P, 4 * P, mln.MREMAP_MAYMOVE | mln.MREMAP_FIXED, 0x300000000)
    assert b == 0x300000000 and mm.read(b, 5) == b"moved"
    child = mm.fork()
    try:
        with pytest.raises(mln.SegmentationFault):
            child.read(b, 1)            # still DONTFORK after the move and the growth
    finally:
        child.close()


def test_a_fork_leaving_a_vma_out_does_not_share_the_parents_layout_count(mm):
    mm.mmap(P, RW, PRIV)
    a = mm.mmap(P, RW, PRIV, 0x300000000)
    mm.madvise(a, P, mln.MADV_DONTFORK)
    child = mm.fork()
    try:
        assert child.vma_seq != mm.vma_seq      # a VMA record of the parent's is not the child's
    finally:
        child.close()
    mm.madvise(a, P, mln.MADV_DOFORK)
    child = mm.fork()
    try:
        assert child.vma_seq == mm.vma_seq      # an exact copy starts at the parent's count
    finally:
        child.close()


def test_madvise_dontfork_hole_and_limit(mm):
    a = mm.mmap(3 * P, RW, PRIV)
    mm.munmap(a + P, P)
    # A hole: the mapped parts change, ENOMEM reported.
    assert mm.sys_madvise(a, 3 * P, mln.MADV_DONTFORK) == -errno.ENOMEM
    child = mm.fork()
    try:
        assert layout(child) == []
    finally:
        child.close()
    # A split past max_map_count: EAGAIN (Linux since 5.18), nothing changed.
    b = mm.mmap(3 * P, RW, PRIV)
    mm.set_max_map_count(mm.map_count)
    assert errno_of(mm.madvise, b + P, P, mln.MADV_DONTFORK) == errno.EAGAIN
    assert (b, b + 3 * P, RW, mln.MAP_PRIVATE) in layout(mm)


def test_madvise_wipeonfork_gives_the_child_zeros(mm):
    a = mm.mmap(4 * P, RW, PRIV)
    s = mm.mmap(P, RW, SHARED)
    mm.write(a, b"w" * (4 * P))
    assert errno_of(mm.madvise, s, P, mln.MADV_WIPEONFORK) == errno.EINVAL
    mm.madvise(a + P, 2 * P, mln.MADV_WIPEONFORK)
    before = mm.nr_pages()
    child = mm.fork()
    try:
        assert layout(child) == layout(mm)            # same range, prot, name
        assert child.read(a, P) == b"w" * P
        assert child.read(a + P, 2 * P) == bytes(2 * P)
        assert child.read(a + 3 * P, P) == b"w" * P
        child.write(a + P, b"child")
        assert mm.read(a + P, 5) == b"wwwww"
        # The child's VMA keeps the flag.
        grandchild = child.fork()
        assert grandchild.read(a + P, 5) == bytes(5)
        grandchild.close()
    finally:
        child.close()
    assert mm.nr_pages() == before
    assert mm.read(a, 4 * P) == b"w" * (4 * P)
    mm.madvise(a, 4 * P, mln.MADV_KEEPONFORK)
    assert [v.end - v.start for v in mm.maps() if v.start == a] == [4 * P]
    child = mm.fork()
    try:
        assert child.read(a + P, 2 * P) == b"w" * (2 * P)
    finally:
        child.close()


def test_madvise_populate_faults_the_range_in(mm):
    a = mm.mmap(4 * P, RW, PRIV)
    assert mm.nr_pages() == 0
    mm.madvise(a, 2 * P, mln.MADV_POPULATE_READ)
    assert mm.nr_pages() == 2
    mm.madvise(a, 4 * P, mln.MADV_POPULATE_WRITE)
    assert mm.nr_pages() == 4
    ro = mm.mmap(P, RO, PRIV)
    none = mm.mmap(P, mln.PROT_NONE, PRIV)
    assert mm.sys_madvise(ro, P, mln.MADV_POPULATE_WRITE) == -errno.EINVAL
    assert mm.sys_madvise(ro, P, mln.MADV_POPULATE_READ) == 0
    assert mm.sys_madvise(none, P, mln.MADV_POPULATE_READ) == -errno.EINVAL
    assert mm.nr_pages() == 5
    # A hole: the mapped parts populated, ENOMEM.
    mm.madvise(a, 4 * P, mln.MADV_DONTNEED)
    mm.munmap(a + P, P)
    assert errno_of(mm.madvise, a, 4 * P, mln.MADV_POPULATE_READ) == errno.ENOMEM
    assert mm.nr_pages() == 4


def test_madvise_populate_write_breaks_copy_on_write(mm):
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"parent")
    child = mm.fork()
    try:
        n = registered(mm)
        mm.madvise(a, P, mln.MADV_POPULATE_READ)      # present already: nothing to do
        assert n.take() == []
        mm.madvise(a, P, mln.MADV_POPULATE_WRITE)     # the copy: its old translation goes
        assert n.take() == [("start", a, a + P), ("end", a, a + P)]
        mm.write(a, b"PARENT")                        # and no second copy for the write
        assert n.take() == []
        assert child.read(a, 6) == b"parent"
    finally:
        child.close()


def test_madvise_past_the_top_is_enomem(mm):
    """As Linux: the range is checked for mappings, not against the top."""
    assert errno_of(mm.madvise, TASK - P, 2 * P, mln.MADV_NORMAL) == errno.ENOMEM


@pytest.mark.parametrize("addr,length,advice", [
    (0x200000001, P, mln.MADV_DONTNEED), (0x200000000, P, 5), (0x200000000, P, -1),
    (0x200000000, (1 << 64) - 1, mln.MADV_DONTNEED)])
def test_madvise_errors(mm, addr, length, advice):
    mm.mmap(P, RW, PRIV | FIXED, 0x200000000)
    assert errno_of(mm.madvise, addr, length, advice) == errno.EINVAL


def test_madvise_zero_length_is_a_no_op(mm):
    mm.madvise(0x300000000, 0, mln.MADV_DONTNEED)


# -- faults and guest memory ----------------------------------------------------------------------

def test_fault_results(mm):
    a = mm.mmap(P, RO, PRIV)
    n = mm.mmap(P, mln.PROT_NONE, PRIV)
    w = mm.mmap(P, mln.PROT_WRITE, PRIV)        # write implies read, as on x86
    x = mm.mmap(P, mln.PROT_EXEC, PRIV)         # exec implies read too
    mm.fault(a + 5)
    mm.fault(w, mln.Access.WRITE)
    mm.fault(w + 9)
    mm.fault(x)
    for addr, write, code in [(a + 7, True, mln.SEGV_ACCERR), (n + 1, False, mln.SEGV_ACCERR),
                              (x, True, mln.SEGV_ACCERR), (a + P + 3, False, mln.SEGV_MAPERR),
                              (0, False, mln.SEGV_MAPERR), (TASK + 5, True, mln.SEGV_MAPERR)]:
        e = segv(mm.fault, addr, write)
        assert (e.addr, e.si_code, e.write) == (addr, code, write)
        assert isinstance(e, Exception) and f"{addr:#x}" in str(e)
    assert mm.nr_pages() == 3


def test_read_and_write_across_pages_and_vmas(mm):
    a = mm.mmap(2 * P, RW, PRIV)
    b = mm.mmap(2 * P, RWX, PRIV, a - 2 * P)      # adjacent below, not merged
    s = mm.mmap(P, RW, SHARED, b - P)            # shared below that
    assert (b, s) == (a - 2 * P, a - 3 * P)
    data = bytes(range(256)) * 40                # 10240 bytes, s+100 .. across 3 VMAs
    mm.write(s + 100, data)
    assert mm.read(s + 100, len(data)) == data
    assert mm.read(s, 100) == bytes(100)
    assert mm.read(a + P, P) == data[a + P - s - 100:][:P].ljust(P, b"\0")
    assert mm.read(a, 0) == b""
    mm.write(a, b"")
    mm.write(a + 1, memoryview(bytearray(b"mv")))  # any bytes-like object


def test_access_faults_report_the_first_bad_page_and_write_partially(mm):
    a = mm.mmap(2 * P, RW, PRIV)
    mm.munmap(a + P, P)
    e = segv(mm.read, a + P - 10, 20)
    assert (e.addr, e.si_code, e.write) == (a + P, mln.SEGV_MAPERR, False)
    e = segv(mm.write, a + P - 4, b"ABCDEFGH")
    assert (e.addr, e.si_code, e.write) == (a + P, mln.SEGV_MAPERR, True)
    assert mm.read(a + P - 4, 4) == b"ABCD"      # the part before the fault was written
    e = segv(mm.read, a + P + 7, 1)
    assert (e.addr, e.si_code) == (a + P + 7, mln.SEGV_MAPERR)
    r = mm.mmap(P, RO, PRIV, a + P)
    assert r == a + P
    e = segv(mm.write, a + P - 2, b"xyz")
    assert (e.addr, e.si_code) == (a + P, mln.SEGV_ACCERR)
    assert mm.read(a + P - 2, 3) == b"xy\0"
    e = segv(mm.read, (1 << 64) - 2, 4)          # wraps around: refused at the start
    assert (e.addr, e.si_code) == ((1 << 64) - 2, mln.SEGV_MAPERR)
    with pytest.raises(ValueError):
        mm.read(a, -1)


# -- get_user_pages and view() ---------------------------------------------------------------

def test_get_user_pages_pins_survive_munmap(mm):
    a = mm.mmap(3 * P, RW, PRIV)
    mm.write(a, b"A" * P + b"B" * P + b"C" * P)
    pinned = mm.get_user_pages(a, 3)
    try:
        assert len(pinned) == 3 and pinned.addr == a
        mm.munmap(a, 3 * P)
        assert mm.maps() == [] and mm.nr_pages() == 0
        assert [bytes(p) for p in pinned.pages] == [b"A" * P, b"B" * P, b"C" * P]
        e = segv(mm.read, a, 1)
        assert e.si_code == mln.SEGV_MAPERR
        # A new mapping at the same place is fresh memory, not the pinned pages.
        mm.mmap(P, RW, PRIV | FIXED, a)
        mm.write(a, b"new")
        assert bytes(pinned.pages[0][:3]) == b"AAA"
    finally:
        pinned.unpin()
    assert len(pinned) == 0
    pinned.unpin()                                # twice is fine


def test_get_user_pages_failures(mm):
    a = mm.mmap(2 * P, RO, PRIV)
    e = segv(mm.get_user_pages, a, 3)
    assert (e.addr, e.si_code) == (a + 2 * P, mln.SEGV_MAPERR)
    e = segv(mm.get_user_pages, a, 1, True)
    assert (e.addr, e.si_code, e.write) == (a, mln.SEGV_ACCERR, True)
    with pytest.raises(ValueError):
        mm.get_user_pages(a + 1, 1)
    with mm.get_user_pages(a, 0) as none:
        assert len(none) == 0


def test_pins_stay_with_the_mm_across_fork(mm):
    """A pinned private page stays the parent's (writable, coherent with the
    pin); the child gets its own copy at fork (Linux's page_needs_cow_for_dma)."""
    a = mm.mmap(2 * P, RW, PRIV)
    mm.write(a, b"one")
    mm.write(a + P, b"two")
    pinned = mm.get_user_pages(a, 1, write=True)
    child = mm.fork()
    try:
        mm.write(a, b"ONE")
        assert bytes(pinned.pages[0][:3]) == b"ONE"
        assert child.read(a, 3) == b"one"
        child.write(a, b"kid")
        assert bytes(pinned.pages[0][:3]) == b"ONE" and mm.read(a, 3) == b"ONE"
        pinned.pages[0][:3] = b"dev"                # a device writing through the pin
        assert mm.read(a, 3) == b"dev" and child.read(a, 3) == b"kid"
        # The unpinned page was shared copy-on-write as usual.
        child.write(a + P, b"TWO")
        assert mm.read(a + P, 3) == b"two"
    finally:
        pinned.unpin()
        child.close()


def test_write_fault_does_not_copy_a_page_away_from_its_own_pins(mm):
    """A read-only pinned page that only this mm maps is not copied by a later
    write fault: the pin keeps seeing the mm's memory."""
    a = mm.mmap(P, RO, PRIV)
    mm.fault(a)
    with mm.get_user_pages(a, 1) as pinned:
        mm.mprotect(a, P, RW)
        mm.write(a, b"xyz")
        assert bytes(pinned.pages[0][:3]) == b"xyz"


def test_read_pin_of_a_page_shared_with_a_fork_stays_with_the_mm(mm):
    """Linux 5.19+ (gup_must_unshare / FAULT_FLAG_UNSHARE): a FOLL_PIN of an
    anonymous page shared copy-on-write with a fork unshares it first, even
    for reading, so the pinned page is this mm's and its later writes reach
    the pin.  docs/mm.md promises the same ("pins stay with the mm: a write
    fault does not copy a page away from its pins")."""
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"old")
    child = mm.fork()
    try:
        with mm.get_user_pages(a, 1) as pinned:
            mm.write(a, b"new")
            assert child.read(a, 3) == b"old"
            assert bytes(pinned.pages[0][:3]) == mm.read(a, 3) == b"new"
    finally:
        child.close()


@pytest.mark.parametrize("drop", ["munmap", "close"])
def test_a_childs_pin_never_sees_the_parents_writes_after_fork(mm, drop):
    """Copy-on-write isolation with pins: the child pins (for reading) a page
    it shares copy-on-write with the parent, then drops its mapping.  The
    parent's later write must not land in the child's pinned page.  (Linux
    unshares the page at pin time; even before 5.19 the parent's write fault
    copied because the pin raised the page count.  Here wp_fault() counts
    every pin as the faulting mm's own: refcount - pincount == 1.)"""
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"before fork")
    child = mm.fork()
    pinned = child.get_user_pages(a, 1)
    try:
        if drop == "munmap":
            child.munmap(a, P)
        else:
            child.close()
        mm.write(a, b"SECRET")
        assert mm.read(a, 11) == b"SECRET fork"
        assert bytes(pinned.pages[0][:11]) == b"before fork"
    finally:
        pinned.unpin()
        child.close()


def test_view_is_zero_copy_both_ways(mm):
    a = mm.mmap(3 * P, RW, PRIV)
    with mm.view(a + P - 3, 6, write=True) as v:
        assert [len(p) for p in v.pages] == [3, 3]
        v.pages[0][:] = b"abc"
        v.pages[1][:] = b"def"
        assert mm.read(a + P - 3, 6) == b"abcdef"
        mm.write(a + P - 1, b"XY")
        assert bytes(v.pages[0]) + bytes(v.pages[1]) == b"abXYef"
    with mm.view(a + 10, 5) as v:
        assert len(v.pages) == 1 and bytes(v.pages[0]) == bytes(5)
    with mm.view(a, 0) as v:
        assert len(v) == 0


# -- fork ---------------------------------------------------------------------------------------

def test_fork_private_copy_on_write_both_ways(mm):
    a = mm.mmap(4 * P, RW, PRIV)
    mm.write(a, b"p0")
    mm.write(a + P, b"p1")
    child = mm.fork()
    try:
        assert layout(child) == layout(mm)
        assert child.nr_pages() == mm.nr_pages() == 2
        assert child.read(a, 2) == b"p0" and child.read(a + P, 2) == b"p1"
        mm.write(a, b"P0")                     # the parent's write: invisible to the child
        assert child.read(a, 2) == b"p0" and mm.read(a, 2) == b"P0"
        child.write(a + P, b"C1")              # the child's write: invisible to the parent
        assert mm.read(a + P, 2) == b"p1" and child.read(a + P, 2) == b"C1"
        mm.write(a + 2 * P, b"new in parent")  # first faulted after fork
        child.write(a + 3 * P, b"new in child")
        assert child.read(a + 2 * P, 13) == bytes(13)
        assert mm.read(a + 3 * P, 12) == bytes(12)
        # A grandchild sees the child's view, and is isolated likewise.
        grand = child.fork()
        assert grand.read(a + P, 2) == b"C1" and grand.read(a, 2) == b"p0"
        grand.write(a, b"G0")
        assert child.read(a, 2) == b"p0" and mm.read(a, 2) == b"P0"
        grand.close()
    finally:
        child.close()
    # The parent's pages outlive the child.
    assert mm.read(a, 2) == b"P0" and mm.read(a + P, 2) == b"p1"


def test_fork_shared_stays_shared_including_pages_faulted_after(mm):
    s = mm.mmap(4 * P, RW, SHARED)
    mm.write(s, b"before")
    child = mm.fork()
    try:
        assert child.read(s, 6) == b"before"
        child.write(s, b"CHILD!")
        assert mm.read(s, 6) == b"CHILD!"
        mm.write(s + P, b"parent-after")        # never faulted before the fork
        assert child.read(s + P, 12) == b"parent-after"
        child.write(s + 2 * P, b"child-after")  # never faulted anywhere before
        assert mm.read(s + 2 * P, 11) == b"child-after"
        child.read(s + 3 * P, 1)                # faulted (read) in the child first
        mm.write(s + 3 * P, b"late")
        assert child.read(s + 3 * P, 4) == b"late"
        # A split shared VMA still maps the same backing pages.
        mm.mprotect(s + P, P, RO)
        child.munmap(s, P)
        assert mm.read(s + P, 12) == b"parent-after"
        child.write(s + 2 * P, b"X")
        assert mm.read(s + 2 * P, 2) == b"Xh"
    finally:
        child.close()
    assert mm.read(s + 2 * P, 2) == b"Xh"       # outlives the child


def test_fork_keeps_layout_brk_and_limit(mm):
    mm.brk(START_BRK + 2 * P)
    mm.mmap(P, RO, PRIV)
    mm.set_max_map_count(3)
    child = mm.fork()
    try:
        assert child.maps() == mm.maps()
        assert child.brk_value == START_BRK + 2 * P
        assert child.mmap(P, RW, SHARED)                            # the third VMA
        assert errno_of(child.mmap, P, RW, SHARED) == errno.ENOMEM  # the limit came along
    finally:
        child.close()


def test_fork_read_only_private_then_child_mprotect_and_write(mm):
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"orig")
    mm.mprotect(a, P, RO)
    child = mm.fork()
    try:
        child.mprotect(a, P, RW)
        child.write(a, b"CHLD")
        assert mm.read(a, 4) == b"orig"
        mm.mprotect(a, P, RW)
        mm.write(a, b"PRNT")
        assert child.read(a, 4) == b"CHLD"
    finally:
        child.close()


def test_fork_then_dontneed_in_one_side_only(mm):
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"keep")
    child = mm.fork()
    try:
        child.madvise(a, P, mln.MADV_DONTNEED)
        assert child.read(a, 4) == bytes(4)
        assert mm.read(a, 4) == b"keep"
        mm.write(a, b"more")                    # the parent is the only owner now
        assert child.read(a, 4) == bytes(4)
    finally:
        child.close()


# -- close ------------------------------------------------------------------------------------

def test_close_releases_and_later_operations_fail():
    mm = mln.MM()
    a = mm.mmap(2 * P, RW, PRIV)
    mm.brk(START_BRK + P)
    notes = Notes(mm)
    mm.register_notifier(notes)
    mm.close()
    assert notes.calls[0] == ("release",)
    assert notes.calls.count(("release",)) == 1
    assert mm.maps() == [] and mm.map_count == 0 and mm.nr_pages() == 0
    assert errno_of(mm.mmap, P, RW, PRIV) == errno.EINVAL
    assert errno_of(mm.munmap, a, P) == errno.EINVAL
    assert errno_of(mm.mprotect, a, P, RO) == errno.EINVAL
    assert errno_of(mm.madvise, a, P, mln.MADV_DONTNEED) == errno.EINVAL
    assert errno_of(mm.madvise, a, P, mln.MADV_WILLNEED) == errno.EINVAL
    assert errno_of(mm.madvise, a, P, mln.MADV_DONTFORK) == errno.EINVAL
    assert errno_of(mm.madvise, a, P, mln.MADV_POPULATE_READ) == errno.EINVAL
    assert errno_of(mm.fork) == errno.EINVAL
    assert errno_of(mm.register_notifier, Notes()) == errno.EINVAL
    for fn, args in [(mm.fault, (a,)), (mm.fault, (a, True)), (mm.read, (a, 1)),
                     (mm.write, (a, b"x")), (mm.get_user_pages, (a, 1))]:
        e = segv(fn, *args)
        assert (e.addr, e.si_code) == (a, mln.SEGV_MAPERR)
    assert mm.brk(START_BRK + 2 * P) == START_BRK + P   # refused: the break stays
    assert mm.read(a, 0) == b""
    mm.close()                                          # again: nothing more happens
    assert notes.calls.count(("release",)) == 1
    assert not notes.unlocked


# -- /proc/pid/maps -------------------------------------------------------------------------------

def test_maps_text_exact(mm):
    mm.brk(START_BRK + 2 * P)
    s = mm.mmap(3 * P, RW, SHARED)
    mm.mprotect(s + P, P, RO)
    a = mm.mmap(P, RWX, PRIV)
    n = mm.mmap(P, mln.PROT_NONE, PRIV)
    assert (s, a, n) == (0x7EFFFFFFD000, 0x7EFFFFFFC000, 0x7EFFFFFFB000)
    expected = (
        "555555560000-555555562000 rw-p 00000000 00:00 0                          [heap]\n"
        "7effffffb000-7effffffc000 ---p 00000000 00:00 0 \n"
        "7effffffc000-7effffffd000 rwxp 00000000 00:00 0 \n"
        "7effffffd000-7effffffe000 rw-s 00000000 00:01 0                          /dev/zero (deleted)\n"
        "7effffffe000-7efffffff000 r--s 00001000 00:01 0                          /dev/zero (deleted)\n"
        "7efffffff000-7f0000000000 rw-s 00002000 00:01 0                          /dev/zero (deleted)\n"
    )
    text = mm.maps_text()
    assert text == expected
    # The name starts at column 73, as the kernel pads it (seq_setwidth(25 + 6 * 8 - 1)).
    for line in text.splitlines():
        name = "[heap]" if "[heap]" in line else "/dev/zero (deleted)" if "/dev" in line else None
        if name:
            assert line.index(name) == 73 and line.endswith(name)
        else:
            assert line.endswith(" 0 ")     # the anonymous line's trailing space


def test_maps_text_low_addresses_pad_to_eight_digits(mm):
    mm.mmap(P, RO, PRIV | FIXED, MIN_ADDR)
    assert mm.maps_text() == "00010000-00011000 r--p 00000000 00:00 0 \n"


def test_maps_records(mm):
    a = mm.mmap(P, RW, PRIV)
    (v,) = mm.maps()
    assert isinstance(v, mln.VMA)
    assert (v.start, v.end, v.prot, v.flags, v.heap, v.perms()) == (a, a + P, RW, mln.MAP_PRIVATE,
                                                                    False, "rw-p")
    assert mm.maps_text() == v.maps_line() + "\n"


# -- MMU notifiers ---------------------------------------------------------------------------------

def registered(mm: mln.MM) -> Notes:
    n = Notes(mm)
    mm.register_notifier(n)
    return n


def test_notifier_munmap_brackets_the_range(mm):
    a = mm.mmap(4 * P, RW, PRIV)
    mm.mmap(P, RW, SHARED, a - P)
    n = registered(mm)
    mm.munmap(a - P, 3 * P)                     # two VMAs, one bracket for the range
    assert n.take() == [("start", a - P, a + 2 * P), ("end", a - P, a + 2 * P)]
    mm.munmap(0x300000000, P)                   # nothing there: nothing to invalidate
    assert n.take() == []
    assert not n.unlocked


def test_notifier_mprotect_brackets_the_range(mm):
    a = mm.mmap(4 * P, RW, PRIV)
    mm.write(a, b"x" * (4 * P))
    n = registered(mm)
    mm.mprotect(a + P, 2 * P, RO)
    assert n.take() == [("start", a + P, a + 3 * P), ("end", a + P, a + 3 * P)]
    mm.mprotect(a, 4 * P, RW)
    calls = n.take()
    assert_paired(calls)
    assert calls in ([], [("start", a, a + 4 * P), ("end", a, a + 4 * P)])
    with pytest.raises(OSError):
        mm.mprotect(a - P, 2 * P, RO)           # a hole at the start: nothing invalidated
    assert n.take() == []
    with pytest.raises(OSError):
        mm.mprotect(a, 8 * P, RO)               # applied up to the hole, then ENOMEM
    assert n.take() == [("start", a, a + 4 * P), ("end", a, a + 4 * P)]
    assert not n.unlocked


def test_notifier_madvise_dontneed_brackets_each_mapped_part(mm):
    a = mm.mmap(4 * P, RW, PRIV)
    mm.mprotect(a + 2 * P, 2 * P, RO)
    n = registered(mm)
    mm.madvise(a + P, 2 * P, mln.MADV_DONTNEED)
    assert n.take() == [("start", a + P, a + 2 * P), ("end", a + P, a + 2 * P),
                        ("start", a + 2 * P, a + 3 * P), ("end", a + 2 * P, a + 3 * P)]
    mm.munmap(a + P, P)
    assert n.take() == [("start", a + P, a + 2 * P), ("end", a + P, a + 2 * P)]
    with pytest.raises(OSError):
        mm.madvise(a, 4 * P, mln.MADV_DONTNEED)
    assert n.take() == [("start", a, a + P), ("end", a, a + P),
                        ("start", a + 2 * P, a + 4 * P), ("end", a + 2 * P, a + 4 * P)]
    mm.madvise(a, P, mln.MADV_WILLNEED)         # a hint invalidates nothing
    assert n.take() == []
    assert not n.unlocked


def test_notifier_map_fixed_and_brk_shrink_bracket_what_they_remove(mm):
    a = mm.mmap(4 * P, RW, PRIV)
    mm.brk(START_BRK + 3 * P)
    n = registered(mm)
    mm.mmap(P, RO, PRIV | FIXED, a + P)
    assert n.take() == [("start", a + P, a + 2 * P), ("end", a + P, a + 2 * P)]
    mm.mmap(P, RO, PRIV | FIXED, 0x300000000)   # nothing replaced
    assert n.take() == []
    mm.brk(START_BRK + P)
    assert n.take() == [("start", START_BRK + P, START_BRK + 3 * P),
                        ("end", START_BRK + P, START_BRK + 3 * P)]
    assert not n.unlocked


def test_notifier_fork_and_cow_break(mm):
    a = mm.mmap(2 * P, RW, PRIV)
    s = mm.mmap(P, RW, SHARED)
    mm.write(a, b"x")
    mm.write(s, b"y")
    n = registered(mm)
    child = mm.fork()
    try:
        # fork write-protects the private VMAs (each bracketed); shared ones stay writable.
        assert n.take() == [("start", a, a + 2 * P), ("end", a, a + 2 * P)]
        mm.write(a + 5, b"z")                   # the COW break: the page's old translation goes
        assert n.take() == [("start", a, a + P), ("end", a, a + P)]
        mm.write(a + 6, b"z")                   # already broken
        mm.write(s, b"shared")                  # shared: no COW
        mm.write(a + P, b"fresh")               # a new page: nothing was mapped
        assert n.take() == []
        child.write(a + 7, b"c")                # the child's COW is not the parent's business
        assert n.take() == []
    finally:
        child.close()
    assert n.take() == []                       # nor is its exit
    assert not n.unlocked


def test_notifier_cow_sole_owner_reuses_the_page(mm):
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"x")
    child = mm.fork()
    child.close()
    n = registered(mm)
    mm.write(a, b"y")                           # the child is gone: no copy, no invalidation
    assert n.take() == []
    assert mm.read(a, 1) == b"y"


def test_notifier_close_releases_then_brackets_everything(mm):
    mm.mmap(P, RW, PRIV)
    n = registered(mm)
    mm.close()
    assert n.take() == [("release",), ("start", 0, TASK), ("end", 0, TASK)]
    assert not n.unlocked


def test_notifier_close_of_an_empty_mm_pairs_its_brackets(mm):
    """Closing an mm with no mappings left: release() and, if any invalidation
    at all, a paired one (mm_unmap_all must not send an unopened end)."""
    a = mm.mmap(P, RW, PRIV)
    mm.munmap(a, P)
    n = registered(mm)
    mm.close()
    calls = n.take()
    assert_paired(calls)
    assert calls == [("release",)]


def test_notifiers_run_in_registration_order_and_unregister(mm):
    a = mm.mmap(P, RW, PRIV)
    log: List[tuple] = []

    class Tagged:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def invalidate_range_start(self, s: int, e: int) -> None:
            log.append((self.tag, "start"))

        def invalidate_range_end(self, s: int, e: int) -> None:
            log.append((self.tag, "end"))

    h1 = mm.register_notifier(Tagged("one"))
    mm.register_notifier(Tagged("two"))
    mm.register_notifier(object())              # no methods at all: fine
    mm.madvise(a, P, mln.MADV_DONTNEED)
    assert log == [("one", "start"), ("two", "start"), ("one", "end"), ("two", "end")]
    log.clear()
    h1.unregister()
    assert h1.id == 0
    h1.unregister()                             # twice: nothing
    mm.madvise(a, P, mln.MADV_DONTNEED)
    assert log == [("two", "start"), ("two", "end")]


def test_notifier_registration_waits_for_the_write_lock(mm):
    """Registration takes the write lock: it waits behind a reader."""
    holder = mm_hold(mm, "read")
    w = Worker(mm.register_notifier, Notes(), name="register").begin()
    try:
        wait_blocked(mm, w, 0, 1)
        assert not w.finished.is_set()
    finally:
        holder.done()
    handle = w.finish(TIMEOUT)
    assert handle.id > 0


def test_fault_takes_write_keyword_as_the_contract_spells_it(mm):
    ro = mm.mmap(mln.PAGE_SIZE, mln.PROT_READ, mln.MAP_PRIVATE | mln.MAP_ANONYMOUS)
    mm.fault(ro, write=False)
    with pytest.raises(mln.SegmentationFault):
        mm.fault(ro, write=True)
    rw = mm.mmap(mln.PAGE_SIZE, mln.PROT_READ | mln.PROT_WRITE, mln.MAP_PRIVATE | mln.MAP_ANONYMOUS)
    mm.fault(rw, write=True)
    mm.fault(rw, mln.Access.WRITE, write=True)
    with pytest.raises(ValueError, match="contradicts"):
        mm.fault(rw, mln.Access.EXEC, write=True)
    with pytest.raises(TypeError, match="write must be a bool"):
        mm.fault(rw, write="yes")


def test_populate_stops_with_eintr_for_a_killed_task(mm):
    """As gup's fatal_signal_pending(): a killed task's prefault stops (EINTR)
    before faulting anything more; revived, it populates."""
    a = mm.mmap(8 * P, RW, PRIV)
    me = mln.current_task()
    mln.task_kill(me)
    try:
        assert errno_of(mm.madvise, a, 8 * P, mln.MADV_POPULATE_WRITE) == errno.EINTR
        assert mm.nr_pages() == 0
    finally:
        mln.task_revive(me)
    mm.madvise(a, 8 * P, mln.MADV_POPULATE_WRITE)
    assert mm.nr_pages() == 8
