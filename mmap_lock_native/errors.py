"""Exceptions raised by mmap_lock_native."""
from __future__ import annotations


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
