"""An MMU notifier that raises (issue 11): the operation completes (the PTEs
were going anyway), every other notifier still runs, and the operation's
Python call then raises NotifierError with the result it would have returned
and the notifier's exception as the cause.  It used to be printed and
swallowed, leaving the embedder's view of memory silently incoherent.  On
every lock design."""
from __future__ import annotations

import errno
from typing import Any, Callable, List, Tuple

import pytest

import mmap_lock_native as mln

P = mln.PAGE_SIZE
RW = mln.PROT_READ | mln.PROT_WRITE
PRIV = mln.MAP_PRIVATE | mln.MAP_ANONYMOUS

pytestmark = pytest.mark.usefixtures("every_design")


class Boom(Exception):
    pass


class Raising:
    """Raises Boom from ``callback`` while armed; logs every call."""

    def __init__(self, callback: str = "invalidate_range_start") -> None:
        self.callback = callback
        self.armed = True
        self.calls: List[Tuple[str, int, int]] = []

    def _hit(self, name: str, start: int, end: int) -> None:
        self.calls.append((name, start, end))
        if self.armed and name == self.callback:
            raise Boom(f"{name}({start:#x}, {end:#x})")

    def invalidate_range_start(self, start: int, end: int) -> None:
        self._hit("invalidate_range_start", start, end)

    def invalidate_range_end(self, start: int, end: int) -> None:
        self._hit("invalidate_range_end", start, end)


class Log:
    def __init__(self) -> None:
        self.calls: List[Tuple[str, int, int]] = []

    def invalidate_range_start(self, start: int, end: int) -> None:
        self.calls.append(("start", start, end))

    def invalidate_range_end(self, start: int, end: int) -> None:
        self.calls.append(("end", start, end))


def _setup() -> Tuple[mln.MM, int]:
    mm = mln.MM(name="notified")
    a = mm.mmap(4 * P, RW, PRIV)
    mm.write(a, b"x" * (4 * P))
    return mm, a


#: operation -> (call(mm, a), check(mm, a, result) that it completed)
OPERATIONS: "dict[str, Tuple[Callable[[mln.MM, int], Any], Callable[[mln.MM, int, Any], None]]]" = {
    "munmap": (lambda mm, a: mm.munmap(a, P),
               lambda mm, a, r: _assert_segv(mm, a)),
    "mprotect": (lambda mm, a: mm.mprotect(a, P, mln.PROT_READ),
                 lambda mm, a, r: _assert_prot(mm, a, mln.PROT_READ)),
    "madvise": (lambda mm, a: mm.madvise(a, P, mln.MADV_DONTNEED),
                lambda mm, a, r: _assert_eq(mm.read(a, 1), b"\0")),
    "mmap MAP_FIXED": (lambda mm, a: mm.mmap(P, RW, PRIV | mln.MAP_FIXED, a),
                       lambda mm, a, r: (_assert_eq(r, a), _assert_eq(mm.read(a, 1), b"\0"))),
    "fork": (lambda mm, a: mm.fork(),
             lambda mm, a, r: _assert_eq(r.read(a, 1), b"x")),
    "brk shrink": (lambda mm, a: mm.brk(mm.brk_value),
                   lambda mm, a, r: None),
    "close": (lambda mm, a: mm.close(),
              lambda mm, a, r: _assert_segv(mm, a)),
}


def _assert_eq(got: Any, want: Any) -> None:
    assert got == want


def _assert_segv(mm: mln.MM, a: int) -> None:
    with pytest.raises(mln.SegmentationFault):
        mm.read(a, 1)


def _assert_prot(mm: mln.MM, a: int, prot: int) -> None:
    assert [v.prot for v in mm.maps() if v.start <= a < v.end] == [prot]


@pytest.mark.parametrize("callback", ["invalidate_range_start", "invalidate_range_end"])
@pytest.mark.parametrize("op", [o for o in OPERATIONS if o != "brk shrink"])
def test_the_exception_is_raised_after_the_operation_completes(op: str, callback: str) -> None:
    mm, a = _setup()
    call, completed = OPERATIONS[op]
    bad, good = Raising(callback), Log()
    handle = mm.register_notifier(bad)
    mm.register_notifier(good)
    with pytest.raises(mln.NotifierError) as info:
        call(mm, a)
    err = info.value
    assert isinstance(err.__cause__, Boom)
    assert [type(e) for _, _, e in err.errors] == [Boom] * len(err.errors)
    assert err.errors[0][0] is bad and err.errors[0][1] == callback
    assert "completed" in str(err) and mm._label() in str(err)
    assert handle.errors and isinstance(handle.errors[-1], Boom)
    # The operation completed, and the other notifier saw every bracket, paired.
    bad.armed = False
    completed(mm, a, err.result)
    starts = [c for c in good.calls if c[0] == "start"]
    assert starts and len(starts) == len([c for c in good.calls if c[0] == "end"])
    # Nothing stays pending: the next call is clean.
    if op != "close":
        mm.read(a + P, 1)
        mm.close()


def test_a_brk_shrink_reraises_with_the_new_break() -> None:
    mm = mln.MM(name="heap")
    start = mm.brk_value
    mm.brk(start + 4 * P)
    mm.write(start, b"h")
    mm.register_notifier(Raising())
    with pytest.raises(mln.NotifierError) as info:
        mm.brk(start + P)
    assert info.value.result == start + P and mm.brk_value == start + P


def test_a_copy_on_write_break_reraises_from_write_and_fault() -> None:
    mm, a = _setup()
    child = mm.fork()
    bad = Raising()
    mm.register_notifier(bad)
    with pytest.raises(mln.NotifierError):
        mm.write(a, b"W")                       # breaks COW: notifier under the read lock
    assert mm.read(a, 1) == b"W" and child.read(a, 1) == b"x"
    with pytest.raises(mln.NotifierError):
        mm.fault(a + P, True)
    with pytest.raises(mln.NotifierError) as info:
        mm.view(a + 2 * P, 1, write=True)       # a write pin unshares first
    owned = info.value.result                    # the pins, owned by buffers: released with them
    assert len(owned) == 1
    del owned, info
    bad.armed = False
    mm.close()
    child.close()


def test_a_failed_operation_raises_its_own_error_caused_by_the_notifiers() -> None:
    """mprotect over a hole changes the mapped part (notifiers run), then fails
    with ENOMEM: the OSError is raised, its cause the NotifierError."""
    mm, a = _setup()
    mm.munmap(a + 2 * P, P)
    bad = Raising()
    mm.register_notifier(bad)
    with pytest.raises(OSError) as info:
        mm.mprotect(a, 4 * P, mln.PROT_READ)
    assert info.value.errno == errno.ENOMEM
    assert isinstance(info.value.__cause__, mln.NotifierError)
    bad.armed = False
    mm.close()


def test_keyboard_interrupt_in_a_notifier_is_reraised_as_itself() -> None:
    mm, a = _setup()

    class Interrupt:
        def invalidate_range_start(self, start: int, end: int) -> None:
            raise KeyboardInterrupt

    mm.register_notifier(Interrupt())
    with pytest.raises(KeyboardInterrupt):
        mm.munmap(a, P)
    assert [v.start for v in mm.maps()] == [a + P]      # it completed

