"""mmap_lock_native: the Linux kernel's rw_semaphore and mmap locking API in userspace.

A futex-based C core with kernel semantics (owner tracking, downgrade,
trylock, killable and timed waits, non-owner release, handoff against
starvation), bound with cffi.  :class:`RWSemaphore` is the semaphore;
:class:`MM` and the ``mmap_*`` functions are the kernel's mmap locking API,
with tracepoints (:mod:`mmap_lock_native.trace`), per-mm statistics
(``mm.lock_stats()``) and a lock-order checker in debug mode.
"""
from __future__ import annotations

from . import trace
from ._args import TIMEOUT_MAX
from .debug import (LockOrderWarning, get_debug, lockdep_mode, lockdep_reset, set_debug,
                    set_lockdep_mode)
from .errors import LockError, LockOrderError, OwnerDiedError
from .mm import DEFAULT_LOCK, LOCK_BACKENDS, MM
from .mmap_lock import (mmap_assert_locked, mmap_assert_write_locked, mmap_init_lock,
                        mmap_lock_is_contended, mmap_lock_speculate_retry,
                        mmap_lock_speculate_try_begin, mmap_read_lock, mmap_read_lock_killable,
                        mmap_read_locked, mmap_read_trylock, mmap_read_trylock_non_owner,
                        mmap_read_unlock, mmap_read_unlock_non_owner, mmap_write_downgrade,
                        mmap_write_lock, mmap_write_lock_killable, mmap_write_lock_nested,
                        mmap_write_locked, mmap_write_trylock, mmap_write_unlock)
from .rwsem import SINGLE_DEPTH_NESTING, RWSemaphore
from .stats import LockStats
from .tasks import (TASK_ID_MAX, current_task, set_current_task, task_is_killed, task_kill,
                    task_revive)
from .address_space import PinnedPages
from .guest import ReadLocked
from .notifiers import NotifierError, NotifierHandle
from .pins import Pin, PinnedRange
from .secondary import Invalidation, InvalidationReason, SecondaryMMU
from .vm import (MADV_COLD, MADV_DODUMP, MADV_DOFORK, MADV_DONTDUMP, MADV_DONTFORK,
                 MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE, MADV_HUGEPAGE,
                 MADV_KEEPONFORK, MADV_NOHUGEPAGE, MADV_NORMAL, MADV_PAGEOUT,
                 MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_RANDOM, MADV_SEQUENTIAL,
                 MADV_WILLNEED, MADV_WIPEONFORK,
                 MAP_32BIT, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN,
                 MAP_HUGETLB, MAP_LOCKED, MAP_NONBLOCK, MAP_NORESERVE, MAP_POPULATE, MAP_PRIVATE,
                 MAP_SHARED, MAP_STACK, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE,
                 PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_NONE, PROT_READ, PROT_WRITE,
                 SEGV_ACCERR, SEGV_MAPERR,
                 TASK_SIZE, VMA, Access, HostRange, SegmentationFault)

__all__ = [
    "Access", "HostRange", "Invalidation", "InvalidationReason",
    "MAP_32BIT", "MAP_GROWSDOWN", "MAP_HUGETLB", "MAP_LOCKED", "MAP_NONBLOCK", "MAP_NORESERVE",
    "MAP_POPULATE", "MAP_STACK", "MREMAP_DONTUNMAP", "MREMAP_FIXED", "MREMAP_MAYMOVE",
    "Pin", "PinnedRange", "ReadLocked", "SecondaryMMU",
    "DEFAULT_LOCK", "LOCK_BACKENDS",
    "MADV_COLD", "MADV_DODUMP", "MADV_DONTDUMP", "MADV_DONTNEED_LOCKED", "MADV_FREE",
    "MADV_HUGEPAGE", "MADV_NOHUGEPAGE", "MADV_PAGEOUT",
    "MADV_DOFORK", "MADV_DONTFORK", "MADV_KEEPONFORK", "MADV_WIPEONFORK",
    "MADV_POPULATE_READ", "MADV_POPULATE_WRITE",
    "MADV_DONTNEED",
    "MADV_NORMAL",
    "MADV_RANDOM",
    "MADV_SEQUENTIAL",
    "MADV_WILLNEED",
    "MAP_ANONYMOUS",
    "MAP_FIXED",
    "MAP_FIXED_NOREPLACE",
    "MAP_PRIVATE",
    "MAP_SHARED",
    "NotifierError",
    "NotifierHandle",
    "PAGE_SIZE",
    "PROT_EXEC",
    "PROT_GROWSDOWN",
    "PROT_GROWSUP",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "PinnedPages",
    "SEGV_ACCERR",
    "SEGV_MAPERR",
    "SegmentationFault",
    "TASK_SIZE",
    "TIMEOUT_MAX",
    "VMA",
    "LockError",
    "LockOrderError",
    "LockOrderWarning",
    "LockStats",
    "MM",
    "OwnerDiedError",
    "RWSemaphore",
    "SINGLE_DEPTH_NESTING",
    "TASK_ID_MAX",
    "current_task",
    "get_debug",
    "lockdep_mode",
    "lockdep_reset",
    "mmap_assert_locked",
    "mmap_assert_write_locked",
    "mmap_init_lock",
    "mmap_lock_is_contended",
    "mmap_lock_speculate_retry",
    "mmap_lock_speculate_try_begin",
    "mmap_read_lock",
    "mmap_read_lock_killable",
    "mmap_read_locked",
    "mmap_read_trylock",
    "mmap_read_trylock_non_owner",
    "mmap_read_unlock",
    "mmap_read_unlock_non_owner",
    "mmap_write_downgrade",
    "mmap_write_lock",
    "mmap_write_lock_killable",
    "mmap_write_lock_nested",
    "mmap_write_locked",
    "mmap_write_trylock",
    "mmap_write_unlock",
    "set_current_task",
    "set_debug",
    "set_lockdep_mode",
    "task_is_killed",
    "task_kill",
    "task_revive",
    "trace",
]

__version__ = "0.1.0"
