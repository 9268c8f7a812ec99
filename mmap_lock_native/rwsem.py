"""``RWSemaphore``: the kernel's rw_semaphore, backed by the C core.

Every blocking acquire sleeps in C with the GIL released.  When a signal
arrives (Ctrl-C) the C wait returns to Python *still queued*, Python runs its
signal handler, and the wait resumes in place; if the handler raises, the
waiter leaves the queue (waking whoever it was blocking) and the exception
propagates with the lock not held.
"""
from __future__ import annotations

import errno
import mmap
import threading
import weakref
from types import TracebackType
from typing import Any, NoReturn, Optional, Type

from ._args import as_int, check_name, flat_writable_bytes, int_in
from ._ffi import NO_DEADLINE, deadline_after, ffi, lib, strerror
from .errors import OwnerDiedError, misuse_error

__all__ = ["RWSemaphore", "SINGLE_DEPTH_NESTING"]

#: Subclass for ``down_write_nested`` when a second lock of a class is taken
#: while the first is held (``fork`` takes the child mm's lock this way).
SINGLE_DEPTH_NESTING: int = lib.SINGLE_DEPTH_NESTING

_INTERRUPTED = lib.RWSEM_WAIT_INTERRUPTED
_SIGNALS = lib.RWSEM_WAIT_SIGNALS
_KILLABLE = lib.RWSEM_WAIT_KILLABLE
_NON_OWNER = lib.RWSEM_WAIT_NON_OWNER

# Bound once: the fast paths below are a handful of bytecodes each.  These
# trylocks return 1 or 0 only: on a shared semaphore whose last write holder
# died they fail, and the blocking path (_slow) acquires and raises
# OwnerDiedError; down_*_trylock() use the reporting ones.
_read_trylock = lib.rwsem_try_read
_write_trylock = lib.rwsem_try_write
_read_trylock_reporting = lib.down_read_trylock
_write_trylock_reporting = lib.down_write_trylock
_up_read = lib.up_read
_up_write = lib.up_write
_down_wait = lib.rwsem_down_wait
_down_cancel = lib.rwsem_down_cancel

_get_ident = threading.get_ident
_main_thread = threading.main_thread

_SIZE = ffi.sizeof("struct rw_semaphore")
_ALIGN = ffi.alignof("struct rw_semaphore")

_READ_COUNT_SHIFT = 8
_READ_COUNT_MASK = 0x7FFFFF00
_WRITER = 1
_WAITERS = 2
_HANDOFF = 4
_DEAD = 8
_OWNER_DIED = 0x20
_EOWNERDEAD = -errno.EOWNERDEAD


# Why rwsem_validate() refused a buffer, by errno.
_ATTACH_WHY = {
    errno.EINVAL: "the bytes there hold no semaphore",
    errno.EPROTO: "the semaphore there has another layout version",
    errno.ENOTSUP: "the semaphore there was initialised for one process only",
    errno.EUCLEAN: "the semaphore there is corrupted",
}


def _signal_checkpoint() -> None:
    """Entering a Python function lets the interpreter run pending signal
    handlers (CPython checks at function entry), so a handler that raises
    (KeyboardInterrupt) does it here, inside the caller's ``try``."""


class RWSemaphore:
    """A reader-writer semaphore with Linux kernel ``rw_semaphore`` semantics.

    Writer-preferring with bounded waits both ways: once a writer waits, new
    readers queue behind it; a writer's release admits every queued reader as
    one batch; a waiter starved for 4 ms reserves the lock (handoff).

    ``shared=True`` places the semaphore in an anonymous shared mapping, so
    processes forked after its creation share it.  ``buffer=`` places it in a
    caller's writable, C-contiguous buffer (e.g. ``multiprocessing.shared_memory``'s
    ``SharedMemory.buf``) at byte ``offset`` (``ALIGNMENT``-aligned, whatever the
    buffer's item size or shape); another process attaches to it with
    ``attach=True``, which checks that the bytes there hold a process-shared
    semaphore of this version (ValueError otherwise: garbage, zeroes, a wrong
    offset or another layout are refused before anything waits on them).  The
    semaphore keeps the buffer exported while it lives.  ``name`` labels
    error messages and ``repr``.

    In debug mode (:func:`~mmap_lock_native.set_debug`, when the semaphore
    is made) it joins the lock-order checker with the mm locks: its class is
    ``lock_class`` if given, else its ``name``, else its creation site
    (``RWSemaphore@file:line``), as the kernel's lockdep keys a lock by its
    initialisation site.  Its holds are then tracked per task, and a call the
    checker reports (an inverted order against any other tracked lock, a
    second lock of one class without ``down_write_nested``, ``up_read`` or
    ``up_write`` by a task that holds nothing) raises
    :class:`~mmap_lock_native.LockOrderError` before it touches the lock
    (``set_lockdep_mode`` chooses warn or off instead).  Holds taken
    ``down_read_non_owner`` are never tracked: any task may release them.

    A process-shared semaphore survives the death of any process using it
    (killed holding it, waiting for it, or inside it): the survivors reclaim
    what the dead one held or awaited within about 40 ms.  After a process
    died holding it for write, acquisitions raise :class:`OwnerDiedError`
    *with the lock held*, until a writer's (which must repair the data).  A
    read hold taken ``down_read_non_owner`` belongs to no process and outlives
    its taker.  At most ``SLOTS`` processes hold or await it at once; more
    wait for one of them to leave.
    """

    __slots__ = ("_sem", "_keepalive", "name", "shared", "lock_class", "_read_guard",
                 "_write_guard", "__weakref__")

    #: Bytes a semaphore occupies in a caller's buffer.
    SIZE: int = _SIZE
    #: Required alignment of its offset in that buffer.
    ALIGNMENT: int = _ALIGN
    #: Processes that may hold or await one shared semaphore at the same time.
    SLOTS: int = lib.RWSEM_SLOTS

    def __new__(cls, *args: Any, **kwargs: Any) -> "RWSemaphore":
        if cls is RWSemaphore and lib.mln_get_debug():
            from .rwsem_checked import CheckedRWSemaphore  # only debug mode pays for it
            cls = CheckedRWSemaphore
        return super().__new__(cls)

    def __init__(self, shared: bool = False, *, name: Optional[str] = None,
                 buffer: Any = None, offset: int = 0, attach: bool = False,
                 lock_class: Optional[str] = None) -> None:
        self.name = check_name(name, "RWSemaphore()")
        if lock_class is not None and not isinstance(lock_class, str):
            raise TypeError(f"RWSemaphore(lock_class=...): a lock-order class is named by a "
                            f"str, not {type(lock_class).__name__} {lock_class!r:.40}")
        #: The checker's class in debug mode (None: the semaphore is not tracked).
        self.lock_class: Optional[str] = None
        if buffer is not None:
            self._sem, self._keepalive = self._place(buffer, offset)
            self.shared = True
        elif attach:
            raise ValueError("RWSemaphore(attach=True) needs the buffer= to attach to")
        elif shared:
            area = mmap.mmap(-1, max(_SIZE, mmap.PAGESIZE))  # MAP_SHARED | MAP_ANONYMOUS
            self._keepalive = area
            self._sem = ffi.from_buffer("struct rw_semaphore *", area)
            self.shared = True
        else:
            self._sem = ffi.new("struct rw_semaphore *")
            self._keepalive = None
            self.shared = False
        if attach:
            self._check_attached(buffer, offset)
        else:
            rc = lib.rwsem_init(self._sem, lib.RWSEM_SHARED if self.shared else 0)
            if rc:
                self._fail(rc, "rwsem_init")
        self._read_guard = _Guard(self, False, None)
        self._write_guard = _Guard(self, True, None)

    @classmethod
    def _view(cls, sem: Any, keepalive: Any, *, name: Optional[str] = None,
              shared: bool = False) -> "RWSemaphore":
        """A semaphore object for a ``struct rw_semaphore *`` already
        initialised (an mm's mmap_lock, or a guard's lock whose object is
        gone); ``keepalive`` owns that memory (None: ``sem`` owns it)."""
        self = object.__new__(RWSemaphore)  # never tracked: the mm's own lock, or a guard's
        self.name = name
        self.lock_class = None
        self._sem = sem
        self._keepalive = keepalive
        self.shared = shared
        self._read_guard = _Guard(self, False, None)
        self._write_guard = _Guard(self, True, None)
        return self

    def _place(self, buffer: Any, offset: Any) -> "tuple[Any, Any]":
        """The semaphore's memory: ``SIZE`` bytes at byte ``offset`` of ``buffer``."""
        named = f" {self.name!r}" if self.name else ""
        where = f"RWSemaphore{named} in a {type(buffer).__name__}"
        view = flat_writable_bytes(buffer, where)
        offset = as_int(offset, "offset", where)
        if not 0 <= offset <= view.nbytes - _SIZE:
            raise ValueError(f"{where}: offset {offset} leaves no room for {_SIZE} bytes "
                             f"in a buffer of {view.nbytes} bytes")
        sem = ffi.from_buffer("struct rw_semaphore *", view[offset:offset + _SIZE],
                              require_writable=True)
        if int(ffi.cast("uintptr_t", sem)) % _ALIGN:
            raise ValueError(f"{where}: byte offset {offset} puts it at "
                             f"{int(ffi.cast('uintptr_t', sem)):#x}, not {_ALIGN}-byte aligned")
        return sem, view

    def _check_attached(self, buffer: Any, offset: int) -> None:
        """ValueError unless the placed bytes hold an initialised process-shared
        semaphore of this layout (rwsem_validate)."""
        rc = lib.rwsem_validate(self._sem, lib.RWSEM_SHARED)
        if rc:
            named = f" {self.name!r}" if self.name else ""
            magic = lib.rwsem_magic_word(self._sem)
            why = _ATTACH_WHY.get(-rc, strerror(rc))
            raise ValueError(
                f"RWSemaphore{named}(attach=True) at byte offset {offset} of a "
                f"{type(buffer).__name__}: {why} (magic word {magic:#010x}, expected "
                f"{lib.RWSEM_MAGIC:#010x}); nothing was changed there")

    # -- fast paths ---------------------------------------------------------

    def down_read(self) -> None:
        """Acquire for read, sleeping while a writer holds or awaits it."""
        if not _read_trylock(self._sem):
            self._slow(False, NO_DEADLINE, 0, "down_read")

    def up_read(self) -> None:
        """Release a read hold."""
        rc = _up_read(self._sem)
        if rc:
            self._fail(rc, "up_read")

    def down_write(self) -> None:
        """Acquire for write, sleeping while anyone holds it."""
        if not _write_trylock(self._sem):
            self._slow(True, NO_DEADLINE, 0, "down_write")

    def up_write(self) -> None:
        """Release the write hold of the current task."""
        rc = _up_write(self._sem)
        if rc:
            self._fail(rc, "up_write")

    def down_read_trylock(self) -> bool:
        """Acquire for read if that needs no waiting; never blocks."""
        rc = _read_trylock_reporting(self._sem)
        if rc < 0:
            raise self._owner_died(False, 0, "down_read_trylock")
        return bool(rc)

    def down_write_trylock(self) -> bool:
        """Acquire for write if that needs no waiting; never blocks."""
        rc = _write_trylock_reporting(self._sem)
        if rc < 0:
            raise self._owner_died(True, 0, "down_write_trylock")
        return bool(rc)

    def down_read_killable(self) -> int:
        """Acquire for read; 0, or ``-errno.EINTR`` if the task is killed while waiting."""
        if _read_trylock(self._sem):
            return 0
        return self._slow(False, NO_DEADLINE, _KILLABLE, "down_read_killable")

    def down_write_killable(self) -> int:
        """Acquire for write; 0, or ``-errno.EINTR`` if the task is killed while waiting."""
        if _write_trylock(self._sem):
            return 0
        return self._slow(True, NO_DEADLINE, _KILLABLE, "down_write_killable")

    def down_write_nested(self, subclass: int) -> None:
        """``down_write``, with a lock-order subclass (0..7) for the checker."""
        int_in(subclass, "subclass", f"down_write_nested on {self._label()}", 0,
               lib.RWSEM_MAX_SUBCLASSES - 1)
        if not _write_trylock(self._sem):
            self._slow(True, NO_DEADLINE, 0, "down_write_nested")

    def downgrade_write(self) -> None:
        """Turn the current task's write hold into a read hold, atomically;
        queued readers are admitted with it, queued writers keep waiting."""
        rc = lib.downgrade_write(self._sem)
        if rc:
            self._fail(rc, "downgrade_write")

    def down_read_non_owner(self) -> None:
        """Acquire for read on behalf of no task: another task may release it
        (in a shared semaphore, a task of another process too)."""
        rc = lib.down_read_trylock_non_owner(self._sem)
        if rc < 0:  # acquired; a write holder had died
            raise self._owner_died(False, _NON_OWNER, "down_read_non_owner")
        if not rc:
            self._slow(False, NO_DEADLINE, _NON_OWNER, "down_read_non_owner")

    def up_read_non_owner(self) -> None:
        """Release a read hold taken by ``down_read_non_owner``, from any task."""
        rc = lib.up_read_non_owner(self._sem)
        if rc:
            self._fail(rc, "up_read_non_owner")

    # -- timed acquisition and context managers -----------------------------

    def acquire_read(self, timeout: Optional[float] = None) -> bool:
        """Acquire for read within ``timeout`` seconds (None: forever); False on expiry."""
        deadline = deadline_after(timeout, "acquire_read", self)  # contended or not
        if _read_trylock(self._sem):
            return True
        return self._slow(False, deadline, 0, "acquire_read") == 0

    def acquire_write(self, timeout: Optional[float] = None) -> bool:
        """Acquire for write within ``timeout`` seconds (None: forever); False on expiry."""
        deadline = deadline_after(timeout, "acquire_write", self)  # contended or not
        if _write_trylock(self._sem):
            return True
        return self._slow(True, deadline, 0, "acquire_write") == 0

    def read(self, timeout: Optional[float] = None) -> "_Guard":
        """``with sem.read(timeout=None):`` holds it for read; TimeoutError on expiry."""
        return self._read_guard if timeout is None else _Guard(self, False, timeout)

    def write(self, timeout: Optional[float] = None) -> "_Guard":
        """``with sem.write(timeout=None):`` holds it for write; TimeoutError on expiry."""
        return self._write_guard if timeout is None else _Guard(self, True, timeout)

    # -- queries ------------------------------------------------------------

    def is_locked(self) -> bool:
        """True while anyone holds it (a snapshot)."""
        return bool(lib.rwsem_is_locked(self._sem))

    def is_write_locked(self) -> bool:
        """True while a writer holds it (a snapshot)."""
        return bool(lib.rwsem_is_write_locked(self._sem))

    def is_contended(self) -> bool:
        """True while any task waits for it (a heuristic, as in the kernel)."""
        return bool(lib.rwsem_is_contended(self._sem))

    @property
    def owner(self) -> Optional[int]:
        """Task id of the write owner, or None when not write-locked."""
        task = lib.rwsem_write_owner(self._sem)
        return int(task) if task else None

    @property
    def readers(self) -> int:
        """Number of read holds (a snapshot; may include readers backing out)."""
        count = lib.rwsem_count(self._sem)
        return 0 if count & _WRITER else (count & _READ_COUNT_MASK) >> _READ_COUNT_SHIFT

    def _queue_info(self) -> "tuple[int, int, int, int]":
        """(rc, queued readers, queued writers, handoffs); rc is 0, or the
        C error when the wait lock stayed busy (-ETIMEDOUT) or is corrupted."""
        r = ffi.new("uint32_t *")
        w = ffi.new("uint32_t *")
        h = ffi.new("uint64_t *")
        rc = lib.rwsem_queue_info(self._sem, r, w, h)
        return rc, int(r[0]), int(w[0]), int(h[0])

    def queue(self) -> "tuple[int, int]":
        """(queued readers, queued writers), read under the wait lock.
        LockError if the wait lock cannot be had within a bound (0.2 s)."""
        rc, readers, writers, _ = self._queue_info()
        if rc:
            self._fail(rc, "queue")
        return readers, writers

    @property
    def handoffs(self) -> int:
        """Times the lock was handed to a starved waiter since creation."""
        rc, _, _, handoffs = self._queue_info()
        if rc:
            self._fail(rc, "handoffs")
        return handoffs

    def destroy(self) -> None:
        """Retire the semaphore; LockError while it is held or waited on.
        Afterwards every acquisition raises LockError."""
        rc = lib.rwsem_destroy(self._sem)
        if rc:
            self._fail(rc, "destroy")

    def state(self) -> str:
        """The state in words, e.g. ``'write-locked by task 4711; 2 readers queued'``."""
        count = lib.rwsem_count(self._sem)
        if count & _DEAD:
            return "destroyed"
        owner = lib.rwsem_owner_word(self._sem)
        if count & _WRITER:
            held = f"write-locked by task {owner >> 2}"
        elif count & _READ_COUNT_MASK:
            n = (count & _READ_COUNT_MASK) >> _READ_COUNT_SHIFT
            last = f", last reader task {owner >> 2}" if owner & 1 and owner >> 2 else ""
            held = f"read-locked by {n} reader{'s' if n != 1 else ''}{last}"
        else:
            held = "unlocked"
        rc, readers, writers, _ = self._queue_info()
        if rc:
            held += f"; queue unknown (wait lock: {strerror(rc)})"
        elif readers or writers:
            held += f"; queued: {readers} reader(s), {writers} writer(s)"
        if count & _HANDOFF:
            held += "; handoff pending"
        if count & _OWNER_DIED:
            held += "; a write holder died (acquisitions are told until a writer's)"
        return held

    def _label(self) -> str:
        sem = getattr(self, "_sem", None)
        where = hex(int(ffi.cast("uintptr_t", sem))) if sem is not None else "?"
        named = f" {self.name!r}" if getattr(self, "name", None) else ""
        return f"RWSemaphore{named} at {where}"

    def __repr__(self) -> str:
        return f"<{self._label()}: {self.state()}>"

    # -- slow paths -----------------------------------------------------------

    def _fail(self, rc: int, op: str) -> NoReturn:
        raise misuse_error(self._label(), rc, op, self.state())

    def _owner_died(self, write: bool, flags: int, op: str) -> OwnerDiedError:
        """The OwnerDiedError of acquisition ``op``, which holds the lock."""
        mode = "write" if write else "read"
        return OwnerDiedError(
            f"{op} on {self._label()}: acquired for {mode}, but a process had died holding it "
            f"for write: what it protects may be half updated; state: {self.state()}",
            lock=self, write=write, non_owner=bool(flags & _NON_OWNER), operation=op)

    def _slow(self, write: bool, deadline: int, flags: int, op: str) -> int:
        """Wait in C; between signals, let Python run its handlers (only the
        main thread runs them, so only its waits are signal-aware)."""
        sem = self._sem
        waiter = ffi.new("struct rwsem_waiter *")
        if _get_ident() == _main_thread().ident:
            flags |= _SIGNALS
        try:
            rc = _down_wait(sem, waiter, write, deadline, flags)
            while rc == _INTERRUPTED:
                _signal_checkpoint()
                rc = _down_wait(sem, waiter, write, deadline, flags)
        except BaseException:
            # Whatever the wait's state (queued, granted meanwhile, or even
            # acquired by a call whose result the raising handler kept from
            # reaching rc), cancel leaves the caller holding nothing.
            _down_cancel(sem, waiter)
            raise
        if rc == 0 or rc == -errno.EINTR or rc == -errno.ETIMEDOUT:
            return rc
        if rc == _EOWNERDEAD:
            raise self._owner_died(write, flags, op)
        self._fail(rc, op)


class _Guard:
    """Context manager of ``RWSemaphore.read()`` / ``write()``: the fast paths
    are inlined here, so a ``with`` block costs one cffi call each way.

    It holds the semaphore's memory (through its owner) for as long as it
    lives, so it can never lock memory that was freed and reused, and the
    semaphore object only weakly: the semaphore caches its guards, and a
    cycle would keep a caller's shared-memory buffer exported until the next
    GC.  Used after the semaphore object is gone, it stands in a new object
    for the same lock.

    On a shared semaphore whose last write holder died, ``__enter__`` raises
    OwnerDiedError with the lock held: the block does not run, and the
    handler releases it (``err.release()``)."""

    __slots__ = ("_ref", "_sem", "_memory", "_name", "_shared", "_write", "_timeout")

    def __init__(self, owner: RWSemaphore, write: bool, timeout: Optional[float]) -> None:
        self._ref = weakref.ref(owner)
        self._sem = owner._sem
        self._memory = owner._keepalive  # None when _sem owns the memory itself (ffi.new)
        self._name = owner.name
        self._shared = owner.shared
        self._write = write
        self._timeout = timeout
        if timeout is not None:  # a bad timeout fails now, contended or not
            deadline_after(timeout, "write" if write else "read", owner)

    def _semaphore(self) -> RWSemaphore:
        owner = self._ref()
        if owner is None:
            owner = RWSemaphore._view(self._sem, self._memory, name=self._name,
                                      shared=self._shared)
        return owner

    def __enter__(self) -> RWSemaphore:
        if self._write:
            if not _write_trylock(self._sem):
                self._enter_slow()
        elif not _read_trylock(self._sem):
            self._enter_slow()
        owner = self._ref()
        return owner if owner is not None else self._semaphore()

    def _enter_slow(self) -> None:
        owner, write, timeout = self._semaphore(), self._write, self._timeout
        op = "write" if write else "read"
        if owner._slow(write, deadline_after(timeout, op, owner), 0, op) != 0:
            raise TimeoutError(f"{op} lock of {owner._label()} not acquired within "
                               f"{timeout} s; state: {owner.state()}")

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        rc = _up_write(self._sem) if self._write else _up_read(self._sem)
        if rc:
            self._semaphore()._fail(rc, "up_write" if self._write else "up_read")
