"""Calls the mm must refuse, cleanly: an operation whose lock acquisition is
refused fails with OSError(EDEADLK), changes nothing, and leaves the caller's
hold as it was; a call into an mm from one of its own MMU notifiers (which
run under its lock) is refused the same way, whatever the operation under
way.  Before, the operations ignored the refusal: under the caller's write
lock they ran, then released the caller's lock; close() or munmap() from a
notifier freed what mprotect was walking (a crash), and munmap() from a
copy-on-write break deadlocked."""
from __future__ import annotations

import errno
from typing import Any, Callable, Dict

import pytest

import mmap_lock_native as mln

P = mln.PAGE_SIZE
RW = mln.PROT_READ | mln.PROT_WRITE
PRIV = mln.MAP_PRIVATE | mln.MAP_ANONYMOUS

pytestmark = pytest.mark.usefixtures("every_design")


def _ops(mm: mln.MM, a: int) -> Dict[str, Callable[[], Any]]:
    """Every public operation that takes the mm's lock, aimed at mapping ``a``."""
    return {
        "mmap": lambda: mm.mmap(P, RW, PRIV),
        "munmap": lambda: mm.munmap(a, P),
        "mprotect": lambda: mm.mprotect(a, P, mln.PROT_READ),
        "brk": lambda: mm.brk(0x555555560000 + P),
        "madvise": lambda: mm.madvise(a, P, mln.MADV_DONTNEED),
        "fault": lambda: mm.fault(a, True),
        "read": lambda: mm.read(a, 8),
        "write": lambda: mm.write(a, b"x"),
        "get_user_pages": lambda: mm.get_user_pages(a, 1).unpin(),
        "fork": lambda: mm.fork().close(),
        "maps": lambda: mm.maps(),
        "map_count": lambda: mm.map_count,
        "brk_value": lambda: mm.brk_value,
        "set_max_map_count": lambda: mm.set_max_map_count(100),
        "register_notifier": lambda: mm.register_notifier(object()),
        "close": lambda: mm.close(),
    }


OPS = sorted(_ops(None, 0))  # type: ignore[arg-type]   (names only: nothing is called)


WRITE_SIDE = {"mmap", "munmap", "mprotect", "brk", "fork", "set_max_map_count",
              "register_notifier", "close"}
# Faults and guest accesses under per_vma need only the VMA's lock, which the
# caller's mmap write lock does not hold: they run (as they do in the kernel).
VMA_LOCKED = {"fault", "read", "write"}


@pytest.mark.parametrize("op", OPS)
def test_an_operation_under_the_callers_write_lock_is_refused(every_design, op):
    """Under mmap_write_locked(mm), each operation is refused with EDEADLK
    (or, for per_vma's faults, runs), and the caller still holds the lock."""
    mm = mln.MM(name="refusals")
    a = mm.mmap(4 * P, RW, PRIV)
    mm.write(a, b"data")
    before = mm.maps()
    with mln.mmap_write_locked(mm):
        if every_design == "per_vma" and op in VMA_LOCKED:
            _ops(mm, a)[op]()
        else:
            with pytest.raises(OSError) as info:
                _ops(mm, a)[op]()
            assert info.value.errno == errno.EDEADLK, info.value
            assert "refused" in str(info.value)
        mln.mmap_assert_write_locked(mm)       # the hold is still ours
        assert mm.lock_holders()[0] == mln.current_task()
    assert mm.lock_holders() == (None, 0)
    if op in WRITE_SIDE:
        assert mm.maps() == before             # refused: nothing changed
    mm.close()


class Reenter:
    """A notifier that calls every operation on its own mm once, from
    invalidate_range_start, and records what each one raised."""

    def __init__(self, mm: mln.MM, a: int, other: mln.MM) -> None:
        self.mm, self.a, self.other = mm, a, other
        self.raised: Dict[str, BaseException] = {}
        self.armed = False
        self.other_ok = False

    def invalidate_range_start(self, start: int, end: int) -> None:
        if not self.armed:
            return
        self.armed = False
        for name, fn in _ops(self.mm, self.a).items():
            try:
                fn()
            except BaseException as exc:  # recorded, checked by the test
                self.raised[name] = exc
        # Another mm is fair game from a notifier.
        b = self.other.mmap(P, RW, PRIV)
        self.other.write(b, b"ok")
        self.other_ok = self.other.read(b, 2) == b"ok"


def _assert_all_refused(r: Reenter) -> None:
    assert set(r.raised) == set(OPS), sorted(set(OPS) - set(r.raised))
    for name, exc in r.raised.items():
        assert isinstance(exc, OSError) and exc.errno == errno.EDEADLK, (name, exc)
    assert r.other_ok


def test_a_notifier_calling_into_its_own_mm_under_the_write_lock_is_refused():
    """From mprotect (write lock): every call into the mm is refused, and the
    mprotect completes as asked."""
    mm, other = mln.MM(name="notified"), mln.MM(name="other")
    a = mm.mmap(4 * P, RW, PRIV)
    mm.write(a, b"data")
    r = Reenter(mm, a, other)
    mm.register_notifier(r)
    r.armed = True
    mm.mprotect(a, 2 * P, mln.PROT_READ)
    _assert_all_refused(r)
    assert [(v.start, v.end, v.prot) for v in mm.maps()] == [
        (a, a + 2 * P, mln.PROT_READ), (a + 2 * P, a + 4 * P, RW)]
    assert mm.read(a, 4) == b"data"
    mm.close()
    other.close()


def test_a_notifier_calling_into_its_own_mm_under_the_read_lock_is_refused():
    """From a copy-on-write break (read lock): refused too (munmap used to
    deadlock here), and the write goes through."""
    mm, other = mln.MM(name="notified"), mln.MM(name="other")
    a = mm.mmap(4 * P, RW, PRIV)
    mm.write(a, b"data")
    child = mm.fork()
    r = Reenter(mm, a, other)
    mm.register_notifier(r)
    r.armed = True
    mm.write(a, b"DATA")                        # copies the page: notifier under read lock
    _assert_all_refused(r)
    assert mm.read(a, 4) == b"DATA" and child.read(a, 4) == b"data"
    child.close()
    mm.close()
    other.close()
