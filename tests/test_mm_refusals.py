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
        "madvise_dontfork": lambda: mm.madvise(a + P, P, mln.MADV_DONTFORK),   # write lock
        "madvise_populate": lambda: mm.madvise(a, 2 * P, mln.MADV_POPULATE_WRITE),
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
        "find_vma": lambda: mm.find_vma(a),
        "vma_lookup": lambda: mm.vma_lookup(a),
        "pin_page": lambda: mm.pin_page(a).unpin(),
        "vma_host_range": lambda: mm.vma_host_range(a),
        "mremap": lambda: mm.mremap(a, P, P),
        "sys_munmap": lambda: mm.sys_munmap(a, P),
        "read_locked": lambda: mm.read_locked().__enter__().__exit__(None, None, None),
        "secondary_mmu": lambda: mm.secondary_mmu().close(),
        "close": lambda: mm.close(),
    }


OPS = sorted(_ops(None, 0))  # type: ignore[arg-type]   (names only: nothing is called)


WRITE_SIDE = {"mmap", "munmap", "mprotect", "brk", "fork", "set_max_map_count",
              "register_notifier", "close", "mremap", "sys_munmap", "secondary_mmu",
              "madvise_dontfork"}
# Faults and guest accesses under per_vma need only the VMA's lock, which the
# caller's mmap write lock does not hold: they run (as they do in the kernel).
VMA_LOCKED = {"fault", "read", "write", "vma_lookup", "pin_page", "vma_host_range"}


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


# -- the caller's own read hold (issue 10 B7) -------------------------------------------------

@pytest.mark.parametrize("op", sorted(WRITE_SIDE))
def test_a_write_operation_under_the_callers_read_lock_is_refused(op):
    """A write-type operation while this task holds the read lock would wait
    for itself forever (it used to): refused with EDEADLK, the read hold
    kept, nothing changed."""
    mm = mln.MM(name="self-read")
    a = mm.mmap(4 * P, RW, PRIV)
    before = mm.maps()
    with mln.mmap_read_locked(mm):
        with pytest.raises(OSError) as info:
            _ops(mm, a)[op]()
        assert info.value.errno == errno.EDEADLK, info.value
        mln.mmap_assert_locked(mm)
        assert mm.lock_holders()[1] >= 1
    assert mm.lock_holders() == (None, 0)
    assert mm.maps() == before
    mm.mmap(P, RW, PRIV)                        # and afterwards the lock works
    mm.close()


def test_the_raw_api_refuses_a_write_lock_under_the_callers_read_lock():
    """The same at the mmap locking API: mmap_write_lock while holding the read
    lock is a LockError (EDEADLK), not a hang; trylock just fails."""
    mm = mln.MM(name="self-read-api")
    mln.mmap_read_lock(mm)
    try:
        assert not mln.mmap_write_trylock(mm)
        with pytest.raises(mln.LockError):
            mln.mmap_write_lock(mm)
        with pytest.raises(mln.LockError):
            with mln.mmap_write_locked(mm, timeout=5):
                pass
    finally:
        mln.mmap_read_unlock(mm)
    mln.mmap_write_lock(mm)
    mln.mmap_write_unlock(mm)
    mm.close()


# -- Ctrl-C and kill reach an operation blocked on the mm's lock (issue 10 B7, B10) -----------

UNMAPPED = 0x30000000


def _blocking_ops(mm: mln.MM) -> Dict[str, Callable[[], Any]]:
    """Operations that wait for the mm's lock on every design, behind a writer
    (a read of an unmapped address misses per_vma's VMA lock and falls back)."""
    return {
        "read": lambda: mm.read(UNMAPPED, 8),
        "mmap": lambda: mm.mmap(P, RW, PRIV),
        "maps": lambda: mm.maps(),
        "fork": lambda: mm.fork().close(),
        "madvise": lambda: mm.madvise(UNMAPPED, P, mln.MADV_WILLNEED),
        "madvise_dontfork": lambda: mm.madvise(UNMAPPED, P, mln.MADV_DONTFORK),
        # The guest-memory entry points (issue 11): the same pattern.
        "find_vma": lambda: mm.find_vma(UNMAPPED),
        "vma_lookup": lambda: mm.vma_lookup(UNMAPPED),
        "fault_killable": lambda: mm.fault(UNMAPPED, killable=True),
        "pin_page": lambda: mm.pin_page(UNMAPPED),
        "vma_host_range": lambda: mm.vma_host_range(UNMAPPED),
        "mremap": lambda: mm.mremap(UNMAPPED, P, P),
        "read_locked": lambda: mm.read_locked().__enter__(),
        "secondary_mmu": lambda: mm.secondary_mmu().close(),
        "sys_munmap": lambda: mm.sys_munmap(UNMAPPED, P),
    }


FAILS_UNMAPPED = {"read", "madvise", "madvise_dontfork", "fault_killable", "pin_page",
                  "vma_host_range", "mremap"}


@pytest.mark.parametrize("op", ["read", "mmap", "maps", "fork", "madvise", "madvise_dontfork",
                                "find_vma",
                                "vma_lookup", "fault_killable", "pin_page", "vma_host_range",
                                "mremap", "read_locked", "secondary_mmu", "sys_munmap"])
def test_ctrl_c_reaches_an_operation_blocked_on_the_lock(op):
    """The main thread blocked in an mm operation behind another thread's write
    lock gets KeyboardInterrupt at once (it used to wait for the holder), with
    nothing held and nothing changed; the operation works afterwards."""
    import signal
    import threading
    import time

    from conftest import TIMEOUT, call_while_signalled, mm_hold

    mm = mln.MM(name="ctrl-c")
    before = mm.maps()
    h = mm_hold(mm, "write")
    started, returned = threading.Event(), threading.Event()
    fn = _blocking_ops(mm)[op]
    took = [0.0]

    def signaller():
        try:
            assert started.wait(TIMEOUT)
            time.sleep(0.05)        # into the wait (a premature signal is harmless)
            t0 = time.monotonic()
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            assert returned.wait(TIMEOUT), "the blocked call did not return"
            took[0] = time.monotonic() - t0
        except BaseException:
            h.unlock()              # so that the main thread cannot hang
            raise

    def call():
        started.set()
        fn()

    caught = call_while_signalled(signal.SIGINT, signal.default_int_handler, signaller,
                                  call, returned)
    try:
        assert isinstance(caught, KeyboardInterrupt), caught
        assert took[0] < 1.0, f"{op}: interrupted after {took[0]:.2f} s"
        assert mm.lock_holders() == (h.task, 0)     # only the holder
    finally:
        h.done()
    assert mm.maps() == before
    if op == "read_locked":
        with mm.read_locked():
            pass
    elif op not in FAILS_UNMAPPED:          # the others fail on an unmapped address
        _blocking_ops(mm)[op]()
    mm.close()


def test_task_kill_reaches_an_operation_blocked_on_the_lock():
    """A killed task's blocked operation returns EINTR (killable, as the
    kernel's mmap/munmap/mprotect are), nothing held."""
    from conftest import TIMEOUT, Worker, mm_hold, wait_blocked

    mm = mln.MM(name="killed")
    h = mm_hold(mm, "write")
    victim = Worker(lambda: mm.mmap(P, RW, PRIV), name="victim").begin()
    killed = False
    try:
        wait_blocked(mm, victim, 0, 1)
        mln.task_kill(victim.task)
        killed = True
        with pytest.raises(OSError) as info:
            victim.finish(TIMEOUT)
        assert info.value.errno == errno.EINTR
    finally:
        if killed:
            mln.task_revive(victim.task)
        h.done()
    assert mm.lock_holders() == (None, 0) and mm.map_count == 0
    mm.close()


def test_register_notifier_racing_close_raises_only_oserror():
    """register_notifier racing close(): each registration either succeeds or
    fails with OSError (the mm closed first), never a KeyError from the
    handle bookkeeping (382 in 677k calls before)."""
    import threading

    from conftest import TIMEOUT, Worker

    bad: list = []
    for _ in range(200):
        mm = mln.MM(name="race-close")
        go = threading.Barrier(2, timeout=TIMEOUT)

        def register():
            go.wait()
            for _ in range(20):
                try:
                    mm.register_notifier(object())
                except OSError:
                    pass
                except BaseException as exc:   # recorded: the failure this test is about
                    bad.append(exc)

        w = Worker(register, name="register").begin()
        go.wait()
        mm.close()
        w.finish(TIMEOUT)
    assert bad == [], bad[:3]
