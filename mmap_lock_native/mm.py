"""``MM``: an emulated ``mm_struct`` (for now, its mmap_lock and what the
instrumentation keeps about it)."""
from __future__ import annotations

import weakref
from typing import Any, Dict, Optional

from ._args import as_int, check_name
from ._ffi import ffi, lib
from .address_space import AddressSpace
from .debug import lock_class_id
from .guest import GuestMemory
from .rwsem import RWSemaphore
from .stats import LockStats
from .syscalls import Syscalls

__all__ = ["MM"]

# mm address -> MM, so that C callbacks (trace hooks) can hand Python the object.
_by_address: "weakref.WeakValueDictionary[int, MM]" = weakref.WeakValueDictionary()

#: ``MM(lock=...)``: the lock designs behind the same API, by the one name
#: each has everywhere (the C core's ``mmap_lock_backend_name``).
#:
#: - ``"per_vma"`` (the default, :data:`DEFAULT_LOCK`): the rwsem, and faults
#:   that find their VMA without it and read-lock only that VMA (Linux 6.4+);
#:   they fall back to the rwsem when that fails;
#: - ``"rwsem"``: the 5.8 design, our rw_semaphore alone;
#: - ``"bravo"``: the rwsem with a reader bias (Dice & Kogan 2019): reads
#:   write no shared line until a writer revokes the bias;
#: - ``"pthread_rwlock"``, ``"pthread_rwlock_writer"``, ``"mutex"``: glibc's
#:   locks, the baselines.  They downgrade by unlock + relock, notice a kill,
#:   a timeout or Ctrl-C within 50 ms (they cannot be woken early) and never
#:   report contention.
LOCK_BACKENDS = {ffi.string(lib.mmap_lock_backend_name(i)).decode(): i
                 for i in range(lib.MMAP_LOCK_NR_BACKENDS)}
# The designs whose mmap lock is our rwsem (mm.mmap_lock is the lock in use).
_RWSEM_DESIGNS = {LOCK_BACKENDS[d] for d in ("rwsem", "per_vma", "bravo")}
#: The design an ``MM()`` gets when ``lock`` is not given: per-VMA locks, as
#: current kernels (the C core's mm_alloc() default too).
DEFAULT_LOCK = str(ffi.string(lib.mmap_lock_backend_name(lib.MMAP_LOCK_DEFAULT_BACKEND)).decode())


def mm_from_address(address: int) -> "Optional[MM]":
    """The live MM at this C address, or None."""
    return _by_address.get(address)


class MM(AddressSpace, GuestMemory, Syscalls):
    """An emulated address space; ``mm.mmap_lock`` is its ``RWSemaphore``.

    Lock it with the kernel-named functions (``mmap_read_lock(mm)``, ...) or
    the context managers ``mmap_read_locked(mm)`` / ``mmap_write_locked(mm)``:
    they fire the tracepoints, keep the statistics and, in debug mode, feed
    the lock-order checker.  Calling ``mm.mmap_lock.down_read()`` directly
    bypasses all three, as ``down_read(&mm->mmap_lock)`` does in the kernel.

    ``stats=False`` turns the statistics off; ``debug`` overrides
    :func:`set_debug` for this mm; ``lock_class`` puts its lock in a named
    class of the lock-order checker (all mms share one class by default);
    ``name`` labels messages.  ``lock`` chooses the lock design
    (:data:`LOCK_BACKENDS`): the same API, statistics and tracepoints over
    each (``None``: :data:`DEFAULT_LOCK`).  ``host_backing=True`` keeps each
    private anonymous VMA's pages in one contiguous host range, so that
    :meth:`vma_host_range` gives an emulator a whole VMA to map at once
    (``docs/mm.md``, "Contiguous host backing"); a fork keeps it.
    """

    __slots__ = ("_mm", "_owner", "name", "_lock_view", "_address", "_read_locked",
                 "_write_locked", "__weakref__")

    def __init__(self, *, stats: bool = True, debug: Optional[bool] = None,
                 lock_class: Optional[str] = None, name: Optional[str] = None,
                 lock: Optional[str] = None, host_backing: bool = False) -> None:
        flags = 0 if stats else lib.MMAP_LOCK_NOSTATS
        if debug is not None:
            flags |= lib.MMAP_LOCK_DEBUG if debug else lib.MMAP_LOCK_NODEBUG
        check_name(name, "MM()")
        if lock is None:
            lock = DEFAULT_LOCK     # read now: the module's default may be changed
        if not isinstance(lock, str):
            raise TypeError(f"MM(lock=...): the lock is named by a str, not "
                            f"{type(lock).__name__}; one of {', '.join(LOCK_BACKENDS)}")
        if lock not in LOCK_BACKENDS:
            raise ValueError(f"MM(lock={lock!r}): choose one of {', '.join(LOCK_BACKENDS)}")
        if lock_class is not None and not isinstance(lock_class, str):
            raise TypeError(f"MM(lock_class=...): a lock-order class is named by a str, not "
                            f"{type(lock_class).__name__} {lock_class!r:.40}")
        if not isinstance(host_backing, bool):
            raise TypeError(f"MM(host_backing=...): a bool, not {type(host_backing).__name__}")
        raw = lib.mm_alloc_opts(flags, LOCK_BACKENDS[lock],
                                lib.MM_HOST_BACKING if host_backing else 0)
        if raw == ffi.NULL:
            what = " (or no memfd_create for the frame file)" if host_backing else ""
            raise MemoryError(f"mm_alloc: out of memory{what}")
        self._bind(raw, name)
        if lock_class is not None:
            lib.mmap_lock_set_class(raw, lock_class_id(lock_class, f"MM(lock_class={lock_class!r})"))

    def _bind(self, raw: Any, name: Optional[str]) -> None:
        self.name = name
        # Calls take the plain pointer: cffi converts a gc-wrapped cdata more
        # slowly (about 10 ns a call); _owner frees the mm with this object.
        self._owner = ffi.gc(raw, _free)
        self._mm = raw
        self._address = int(ffi.cast("uintptr_t", raw))
        self._lock_view: Optional[RWSemaphore] = None
        # mmap_read_locked(mm) / mmap_write_locked(mm) guards, made on first use.
        self._read_locked: Optional[Any] = None
        self._write_locked: Optional[Any] = None
        _by_address[self._address] = self

    @classmethod
    def _adopt(cls, raw: Any, *, name: Optional[str] = None) -> "MM":
        """An MM object owning ``raw``, an mm the C core made (a fork child)."""
        self = cls.__new__(cls)
        self._bind(raw, name)
        return self

    @property
    def host_backing(self) -> bool:
        """Whether private anonymous VMAs have contiguous host backing
        (``MM(host_backing=True)``, or a fork of such an mm)."""
        return bool(lib.mm_host_backed(self._mm))

    @staticmethod
    def host_frames_in_use() -> int:
        """Frames (4 KiB) of the process-wide frame file behind every
        host-backed mm, handed out and not yet given back: a window's pages,
        touched or not, and pages that pins keep after munmap."""
        return int(lib.mm_host_frames())

    @property
    def lock_backend(self) -> str:
        """The lock implementation's name."""
        ident = lib.mmap_lock_backend_id(self._mm)
        return next(k for k, v in LOCK_BACKENDS.items() if v == ident)

    @property
    def mmap_lock(self) -> RWSemaphore:
        """The mm's semaphore (direct use bypasses instrumentation).  With
        another lock backend it is not the lock in use: see lock_state()."""
        if self._lock_view is None:
            self._lock_view = RWSemaphore._view(ffi.addressof(self._mm, "mmap_lock"), self._owner,
                                                name=f"{self._label()}.mmap_lock")
        return self._lock_view

    def lock_stats(self) -> LockStats:
        """A snapshot of this mm's lock statistics since the last reset."""
        return LockStats(self)

    def vma_lock_stats(self) -> Dict[str, int]:
        """How faults fared with the per-VMA lock since the last statistics
        reset (``lock="per_vma"``; all zero for other designs), as the
        kernel's vmstat counts them: ``success`` (handled under the VMA
        lock), ``abort`` (the VMA was being changed, or had gone), ``retry``
        (the fault needed the mmap lock after all), ``miss`` (no VMA found
        without the lock).  All but ``success`` fell back to the mmap lock."""
        st = self.lock_stats()
        return {"success": st.vma_lock_success, "abort": st.vma_lock_abort,
                "retry": st.vma_lock_retry, "miss": st.vma_lock_miss}

    def reset_lock_stats(self) -> None:
        """Zero this mm's lock statistics."""
        lib.mmap_lock_stats_reset(self._mm)

    def set_lock_stats(self, enabled: bool) -> None:
        """Turn this mm's lock statistics on or off."""
        lib.mmap_lock_stats_set_enabled(self._mm, 1 if enabled else 0)

    def set_hold_sampling(self, period: int) -> None:
        """Time one hold in ``period`` acquisitions per thread (a power of two,
        1 to 2**20; 1 times every hold).  The default is 64."""
        period = as_int(period, "period", f"set_hold_sampling on {self._label()}")
        if period < 1 or period > 1 << 20 or period & (period - 1):
            raise ValueError(f"set_hold_sampling on {self._label()}: period must be a "
                             f"power of two from 1 to {1 << 20}, not {period!r}")
        lib.mmap_lock_stats_set_hold_sampling(self._mm, period.bit_length() - 1)

    @property
    def address(self) -> int:
        """The C address of the mm_struct (what trace events carry)."""
        return self._address

    def _label(self) -> str:
        named = f" {self.name!r}" if self.name else ""
        return f"MM{named} at {self._address:#x}"

    def lock_holders(self) -> "tuple[Optional[int], int]":
        """(task id of the write holder or None, number of read holds), whatever
        the design (bravo's fast-path readers included): a racy snapshot."""
        writer = ffi.new("uint64_t *")
        readers = ffi.new("uint32_t *")
        lib.mmap_lock_holders(self._mm, writer, readers)
        return (writer[0] or None, readers[0])

    def lock_state(self) -> str:
        """The lock's state in words, whatever the design (e.g. ``'read-locked by
        2 readers'``); for the rwsem designs, ``mmap_lock.state()``."""
        if lib.mmap_lock_backend_id(self._mm) in _RWSEM_DESIGNS:
            fast = lib.mmap_lock_fast_readers(self._mm)
            state = self.mmap_lock.state()
            return f"{state} (+{fast} on bravo's fast path)" if fast else state
        writer, readers = self.lock_holders()
        if writer:
            return f"{self.lock_backend}: write-locked by task {writer}"
        if readers:
            return f"{self.lock_backend}: read-locked by {readers} reader{'s' if readers != 1 else ''}"
        return f"{self.lock_backend}: unlocked"

    def __repr__(self) -> str:
        return f"<{self._label()}: {self.lock_state()}>"


def _free(raw: object, _mm_free: Any = lib.mm_free) -> None:
    # A lock still held when its MM is collected cannot be freed safely (a C
    # thread may still release it): leak it rather than free it under a holder.
    # Bound at definition: at interpreter exit the module's globals may be gone.
    _mm_free(raw)
