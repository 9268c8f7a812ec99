"""Exceptions raised by mmap_lock_native."""
from __future__ import annotations

import errno as _errno
import os
from typing import Any


class LockError(RuntimeError):
    """A lock was misused: released when not held, released by a task that
    does not own it, downgraded without being write-held, destroyed while
    held, or acquired by the task that already write-holds it.

    The message names the lock, the operation and the state found; the lock
    is left as it was, usable.
    """

    def __init__(self, message: str, *, errno: int = 0, operation: str = "") -> None:
        super().__init__(message)
        #: The negative errno the C core returned, made positive (e.g. EPERM).
        self.errno = errno
        #: The operation that failed, e.g. ``"up_write"``.
        self.operation = operation


_WHY = {
    _errno.EPERM: "not held in the mode this release needs by the current task",
    _errno.EDEADLK: "the current task already holds it for write",
    _errno.EBUSY: "it is held or waited on",
    _errno.EINVAL: "it has been destroyed, its memory holds no semaphore, or an argument is "
                   "out of range",
    _errno.ETIMEDOUT: "its internal wait lock stayed busy",
    _errno.EXDEV: "it is shared with processes of another pid namespace, whose deaths it "
                  "could not tell",
}


def misuse_error(label: str, rc: int, op: str, state: str) -> LockError:
    """The LockError for C return code ``rc`` of ``op`` on the lock ``label``."""
    code = -rc
    name = f"{_errno.errorcode.get(code, str(code))} ({os.strerror(code)})"
    why = _WHY.get(code, name)
    return LockError(f"{op} on {label}: {why} ({name}); state: {state}", errno=code,
                     operation=op)


class OwnerDiedError(RuntimeError):
    """An acquisition of a process-shared semaphore succeeded, but a process
    had died holding it for write: what the lock protects may be half
    updated.

    The lock *is* held, in the mode of the call, as glibc's robust mutexes
    return ``EOWNERDEAD`` with the mutex held.  Every acquisition is told
    until a writer's: the writer told must repair the data; readers told
    cannot, and should not trust it.  Release the hold as usual, or with
    :meth:`release`::

        try:
            with sem.write():
                update(data)
        except mln.OwnerDiedError as err:
            repair(data)          # under the write lock err.lock is held for
            err.release()

    The message names the lock, the operation and the state found.
    """

    def __init__(self, message: str, *, lock: Any, write: bool, non_owner: bool = False,
                 operation: str = "") -> None:
        super().__init__(message)
        #: The semaphore, held by the current task (``write``: for write).
        self.lock = lock
        self.write = write
        #: The hold is a non-owner read hold (``down_read_non_owner``).
        self.non_owner = non_owner
        #: The acquisition that was told, e.g. ``"down_write"``.
        self.operation = operation
        self.errno = _errno.EOWNERDEAD

    def release(self) -> None:
        """Release the hold this acquisition took."""
        if self.write:
            self.lock.up_write()
        elif self.non_owner:
            self.lock.up_read_non_owner()
        else:
            self.lock.up_read()


class LockOrderError(LockError):
    """The lock-order checker (debug mode, ``set_lockdep_mode("raise")``)
    refused a call that could deadlock or that releases a lock the task does
    not hold.  The call did not touch the lock.

    The message is the checker's report: both locks, their classes and the
    acquisition sites (file:line of the Python caller).
    """

    def __init__(self, message: str, *, kind: str, operation: str = "") -> None:
        super().__init__(message, errno=_errno.EDEADLK, operation=operation)
        #: ``"recursion"``, ``"inversion"`` or ``"bad_unlock"``.
        self.kind = kind
