"""``RWSemaphore`` in debug mode: every owned acquisition and release goes
through the lock-order checker (``csrc/mmap_lock/lockdep.c``), the one the mm
locks use, so an order inverted between a semaphore and an mm's lock, or
between two semaphores, is reported whichever tasks took them.

``RWSemaphore()`` returns a :class:`CheckedRWSemaphore` when debug mode is on
at creation; a semaphore made outside debug mode keeps its plain fast paths.
The checker is told before an acquisition may block (that is when a deadlock
would be entered), the entry is withdrawn if the acquisition fails (trylock
refused, killed, timed out, interrupted), and a release by a task the checker
does not see holding the semaphore is reported before the lock is touched:
without tracking, the rwsem cannot tell that task from a real reader and would
silently release another task's hold.
"""
from __future__ import annotations

import errno
import warnings
from types import TracebackType
from typing import Any, Callable, Optional, Type, TypeVar

from ._ffi import deadline_after, ffi, lib
from .debug import _caller_site, last_report, lock_class_id
from .errors import LockOrderError, OwnerDiedError
from .rwsem import RWSemaphore

__all__ = ["CheckedRWSemaphore"]

_T = TypeVar("_T")
_NO_IP = ffi.NULL   # the site hook names the Python caller
_EDEADLK = -errno.EDEADLK


def _class_for(lock_class: Optional[str], name: Optional[str]) -> str:
    """The class a semaphore joins: its lock_class, its name, or where it was made."""
    if lock_class is not None:
        return lock_class
    if name:
        return name
    site = _caller_site()
    return f"RWSemaphore@{site[0]}:{site[1]}" if site else "RWSemaphore"


def _succeeded(result: object) -> bool:
    """Whether an acquisition's result means held: None (blocking calls),
    True (trylocks, timed calls) or 0 (killable calls)."""
    return result is None or result is True or (type(result) is int and result == 0)


class CheckedRWSemaphore(RWSemaphore):
    """An :class:`RWSemaphore` made in debug mode: the same API, with each
    owned acquisition and release checked and tracked per task."""

    __slots__ = ("_class_id",)

    def __init__(self, shared: bool = False, *, name: Optional[str] = None,
                 buffer: Any = None, offset: int = 0, attach: bool = False,
                 lock_class: Optional[str] = None) -> None:
        super().__init__(shared, name=name, buffer=buffer, offset=offset, attach=attach,
                         lock_class=lock_class)
        cls_name = _class_for(lock_class, name)
        try:
            self._class_id = lock_class_id(cls_name, f"RWSemaphore(lock_class={cls_name!r})")
        except ValueError:
            if lock_class is not None:
                raise
            # A class the caller did not ask for: better untracked than unusable.
            warnings.warn(f"{self._label()}: the lock-order checker's class table is full; "
                          f"this semaphore is not checked", RuntimeWarning, stacklevel=2)
            self._class_id = -1
            return
        self.lock_class = cls_name

    # -- the checker's side ---------------------------------------------------

    def _checked(self, op: str, write: bool, trylock: bool, subclass: int,
                 acquire: Callable[[], _T]) -> _T:
        """Run ``acquire`` as ``op``, announced to the checker first; the entry
        is withdrawn unless it ends holding the lock (OwnerDiedError holds it)."""
        if self._class_id < 0:
            return acquire()
        rc = lib.mln_lockdep_acquire(self._sem, self._class_id, subclass, write, trylock,
                                     _NO_IP)
        if rc:
            self._refused(rc, op)
        held = False
        try:
            result = acquire()
            held = _succeeded(result)
            return result
        except OwnerDiedError:
            held = True
            raise
        finally:
            if not held:
                lib.mln_lockdep_acquired(self._sem, 0)

    def _release_checked(self, op: str, release: Callable[[], None]) -> None:
        """Release as ``op``; a task the checker does not see holding it is
        reported first (in raise mode: refused, the lock untouched)."""
        if self._class_id < 0:
            release()
            return
        if not lib.mln_lockdep_held(self._sem, 0):
            rc = lib.mln_lockdep_release(self._sem, _NO_IP)
            if rc:
                self._refused(rc, op)
            release()    # warn or off mode: the call proceeds, as it would untracked
            return
        release()        # a refused release (LockError) leaves the entry as the hold
        lib.mln_lockdep_release(self._sem, _NO_IP)

    def _refused(self, rc: int, op: str) -> None:
        kind, text = last_report()
        if rc == _EDEADLK and kind:
            raise LockOrderError(f"{op} on {self._label()}: {text}", kind=kind, operation=op)
        self._fail(rc, op)

    # -- checked operations ---------------------------------------------------

    def down_read(self) -> None:
        self._checked("down_read", False, False, 0, super().down_read)

    def up_read(self) -> None:
        self._release_checked("up_read", super().up_read)

    def down_write(self) -> None:
        self._checked("down_write", True, False, 0, super().down_write)

    def up_write(self) -> None:
        self._release_checked("up_write", super().up_write)

    def down_read_trylock(self) -> bool:
        return self._checked("down_read_trylock", False, True, 0, super().down_read_trylock)

    def down_write_trylock(self) -> bool:
        return self._checked("down_write_trylock", True, True, 0, super().down_write_trylock)

    def down_read_killable(self) -> int:
        return self._checked("down_read_killable", False, False, 0, super().down_read_killable)

    def down_write_killable(self) -> int:
        return self._checked("down_write_killable", True, False, 0,
                             super().down_write_killable)

    def down_write_nested(self, subclass: int) -> None:
        nested = super().down_write_nested
        self._checked("down_write_nested", True, False, subclass, lambda: nested(subclass))

    def downgrade_write(self) -> None:
        super().downgrade_write()
        if self._class_id >= 0:
            lib.mln_lockdep_downgrade(self._sem)

    def acquire_read(self, timeout: Optional[float] = None) -> bool:
        base = super().acquire_read
        return self._checked("acquire_read", False, False, 0, lambda: base(timeout))

    def acquire_write(self, timeout: Optional[float] = None) -> bool:
        base = super().acquire_write
        return self._checked("acquire_write", True, False, 0, lambda: base(timeout))

    def read(self, timeout: Optional[float] = None) -> "_CheckedGuard":  # type: ignore[override]
        return _CheckedGuard(self, False, timeout)

    def write(self, timeout: Optional[float] = None) -> "_CheckedGuard":  # type: ignore[override]
        return _CheckedGuard(self, True, timeout)


# Docstrings of the checked operations are the plain ones: the semantics are the same.
for _name in ("down_read", "up_read", "down_write", "up_write", "down_read_trylock",
              "down_write_trylock", "down_read_killable", "down_write_killable",
              "down_write_nested", "downgrade_write", "acquire_read", "acquire_write", "read",
              "write"):
    getattr(CheckedRWSemaphore, _name).__doc__ = getattr(RWSemaphore, _name).__doc__


class _CheckedGuard:
    """``with sem.read():`` / ``with sem.write():`` on a checked semaphore.
    It holds the semaphore itself (debug mode trades the plain guards'
    care about reference cycles for simplicity)."""

    __slots__ = ("_sem", "_write", "_timeout")

    def __init__(self, sem: CheckedRWSemaphore, write: bool, timeout: Optional[float]) -> None:
        self._sem = sem
        self._write = write
        self._timeout = timeout
        if timeout is not None:  # a bad timeout fails now, contended or not
            deadline_after(timeout, "write" if write else "read", sem)

    def __enter__(self) -> CheckedRWSemaphore:
        sem, timeout = self._sem, self._timeout
        ok = sem.acquire_write(timeout) if self._write else sem.acquire_read(timeout)
        if not ok:
            op = "write" if self._write else "read"
            raise TimeoutError(f"{op} lock of {sem._label()} not acquired within "
                               f"{timeout} s; state: {sem.state()}")
        return sem

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        if self._write:
            self._sem.up_write()
        else:
            self._sem.up_read()
