"""The kernel's mmap locking API as module-level functions taking an ``MM``.

Return conventions are the kernel's: the void functions return ``None``;
the killable ones ``0`` or ``-errno.EINTR`` (the current task was killed with
``task_kill``); the trylocks ``bool``.  Misuse (releasing what the task does
not hold, downgrading without the write lock, ...) raises ``LockError`` naming
the mm, the call and the state found; in debug mode the lock-order checker may
raise ``LockOrderError`` before the call touches the lock.

Each blocking call sleeps in C with the GIL released and returns to Python
when a signal arrives, so Ctrl-C works while blocked: the wait resumes, or the
exception propagates with the lock not held and the queue intact.
"""
from __future__ import annotations

import errno
import threading
from types import TracebackType
from typing import Any, NoReturn, Optional, Type

from ._args import C_INT, bad_args
from ._ffi import NO_DEADLINE, deadline_after, ffi, lib
from .debug import last_report
from .errors import LockOrderError, misuse_error
from .mm import MM

__all__ = [
    "mmap_assert_locked", "mmap_assert_write_locked", "mmap_init_lock",
    "mmap_lock_is_contended", "mmap_lock_speculate_retry", "mmap_lock_speculate_try_begin",
    "mmap_read_lock", "mmap_read_lock_killable", "mmap_read_locked", "mmap_read_trylock",
    "mmap_read_trylock_non_owner", "mmap_read_unlock", "mmap_read_unlock_non_owner",
    "mmap_write_downgrade", "mmap_write_lock", "mmap_write_lock_killable",
    "mmap_write_lock_nested", "mmap_write_locked", "mmap_write_trylock", "mmap_write_unlock",
]

_WRITE = lib.MMAP_OP_WRITE
_KILLABLE = lib.MMAP_OP_KILLABLE
_NESTED = lib.MMAP_OP_NESTED
_INTERRUPTED = lib.RWSEM_WAIT_INTERRUPTED
_SIGNALS = lib.RWSEM_WAIT_SIGNALS
_EINTR = -errno.EINTR
_ETIMEDOUT = -errno.ETIMEDOUT
_EBUSY = -errno.EBUSY
_EDEADLK = -errno.EDEADLK

# Bound once: each fast path is one cffi call and a test.
_begin = lib.mmap_lock_begin
_read_begin = lib.mmap_read_lock_begin
_write_begin = lib.mmap_write_lock_begin
_wait = lib.mmap_lock_wait
_cancel = lib.mmap_lock_cancel
_read_unlock = lib.mmap_read_unlock
_read_trylock = lib.mmap_read_trylock
_write_trylock = lib.mmap_write_trylock
_write_unlock = lib.mmap_write_unlock
_get_ident = threading.get_ident
_main_thread = threading.main_thread

_CHECK_TEXT = {
    lib.MMAP_CHECK_UNLOCKED: "not locked",
    lib.MMAP_CHECK_NOT_WRITE: "locked for read, not for write",
    lib.MMAP_CHECK_NOT_HELD: "locked, but not by the current task",
    lib.MMAP_CHECK_HELD_READ: "held by the current task for read, not for write",
}


def _signal_checkpoint() -> None:
    """Entering a Python function lets pending signal handlers run here."""


def _not_an_mm(op: str, mm: object) -> TypeError:
    return TypeError(f"{op}: mm must be an MM, not {type(mm).__name__}")


def _c_mm(mm: MM, op: str) -> Any:
    """``mm``'s C structure; TypeError naming ``op`` if ``mm`` is not an MM.
    (The fast paths below inline this as a try around their one C call: a
    try costs nothing until it catches.)"""
    try:
        return mm._mm
    except AttributeError:
        raise _not_an_mm(op, mm) from None


def _fail(mm: MM, rc: int, op: str) -> NoReturn:
    # In debug mode -EDEADLK is the checker refusing the call (it clears its
    # report on every tracked call, so a report found is this call's).
    if rc == _EDEADLK and lib.mmap_lock_is_debug(mm._mm):
        kind, text = last_report()
        if kind:
            raise LockOrderError(f"{op} on {mm._label()}: {text}", kind=kind, operation=op)
    raise misuse_error(mm._label(), rc, op, mm.lock_state())


def _acquire_slow(mm: MM, op: int, rc: int, name: str, deadline: int = NO_DEADLINE) -> int:
    """After ``mmap_lock_begin`` returned ``rc`` != 0: wait, or report why not.

    Returns 0 (acquired), -EBUSY (trylock), -EINTR (killable, killed) or
    -ETIMEDOUT (deadline); raises for misuse and lock-order reports.
    """
    if rc < 0:
        if rc == _EBUSY:
            return rc
        _fail(mm, rc, name)
    c_mm = mm._mm
    waiter = ffi.new("struct mmap_lock_waiter *")
    flags = _SIGNALS if _get_ident() == _main_thread().ident else 0
    try:
        rc = _wait(c_mm, waiter, op, deadline, flags)
        while rc == _INTERRUPTED:
            _signal_checkpoint()
            rc = _wait(c_mm, waiter, op, deadline, flags)
    except BaseException:
        # Whatever the wait's state (queued, granted meanwhile, or even
        # acquired by a call whose result the raising handler kept from
        # reaching rc), cancel leaves the caller holding nothing.
        _cancel(c_mm, waiter, op)
        raise
    if rc == 0 or rc == _ETIMEDOUT or (rc == _EINTR and op & _KILLABLE):
        return rc
    _fail(mm, rc, name)


def mmap_init_lock(mm: MM) -> None:
    """``MM()`` initialises its lock; on an unlocked, unawaited mm this resets
    the lock statistics.  LockError while the lock is held or awaited."""
    sem = ffi.addressof(_c_mm(mm, "mmap_init_lock"), "mmap_lock")
    if lib.rwsem_is_locked(sem) or lib.rwsem_is_contended(sem):
        _fail(mm, -errno.EBUSY, "mmap_init_lock")
    lib.mmap_lock_stats_reset(mm._mm)


def mmap_write_lock(mm: MM) -> None:
    """Acquire ``mm``'s lock for write, sleeping while anyone holds it."""
    try:
        rc = _write_begin(mm._mm)
    except AttributeError:
        raise _not_an_mm("mmap_write_lock", mm) from None
    if rc:
        _acquire_slow(mm, _WRITE, rc, "mmap_write_lock")


def mmap_write_lock_nested(mm: MM, subclass: int) -> None:
    """``mmap_write_lock`` with a lock-order subclass (0..7), for a second mm
    locked while the first is held (``fork`` uses ``SINGLE_DEPTH_NESTING``)."""
    c_mm = _c_mm(mm, "mmap_write_lock_nested")
    try:
        rc = _begin(c_mm, _WRITE | _NESTED, subclass)
    except (TypeError, OverflowError) as exc:
        raise bad_args(f"mmap_write_lock_nested on {mm._label()}", exc,
                       subclass=(subclass, *C_INT)) from None
    if rc:
        if rc == -errno.EINVAL:
            raise ValueError(f"mmap_write_lock_nested on {mm._label()}: subclass {subclass} "
                             f"is not in 0..{lib.RWSEM_MAX_SUBCLASSES - 1}")
        _acquire_slow(mm, _WRITE | _NESTED, rc, "mmap_write_lock_nested")


def mmap_write_lock_killable(mm: MM) -> int:
    """``mmap_write_lock``, or ``-errno.EINTR`` when the task is killed while waiting."""
    rc = _begin(_c_mm(mm, "mmap_write_lock_killable"), _WRITE | _KILLABLE, 0)
    if rc:
        return _acquire_slow(mm, _WRITE | _KILLABLE, rc, "mmap_write_lock_killable")
    return 0


def mmap_write_trylock(mm: MM) -> bool:
    """Acquire for write if nobody holds or awaits the lock; never sleeps."""
    try:
        return _write_trylock(mm._mm) == 1
    except AttributeError:
        raise _not_an_mm("mmap_write_trylock", mm) from None


def mmap_write_unlock(mm: MM) -> None:
    """Release the write lock the current task holds."""
    try:
        rc = _write_unlock(mm._mm)
    except AttributeError:
        raise _not_an_mm("mmap_write_unlock", mm) from None
    if rc:
        _fail(mm, rc, "mmap_write_unlock")


def mmap_write_downgrade(mm: MM) -> None:
    """Turn the current task's write lock into a read lock atomically; queued
    readers get in, queued writers keep waiting."""
    rc = lib.mmap_write_downgrade(_c_mm(mm, "mmap_write_downgrade"))
    if rc:
        _fail(mm, rc, "mmap_write_downgrade")


def mmap_read_lock(mm: MM) -> None:
    """Acquire ``mm``'s lock for read, sleeping while a writer holds or awaits it."""
    try:
        rc = _read_begin(mm._mm)
    except AttributeError:
        raise _not_an_mm("mmap_read_lock", mm) from None
    if rc:
        _acquire_slow(mm, 0, rc, "mmap_read_lock")


def mmap_read_lock_killable(mm: MM) -> int:
    """``mmap_read_lock``, or ``-errno.EINTR`` when the task is killed while waiting."""
    rc = _begin(_c_mm(mm, "mmap_read_lock_killable"), _KILLABLE, 0)
    if rc:
        return _acquire_slow(mm, _KILLABLE, rc, "mmap_read_lock_killable")
    return 0


def mmap_read_trylock(mm: MM) -> bool:
    """Acquire for read if no writer holds or awaits the lock; never sleeps."""
    try:
        return _read_trylock(mm._mm) == 1
    except AttributeError:
        raise _not_an_mm("mmap_read_trylock", mm) from None


def mmap_read_unlock(mm: MM) -> None:
    """Release a read lock the current task holds."""
    try:
        rc = _read_unlock(mm._mm)
    except AttributeError:
        raise _not_an_mm("mmap_read_unlock", mm) from None
    if rc:
        _fail(mm, rc, "mmap_read_unlock")


def mmap_read_trylock_non_owner(mm: MM) -> bool:
    """``mmap_read_trylock`` for a lock another task will release
    (``mmap_read_unlock_non_owner``); the lock-order checker does not track it."""
    return lib.mmap_read_trylock_non_owner(_c_mm(mm, "mmap_read_trylock_non_owner")) == 1


def mmap_read_unlock_non_owner(mm: MM) -> None:
    """Release a read lock taken by any task."""
    rc = lib.mmap_read_unlock_non_owner(_c_mm(mm, "mmap_read_unlock_non_owner"))
    if rc:
        _fail(mm, rc, "mmap_read_unlock_non_owner")


def _assert_held(mm: MM, write: int, name: str) -> None:
    r = lib.mmap_lock_check_held(_c_mm(mm, name), write)
    if r:
        raise AssertionError(f"{name}({mm._label()}): {_CHECK_TEXT[r]}; "
                             f"state: {mm.lock_state()}")


def mmap_assert_locked(mm: MM) -> None:
    """AssertionError unless the lock is held (in debug mode: by the current task)."""
    _assert_held(mm, 0, "mmap_assert_locked")


def mmap_assert_write_locked(mm: MM) -> None:
    """AssertionError unless write-locked (in debug mode: by the current task)."""
    _assert_held(mm, 1, "mmap_assert_write_locked")


def mmap_lock_is_contended(mm: MM) -> bool:
    """Whether anyone waits for the lock: a holder's hint to back off."""
    return bool(lib.mmap_lock_is_contended(_c_mm(mm, "mmap_lock_is_contended")))


def mmap_lock_speculate_try_begin(mm: MM) -> Optional[int]:
    """The sequence count to speculate on, or None at once when a writer holds the lock."""
    c_mm = _c_mm(mm, "mmap_lock_speculate_try_begin")
    seq = ffi.new("unsigned int *")
    return seq[0] if lib.mmap_lock_speculate_try_begin(c_mm, seq) else None


def mmap_lock_speculate_retry(mm: MM, seq: int) -> bool:
    """True when a write section began or ended since ``seq``: redo the speculation."""
    c_mm = _c_mm(mm, "mmap_lock_speculate_retry")
    try:
        return bool(lib.mmap_lock_speculate_retry(c_mm, seq))
    except (TypeError, OverflowError) as exc:
        raise bad_args(f"mmap_lock_speculate_retry on {mm._label()}", exc,
                       seq=(seq, 0, (1 << 32) - 1)) from None


class _Locked:
    """Context manager of ``mmap_read_locked`` / ``mmap_write_locked``.  It
    keeps no state between enter and exit, so one object (cached on the mm
    when there is no timeout) serves any number of threads and nestings."""

    __slots__ = ("_mm", "_op", "_timeout")

    def __init__(self, mm: MM, op: int, timeout: Optional[float]) -> None:
        _c_mm(mm, "mmap_write_locked" if op else "mmap_read_locked")
        self._mm = mm
        self._op = op
        self._timeout = timeout
        # A bad timeout fails now, contended or not.
        deadline_after(timeout, "mmap_write_locked" if op else "mmap_read_locked", mm)

    def __enter__(self) -> MM:
        mm = self._mm
        rc = _write_begin(mm._mm) if self._op else _read_begin(mm._mm)
        if rc:
            name = "mmap_write_lock" if self._op & _WRITE else "mmap_read_lock"
            deadline = deadline_after(self._timeout, name, mm)
            if _acquire_slow(mm, self._op, rc, name, deadline):
                raise TimeoutError(f"{name} on {mm._label()}: not acquired within "
                                   f"{self._timeout} s; state: {mm.lock_state()}")
        return mm

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        mm = self._mm
        if self._op:
            rc = _write_unlock(mm._mm)
            if rc:
                _fail(mm, rc, "mmap_write_unlock")
        else:
            rc = _read_unlock(mm._mm)
            if rc:
                _fail(mm, rc, "mmap_read_unlock")


def mmap_read_locked(mm: MM, timeout: Optional[float] = None) -> _Locked:
    """``with mmap_read_locked(mm):`` holds the read lock for the block;
    TimeoutError if ``timeout`` seconds pass first."""
    if timeout is None:
        try:
            guard = mm._read_locked
        except AttributeError:
            raise _not_an_mm("mmap_read_locked", mm) from None
        if guard is None:
            guard = mm._read_locked = _Locked(mm, 0, None)
        return guard
    return _Locked(mm, 0, timeout)


def mmap_write_locked(mm: MM, timeout: Optional[float] = None) -> _Locked:
    """``with mmap_write_locked(mm):`` holds the write lock for the block;
    TimeoutError if ``timeout`` seconds pass first."""
    if timeout is None:
        try:
            guard = mm._write_locked
        except AttributeError:
            raise _not_an_mm("mmap_write_locked", mm) from None
        if guard is None:
            guard = mm._write_locked = _Locked(mm, _WRITE, None)
        return guard
    return _Locked(mm, _WRITE, timeout)
