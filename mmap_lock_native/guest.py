"""The guest-memory API for embedders (C: ``mm_guest.h``): VMA lookups and
the layout count, pins with host addresses, host ranges, mremap, and
``with mm.read_locked() as locked:`` for a series of calls under one read
acquisition, as the kernel's fault path looks up and pins under one lock.

Every call here goes through a signal-aware wrapper (``_build.py``) and
:func:`~mmap_lock_native.address_space._again`, so Ctrl-C reaches one that
waits for the lock; ``killable=True`` makes a killed task's call fail at
once with InterruptedError, before it starts and between pages.
"""
from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple, Type

from ._args import C_INT, U64, int_in
from ._ffi import ffi, lib
from .address_space import _again
from .notifiers import _pending, clear_stale, raise_pending
from .pins import Pin, PinnedRange, own
from .secondary import SecondaryMMU
from .vm import (PAGE_SIZE, TASK_SIZE, VMA, Access, HostRange, SegmentationFault, os_error,
                 vma_of)

if TYPE_CHECKING:  # pragma: no cover
    from .mm import MM

__all__ = ["GuestMemory", "ReadLocked"]

_KILLABLE = lib.MM_GUEST_KILLABLE
_LOCKED = lib.MM_GUEST_LOCKED


def _access_of(access: Any, where: str) -> int:
    """``access`` as an int 0..2 (an :class:`Access`; a bool is READ/WRITE)."""
    return int_in(access, "access", where, 0, 2)


class _Ops:
    """The calls shared by :class:`GuestMemory` (each takes the lock itself)
    and :class:`ReadLocked` (under the caller's read lock): ``flags`` says
    which, and whether the call is killable."""

    @staticmethod
    def check(mm: "MM", rc: int, what: Callable[[], str], addr: int, access: int,
              fault_addr: Optional[int] = None) -> None:
        """Raise for a failed call: OSError (InterruptedError for a killed
        task), SegmentationFault with the faulting address."""
        if rc < 0:
            raise mm._failed(os_error(rc, f"{what()} on {mm._label()}"))
        if rc > 0:
            raise mm._failed(SegmentationFault(addr if fault_addr is None else fault_addr, rc,
                                               f"{what()} on {mm._label()}",
                                               access == Access.WRITE))

    @staticmethod
    def find(mm: "MM", addr: int, containing: int, flags: int, op: str) -> Optional[VMA]:
        out = ffi.new("struct mm_vma_info *")
        addr = int_in(addr, "addr", f"{op} on {mm._label()}", *U64)
        rc = _again(lib.py_mm_find_vma, mm._mm, addr, containing, flags, out)
        if rc < 0:
            raise os_error(rc, f"{op}({addr:#x}) on {mm._label()}")
        return vma_of(out) if rc else None

    @staticmethod
    def fault(mm: "MM", addr: int, access: Any, flags: int) -> None:
        where = f"fault on {mm._label()}"
        addr = int_in(addr, "addr", where, *U64)
        access = _access_of(access, where)
        if _pending:
            clear_stale()
        rc = _again(lib.py_mm_guest_fault, mm._mm, addr, access, flags)
        _Ops.check(mm, rc, lambda: f"fault at {addr:#x}", addr, access)
        if _pending:
            raise_pending(lambda: f"fault at {addr:#x} on {mm._label()}")

    @staticmethod
    def pin(mm: "MM", addr: int, n: int, access: Any, flags: int, op: str) -> PinnedRange:
        where = f"{op} on {mm._label()}"
        addr = int_in(addr, "addr", where, *U64)
        n = int_in(n, "n", where, 0, TASK_SIZE // PAGE_SIZE)
        access = _access_of(access, where)
        if addr % PAGE_SIZE:
            raise ValueError(f"{where}: addr {addr:#x} is not page aligned")
        try:
            cpins = ffi.new("struct mm_pin[]", n or 1)
        except MemoryError:
            raise MemoryError(f"{where}: cannot allocate n={n:#x} pin records") from None
        where_faulted = ffi.new("uint64_t *")
        if _pending:
            clear_stale()
        rc = _again(lib.py_mm_pin_pages, mm._mm, addr, n, access, flags, cpins, where_faulted)
        _Ops.check(mm, rc, lambda: f"{op} at {addr:#x}", addr, access, where_faulted[0])
        pinned = PinnedRange(mm, addr, own(mm, cpins, n, access))
        if _pending:
            raise_pending(lambda: f"{op} at {addr:#x} on {mm._label()}", pinned)
        return pinned

    @staticmethod
    def host_range(mm: "MM", addr: int, access: Any, flags: int) -> HostRange:
        if not (type(addr) is int and 0 <= addr <= U64[1] and type(access) in (int, Access)
                and 0 <= access <= 2):      # the emulator's hot path: checked cheaply
            where = f"vma_host_range on {mm._label()}"
            addr = int_in(addr, "addr", where, *U64)
            access = _access_of(access, where)
        out = ffi.new("struct mm_host_range *")
        if _pending:
            clear_stale()
        rc = _again(lib.py_mm_host_range, mm._mm, addr, access, flags, out)
        _Ops.check(mm, rc, lambda: f"vma_host_range at {addr:#x}", addr, access)
        hr = HostRange(int(out.host), int(out.start), int(out.end), int(out.prot))
        if _pending:
            raise_pending(lambda: f"vma_host_range at {addr:#x} on {mm._label()}", hr)
        return hr


def _flags(killable: bool) -> int:
    return _KILLABLE if killable else 0


class GuestMemory:
    """Mixin of :class:`MM`: the guest-memory calls an emulator makes."""

    __slots__ = ()
    _mm: Any

    def _label(self) -> str:  # pragma: no cover - MM overrides
        raise NotImplementedError

    def find_vma(self, addr: int) -> Optional[VMA]:
        """The kernel's ``find_vma()``: the first VMA ending above ``addr``
        (it may start above it), or None.  O(log n), under the read lock; no
        copy of the map."""
        return _Ops.find(self, addr, 0, 0, "find_vma")  # type: ignore[arg-type]

    def vma_lookup(self, addr: int) -> Optional[VMA]:
        """The VMA containing ``addr``, or None (the kernel's ``vma_lookup()``).
        Under the default design only that VMA's lock is taken."""
        return _Ops.find(self, addr, 1, 0, "vma_lookup")  # type: ignore[arg-type]

    @property
    def vma_seq(self) -> int:
        """A count of layout changes: every mmap, munmap, mprotect, brk,
        mremap and stack growth moves it on (faults do not).  Read it before
        a lookup; the record stays exact while ``vma_seq`` still reads the
        same.  No lock is taken."""
        return int(lib.mm_vma_seq(self._mm))

    def pin_page(self, addr: int, access: int = Access.READ, *,
                 killable: bool = False) -> Pin:
        """Fault in and pin the page at ``addr`` (page aligned) for
        ``access``: a :class:`Pin` with its host address and protection."""
        return _Ops.pin(self, addr, 1, access, _flags(killable), "pin_page")[0]  # type: ignore[arg-type]

    def pin_pages(self, addr: int, n: int, access: int = Access.READ, *,
                  killable: bool = False) -> PinnedRange:
        """Fault in and pin ``n`` pages from ``addr`` (page aligned): all or
        none (SegmentationFault names the first page that failed, and nothing
        stays pinned).  Under the default design only the VMAs' locks are
        taken, one at a time, as pin_user_pages_fast."""
        return _Ops.pin(self, addr, n, access, _flags(killable), "pin_pages")  # type: ignore[arg-type]

    def vma_host_range(self, addr: int, access: int = Access.READ, *,
                       killable: bool = False) -> HostRange:
        """The host memory behind ``addr``, faulted in for ``access``: a
        :class:`HostRange` ``(host, start, end, prot)``.  Nothing is pinned:
        it stays valid until an invalidation covering it starts (see
        :meth:`secondary_mmu`).  With ``MM(host_backing=True)`` it is the
        largest run around ``addr`` of the VMA's host window whose pages
        allow at least ``prot`` (the whole VMA in the common case; 32 MiB
        each way at most), and stores through it are the pages' contents
        (``docs/mm.md``, "Contiguous host backing").  Otherwise, and for
        shared mappings, pages are each their own host allocation and the
        range is one page."""
        return _Ops.host_range(self, addr, access, _flags(killable))  # type: ignore[arg-type]

    def mremap(self, addr: int, old_length: int, new_length: int, flags: int = 0,
               new_addr: int = 0) -> int:
        """mremap(2): grow or shrink a mapping, in place or moved
        (``MREMAP_MAYMOVE``; ``MREMAP_FIXED`` to ``new_addr``;
        ``MREMAP_DONTUNMAP``): the new address, or OSError with Linux's errno.
        An ``old_length`` of 0 on a shared mapping maps its pages again."""
        return int(self._syscall("mremap", lib.py_mm_mremap,  # type: ignore[attr-defined]
                                 addr=(addr, *U64), old_length=(old_length, *U64),
                                 new_length=(new_length, *U64),
                                 flags=(flags, *C_INT),
                                 new_addr=(new_addr, *U64)))

    def secondary_mmu(self, kick: Optional[Tuple[int, int]] = None, *,
                      eventfd: bool = False) -> SecondaryMMU:
        """Register a secondary MMU (an emulator's TLB) with this mm's
        invalidation queue: see :class:`SecondaryMMU`.  Takes the write lock."""
        return SecondaryMMU(self, kick, eventfd)  # type: ignore[arg-type]

    def read_locked(self, *, killable: bool = False) -> "ReadLocked":
        """``with mm.read_locked() as locked:`` — the mmap read lock for the
        block, and ``locked.find_vma``, ``vma_lookup``, ``fault``,
        ``pin_page``, ``pin_pages``, ``vma_host_range``, ``read``, ``write``
        under it, with no further acquisition.  A fault below a
        MAP_GROWSDOWN mapping does not grow it here (that needs the write
        lock).  Operations that take the write lock (mmap, munmap, ...)
        from the block are refused with EDEADLK."""
        return ReadLocked(self, killable)  # type: ignore[arg-type]


class ReadLocked:
    """The mm's read lock, held by one thread for a ``with`` block, and the
    guest-memory calls under it (:meth:`GuestMemory.read_locked`)."""

    def __init__(self, mm: "MM", killable: bool) -> None:
        self.mm = mm
        self._flags = _LOCKED | _flags(killable)
        self._thread: Optional[int] = None
        self._done = False

    def __enter__(self) -> "ReadLocked":
        if self._thread is not None or self._done:
            raise RuntimeError(f"read_locked() of {self.mm._label()}: already "
                               f"{'used' if self._done else 'entered'}; make a new one")
        rc = _again(lib.py_mm_read_lock, self.mm._mm)
        if rc < 0:
            raise os_error(rc, f"read_locked() of {self.mm._label()}")
        self._thread = threading.get_ident()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._own("leaving read_locked()")
        rc = lib.mm_read_unlock(self.mm._mm)
        if rc < 0:
            raise os_error(rc, f"leaving read_locked() of {self.mm._label()}")
        self._thread = None
        self._done = True

    def _own(self, op: str) -> int:
        """The flags for a call, once it is known that this thread holds the lock."""
        if self._thread != threading.get_ident():
            state = ("released" if self._done else "not entered" if self._thread is None
                     else f"held by thread {self._thread}")
            raise RuntimeError(f"{op} on {self.mm._label()} through read_locked(): the read "
                               f"lock is {state}, not this thread's")
        return self._flags

    def find_vma(self, addr: int) -> Optional[VMA]:
        """As :meth:`MM.find_vma`, under this read lock."""
        return _Ops.find(self.mm, addr, 0, self._own("find_vma") & _LOCKED, "find_vma")

    def vma_lookup(self, addr: int) -> Optional[VMA]:
        """As :meth:`MM.vma_lookup`, under this read lock."""
        return _Ops.find(self.mm, addr, 1, self._own("vma_lookup") & _LOCKED, "vma_lookup")

    def fault(self, addr: int, access: int = Access.READ) -> None:
        """As :meth:`MM.fault`, under this read lock."""
        _Ops.fault(self.mm, addr, access, self._own("fault"))

    def pin_page(self, addr: int, access: int = Access.READ) -> Pin:
        """As :meth:`MM.pin_page`, under this read lock."""
        return _Ops.pin(self.mm, addr, 1, access, self._own("pin_page"), "pin_page")[0]

    def pin_pages(self, addr: int, n: int, access: int = Access.READ) -> PinnedRange:
        """As :meth:`MM.pin_pages`, under this read lock."""
        return _Ops.pin(self.mm, addr, n, access, self._own("pin_pages"), "pin_pages")

    def vma_host_range(self, addr: int, access: int = Access.READ) -> HostRange:
        """As :meth:`MM.vma_host_range`, under this read lock."""
        return _Ops.host_range(self.mm, addr, access, self._own("vma_host_range"))

    def read(self, addr: int, n: int) -> bytes:
        """copy_from_user under this read lock (as :meth:`MM.read`)."""
        flags = self._own("read")
        where = f"read on {self.mm._label()}"
        addr = int_in(addr, "addr", where, *U64)
        n = int_in(n, "n", where, 0, TASK_SIZE)
        buf = self.mm._allocate("char[]", n or 1, "read", f"n={n:#x}")
        fa = ffi.new("uint64_t *")
        rc = _again(lib.py_mm_guest_access, self.mm._mm, addr, buf, n, 0, flags, fa)
        _Ops.check(self.mm, rc, lambda: f"read at {addr:#x}", addr, Access.READ, fa[0])
        return ffi.unpack(buf, n)

    def write(self, addr: int, data: Any) -> None:
        """copy_to_user under this read lock (as :meth:`MM.write`)."""
        flags = self._own("write")
        where = f"write on {self.mm._label()}"
        addr = int_in(addr, "addr", where, *U64)
        try:
            src = ffi.from_buffer(data)
        except TypeError:
            raise TypeError(f"{where}: data must be a bytes-like object, not "
                            f"{type(data).__name__}") from None
        fa = ffi.new("uint64_t *")
        if _pending:
            clear_stale()
        rc = _again(lib.py_mm_guest_access, self.mm._mm, addr, src, len(src), 1, flags, fa)
        _Ops.check(self.mm, rc, lambda: f"write at {addr:#x}", addr, Access.WRITE, fa[0])
        if _pending:
            raise_pending(lambda: f"write at {addr:#x} on {self.mm._label()}")

    def __repr__(self) -> str:
        state = ("released" if self._done else "not entered" if self._thread is None
                 else f"held by thread {self._thread}")
        return f"<ReadLocked {self.mm._label()}: {state}>"

