"""mmap_lock_native: the Linux kernel's rw_semaphore and mmap locking API in userspace.

A futex-based C core with kernel semantics (owner tracking, downgrade,
trylock, killable and timed waits, non-owner release, handoff against
starvation), bound with cffi.  Start with :class:`RWSemaphore`.
"""
from __future__ import annotations

from .errors import LockError
from .rwsem import SINGLE_DEPTH_NESTING, RWSemaphore
from .tasks import (TASK_ID_MAX, current_task, set_current_task, task_is_killed, task_kill,
                    task_revive)

__all__ = [
    "LockError",
    "RWSemaphore",
    "SINGLE_DEPTH_NESTING",
    "TASK_ID_MAX",
    "current_task",
    "set_current_task",
    "task_is_killed",
    "task_kill",
    "task_revive",
]

__version__ = "0.1.0"
