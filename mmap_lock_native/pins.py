"""Pinned guest pages with their host addresses (``MM.pin_page``, ``MM.pin_pages``).

A pin is the kernel's FOLL_PIN: the page stays this mm's (a private page
shared copy-on-write is copied first) and outlives munmap until unpinned.
Each page's memory is exported by a cffi buffer that owns its pin, as
:class:`~mmap_lock_native.PinnedPages` does: a buffer taken from
:attr:`Pin.memory` keeps the pin, so no buffer can see a page reused for
other data.  :attr:`Pin.host` is the raw address, for an emulator's own
mapping (``uc.mem_map_ptr``): valid while the pin is held.
"""
from __future__ import annotations

import functools
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Type, overload

from ._args import as_int
from ._ffi import ffi, lib
from .address_space import release_view
from .vm import PAGE_SIZE, Access

if TYPE_CHECKING:  # pragma: no cover
    from .mm import MM

__all__ = ["Pin", "PinnedRange"]


def _unpin(page: Any, _data: Any, _unpin: Any = lib.mm_unpin_page) -> None:
    # Bound at definition: a buffer may outlive the module's globals at exit.
    _unpin(page)


class Pin:
    """One pinned guest page.

    ``addr`` is the guest page, ``host`` the address of its memory in this
    process, ``prot`` what the guest may do through it now (the VMA's
    protection, less ``PROT_WRITE`` while the page is read-only).
    ``memory`` is a memoryview of the page, writable only for a write pin.
    """

    __slots__ = ("mm", "addr", "host", "prot", "access", "_view", "_lock")

    def __init__(self, mm: "MM", addr: int, host: int, prot: int, access: int,
                 owned: Any) -> None:
        self.mm = mm
        #: The guest page's address.
        self.addr = addr
        #: The page's memory in this process (valid while pinned).
        self.host = host
        #: PROT_* the guest has through this page now.
        self.prot = prot
        #: The :class:`Access` it was pinned for.
        self.access = Access(access)
        view = memoryview(owned)
        self._view: Optional[memoryview] = view if access == Access.WRITE else view.toreadonly()
        self._lock = threading.Lock()

    @property
    def memory(self) -> memoryview:
        """The page's memory (zero copy).  ValueError once unpinned."""
        view = self._view
        if view is None:
            raise ValueError(f"Pin of {self.addr:#x} on {self.mm._label()}: unpinned")
        return view

    @property
    def pinned(self) -> bool:
        """Whether :meth:`unpin` has not been called yet."""
        return self._view is not None

    def unpin(self) -> None:
        """Release the pin (a buffer taken from :attr:`memory` keeps it until
        it goes).  Unpinning twice does nothing."""
        with self._lock:
            view, self._view = self._view, None
        if view is not None:
            release_view(view)

    def __enter__(self) -> "Pin":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.unpin()

    def __repr__(self) -> str:
        state = "pinned" if self.pinned else "unpinned"
        return (f"<Pin {self.addr:#x} -> host {self.host:#x} prot {self.prot} "
                f"({state}) of {self.mm._label()}>")


class PinnedRange:
    """Pages pinned by one :meth:`MM.pin_pages` call: a sequence of
    :class:`Pin`, in address order, that can be unpinned in part
    (:meth:`unpin` with a slice of indices) or whole."""

    def __init__(self, mm: "MM", addr: int, pins: List[Pin]) -> None:
        self.mm = mm
        #: The first page's address.
        self.addr = addr
        self._pins = pins

    @overload
    def __getitem__(self, i: int) -> Pin: ...

    @overload
    def __getitem__(self, i: slice) -> List[Pin]: ...

    def __getitem__(self, i: "int | slice") -> "Pin | List[Pin]":
        return self._pins[i]

    def __len__(self) -> int:
        return len(self._pins)

    def __iter__(self) -> Iterator[Pin]:
        return iter(self._pins)

    @property
    def hosts(self) -> List[int]:
        """Each page's host address."""
        return [p.host for p in self._pins]

    def unpin(self, start: int = 0, stop: Optional[int] = None) -> None:
        """Unpin pages ``start`` to ``stop`` (indices, as a slice: the rest
        stay pinned); all of them by default."""
        where = f"PinnedRange.unpin on {self.mm._label()}"
        lo = as_int(start, "start", where)
        hi = None if stop is None else as_int(stop, "stop", where)
        for p in self._pins[lo:hi]:
            p.unpin()

    def __enter__(self) -> "PinnedRange":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.unpin()

    def __repr__(self) -> str:
        held = sum(p.pinned for p in self._pins)
        return f"<PinnedRange {self.addr:#x}: {held}/{len(self._pins)} pinned, {self.mm._label()}>"


def own(mm: "MM", cpins: Any, n: int, access: int) -> List[Pin]:
    """:class:`Pin` objects for ``n`` fresh C pins (``struct mm_pin[]``), each
    page's memory owned by a buffer holding its pin."""
    out: List[Pin] = []
    try:
        for i in range(n):
            c = cpins[i]
            data = ffi.gc(ffi.cast("uint8_t *", c.host), functools.partial(_unpin, c.page))
            c.page = ffi.NULL       # owned by the buffer now
            out.append(Pin(mm, int(c.addr), int(c.host), int(c.prot), access,
                           ffi.buffer(data, PAGE_SIZE)))
    except BaseException:
        lib.mm_unpin_pins(cpins, n)     # those not yet owned
        raise
    return out
