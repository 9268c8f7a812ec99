"""A secondary MMU of an mm (C: ``mm_inval.h``): an emulator's TLB, kept
coherent with the mm by the invalidation queue, in the manner of KVM's
``mmu_invalidate_seq``.  ``docs/embedding.md`` gives the protocol:

1. :meth:`SecondaryMMU.drain` and apply every record (drop the translations
   of its range, or lower their protection to ``new_prot``);
2. to install a translation: read :attr:`~SecondaryMMU.seq` (the count of
   invalidations that have ended, KVM's ``mmu_invalidate_seq``), look the
   page or its VMA's range up (``mm.vma_host_range``, a pin), and install it only if
   ``changed_since(seq, start, end)`` is False, without draining in between;
3. :meth:`~SecondaryMMU.enter` before running guest code (False: records
   are pending, go back to 1) and :meth:`~SecondaryMMU.exit` after.

An invalidation (munmap, mprotect, a copy-on-write break, DONTNEED, fork,
mremap) waits, kicking, until every consumer inside its guest has left,
before the PTEs change: the kick is a C function called without the GIL
(Unicorn's ``uc_emu_stop``, say), and a consumer may also poll an eventfd.
"""
from __future__ import annotations

import enum
import errno as _errno
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, List, NamedTuple, Optional, Tuple, Type

from ._args import U64, int_in
from ._ffi import ffi, lib
from .address_space import _again
from .vm import PAGE_SIZE, os_error

if TYPE_CHECKING:  # pragma: no cover
    from .mm import MM

__all__ = ["Invalidation", "InvalidationReason", "SecondaryMMU"]


class InvalidationReason(enum.IntEnum):
    """Why a range was invalidated (``MM_INVAL_*``)."""

    UNMAP = lib.MM_INVAL_UNMAP          #: munmap, MAP_FIXED over it, brk shrinking, close
    PROTECT = lib.MM_INVAL_PROTECT      #: mprotect (``new_prot``: the new protection)
    WRPROTECT = lib.MM_INVAL_WRPROTECT  #: fork made private pages copy-on-write
    COW = lib.MM_INVAL_COW              #: a copy-on-write break replaced one page
    DONTNEED = lib.MM_INVAL_DONTNEED    #: MADV_DONTNEED dropped the pages
    MOVE = lib.MM_INVAL_MOVE            #: mremap moved the pages away
    OVERFLOW = lib.MM_INVAL_OVERFLOW    #: records were lost: forget every translation


# By value: a dict lookup, where the enum's own constructor costs a microsecond a record.
_REASONS = {int(r): r for r in InvalidationReason}


class Invalidation(NamedTuple):
    """One record: [start, end) changed; ``new_prot`` is what it allows now
    (0 where the mapping is gone); ``seq`` its number, in the order
    invalidations started."""

    start: int
    end: int
    reason: InvalidationReason
    new_prot: int
    seq: int


def _abandon(tlb: Any, _owner: Any, _fn: Any = lib.mm_tlb_abandon) -> None:
    # _owner keeps the mm's memory until this has run; bound at definition
    # because a finalizer may run at exit, after the module's globals went.
    _fn(tlb)


#: Records drained per C call.
_BATCH = 64


class SecondaryMMU:
    """One consumer of an mm's invalidations (``mm.secondary_mmu()``).

    ``kick`` is None or ``(function_address, argument_address)``: a C
    function ``int f(void *arg)`` that makes the guest stop soon (e.g. the
    address of Unicorn's ``uc_emu_stop`` and the engine's handle).  It is
    called on the invalidating thread, under the mmap lock, without the GIL,
    and again every millisecond at most until the guest has left (a kick may
    land before the guest has really started).  ``eventfd=True`` adds an
    eventfd signalled at each record (:meth:`fileno`).  Use one per guest
    thread; :meth:`close` (or the ``with`` block) unregisters it.
    """

    def __init__(self, mm: "MM", kick: Optional[Tuple[int, int]] = None,
                 eventfd: bool = False) -> None:
        from .mm import MM
        if not isinstance(mm, MM):
            raise TypeError(f"SecondaryMMU: mm must be an MM, not {type(mm).__name__}")
        where = f"secondary_mmu on {mm._label()}"
        fn: Any = ffi.NULL
        arg: Any = ffi.NULL
        if kick is not None:
            if not isinstance(kick, tuple) or len(kick) != 2:
                raise TypeError(f"{where}: kick must be None or (function_address, "
                                f"argument_address), not {type(kick).__name__}")
            f_addr = int_in(kick[0], "kick", where, 1, (1 << 64) - 1)
            a_addr = int_in(kick[1], "kick", where, *U64)
            fn = ffi.cast("mm_tlb_kick_fn", f_addr)
            arg = ffi.cast("void *", a_addr)
        out = ffi.new("struct mm_tlb **")
        rc = _again(lib.py_mm_tlb_register, mm._mm, fn, arg,
                    lib.MM_TLB_EVENTFD if eventfd else 0, out)
        if rc < 0:
            raise os_error(rc, where)
        self.mm = mm
        self._tlb: Any = out[0]
        self._out = ffi.new("struct mm_inval_record[]", _BATCH)
        # A consumer dropped without close() is abandoned (never kicked or
        # waited for again); the mm frees it.  The finalizer holds the mm's
        # memory, so it runs first.
        self._finalizer = weakref.finalize(self, _abandon, self._tlb, mm._owner)
        # Checked on every call (an emulator makes several per guest exit):
        # a plain attribute, not the finalizer's ``alive`` property.
        self._open = True

    def _live(self, op: str) -> Any:
        if not self._open:
            raise ValueError(f"SecondaryMMU.{op} on {self.mm._label()}: closed")
        return self._tlb

    @property
    def seq(self) -> int:
        """The count of invalidations that have ended: read it before a lookup."""
        return int(lib.mm_tlb_seq(self._live("seq")))

    @property
    def pending(self) -> int:
        """Records not yet drained."""
        return int(lib.mm_tlb_pending(self._live("pending")))

    @property
    def kicks(self) -> int:
        """Times an invalidation kicked this consumer."""
        return int(lib.mm_tlb_kicks(self._live("kicks")))

    def changed_since(self, seq: int, start: int, end: Optional[int] = None) -> bool:
        """Whether an invalidation overlapping [start, end) (one page from
        ``start`` by default) is in progress or ended after count ``seq`` was
        read: then a translation looked up after reading ``seq`` must not be
        installed."""
        top = U64[1]
        if not (type(seq) is int and type(start) is int and 0 <= seq <= top
                and 0 <= start <= top and (end is None or type(end) is int and 0 <= end <= top)):
            # Checked cheaply above: an emulator asks this before every install.
            where = f"SecondaryMMU.changed_since on {self.mm._label()}"
            seq = int_in(seq, "seq", where, *U64)
            start = int_in(start, "start", where, *U64)
            if end is not None:
                end = int_in(end, "end", where, *U64)
        if end is None:
            end = min(start + PAGE_SIZE, top)
        return bool(lib.mm_tlb_changed_since(self._live("changed_since"), seq, start, end))

    def drain(self) -> List[Invalidation]:
        """Every record not yet drained, oldest first."""
        tlb = self._live("drain")
        out: List[Invalidation] = []
        if not lib.mm_tlb_pending(tlb):
            return out      # the common case, without building records
        while True:
            n = lib.mm_tlb_drain(tlb, self._out, _BATCH)
            out.extend(Invalidation(r.start, r.end, _REASONS.get(r.reason) or
                                    InvalidationReason(r.reason), r.new_prot, r.seq)
                       for r in self._out[0:n])
            if n < _BATCH:
                return out

    def enter(self) -> bool:
        """Enter the guest: True, or False when records are pending (drain
        them first).  Until :meth:`exit`, this thread must not call into the
        mm (refused with EDEADLK: an invalidation waits for it to leave).
        OSError ESTALE on a host-backed mm a host fork() copied into this
        process: its windows are the parent's memory."""
        rc = lib.mm_tlb_enter(self._live("enter"))
        if rc == 0:
            return True
        if rc == -_errno.EAGAIN:
            return False
        raise os_error(rc, f"SecondaryMMU.enter on {self.mm._label()}")

    def exit(self) -> None:
        """Leave the guest; wakes an invalidation waiting for it."""
        lib.mm_tlb_exit(self._live("exit"))

    def fileno(self) -> int:
        """The eventfd (``eventfd=True``); ValueError without one."""
        fd = int(lib.mm_tlb_eventfd(self._live("fileno")))
        if fd < 0:
            raise ValueError(f"SecondaryMMU of {self.mm._label()}: made without eventfd=True")
        return fd

    def close(self) -> None:
        """Unregister (takes the mm's write lock).  OSError EDEADLK, and
        still registered, when called from inside the guest or a notifier."""
        if not self._open:
            return
        rc = _again(lib.py_mm_tlb_unregister, self._tlb)
        if rc < 0:
            raise os_error(rc, f"SecondaryMMU.close on {self.mm._label()}")
        self._finalizer.detach()
        self._open = False

    def __enter__(self) -> "SecondaryMMU":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def __repr__(self) -> str:
        if not self._open:
            return f"<SecondaryMMU of {self.mm._label()}: closed>"
        return f"<SecondaryMMU of {self.mm._label()}: seq {self.seq}, {self.pending} pending>"
