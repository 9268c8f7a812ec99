"""The memory operations of :class:`~mmap_lock_native.MM`: mmap and friends,
faults, guest memory, get_user_pages, fork, MMU notifiers and the maps."""
from __future__ import annotations

import errno as _errno
import functools
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Type

from ._args import C_INT, U64, bad_args, int_in
from ._ffi import ffi, lib
from .notifiers import NotifierHandle, _pending, clear_stale, forget_mm, pending_error
from .notifiers import raise_pending, register
from .vm import PAGE_SIZE, TASK_SIZE, VMA, Access, SegmentationFault, os_error, vma_of

if TYPE_CHECKING:  # pragma: no cover
    from .mm import MM

__all__ = ["AddressSpace", "NotifierHandle", "PinnedPages"]

# The signal-aware entry points (_build.py): a wait for the mm's lock that a
# signal interrupts returns -ERESTART, nothing done, and is called again here
# once the interpreter has run its handlers, so Ctrl-C reaches a blocked call.
_mmap = lib.py_mm_mmap
_fault = lib.py_mm_fault
_guest_fault = lib.py_mm_guest_fault
_KILLABLE = lib.MM_GUEST_KILLABLE
_access = lib.py_mm_access
_ERESTART = -_errno.ERESTART


def _again(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` until its wait for the mm's lock was not interrupted.
    Between calls the interpreter runs the pending signal handlers (at the
    loop's backward jump): one that raises, KeyboardInterrupt say, ends it
    there, with nothing done and nothing held."""
    rc = fn(*args)
    while rc == _ERESTART:
        rc = fn(*args)
    return rc
# Large buffers are not zeroed first: only the copy into them touches their pages.
_alloc_uncleared = ffi.new_allocator(should_clear_after_alloc=False)

# Small reads copy through a per-thread scratch buffer: a fresh ffi.new costs
# more than the whole access.
_SCRATCH = 4096
_tls = threading.local()


def _scratch() -> Any:
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = ffi.new("char[]", _SCRATCH)
    return buf


def _drop_pin(page: Any, _data: Any, _unpin: Any = lib.mm_unpin_page) -> None:
    # Bound at definition: a buffer may outlive the module's globals at exit.
    _unpin(page)


def release_view(view: memoryview) -> None:
    """Release a view of pinned memory; its pin goes with the last buffer
    taken from it (one exported directly, as ctypes ``from_buffer`` does,
    keeps the pin until it goes)."""
    try:
        view.release()
    except BufferError:
        pass


def _own_pins(cpages: Any, n: int) -> List[Any]:
    """The memory of each of ``n`` freshly pinned pages, as a cffi buffer that
    owns the page's pin: ``mm_unpin_page`` runs when the last buffer taken
    from it (memoryview, slice, ctypes ``from_buffer``, ...) is gone, so no
    such buffer can outlive the pin and see a page reused for other data."""
    owned: List[Any] = []
    try:
        for i in range(n):
            page = cpages[i]
            data = ffi.gc(ffi.cast("uint8_t *", lib.mm_page_data(page)),
                          functools.partial(_drop_pin, page))
            owned.append(ffi.buffer(data, PAGE_SIZE))
    except BaseException:
        for i in range(len(owned), n):  # not yet owned by a buffer
            lib.mm_unpin_page(cpages[i])
        raise
    return owned


class PinnedPages:
    """Pages pinned by :meth:`AddressSpace.get_user_pages` or :meth:`AddressSpace.view`.

    ``pages[i]`` is a memoryview of the i-th page's memory (zero copy),
    read-only unless pinned with ``write=True``.  A page stays pinned, and
    its memory valid, while ``pages`` or any buffer taken from its view (a
    slice, ``memoryview(...)``, ctypes ``from_buffer``, numpy) is alive, even
    if the range is unmapped meanwhile: it is then an orphaned page, no
    longer the mm's memory at that address, and never another mapping's.
    :meth:`unpin` (or the end of a ``with`` block) releases the views in
    ``pages``; the pins go with them, or with the last buffer taken from them.

    A read pin of a private page shared copy-on-write with a fork sees the
    page the other side may still see; pin with ``write=True`` to own the
    pages first (and write through them), as the kernel's FOLL_WRITE does.
    """

    def __init__(self, mm: "MM", addr: int, owned: List[Any], write: bool,
                 offset: int = 0, length: Optional[int] = None) -> None:
        self.mm = mm
        #: Address of the first page.
        self.addr = addr
        #: Whether the pages were pinned for writing (and the views are writable).
        self.write = write
        self._lock = threading.Lock()
        n = len(owned)
        views = [memoryview(b) if write else memoryview(b).toreadonly() for b in owned]
        if length is not None and n:
            # A byte range: trim the first and last pages to it.
            views[0] = views[0][offset:]
            last = (offset + length) - (n - 1) * PAGE_SIZE
            views[-1] = views[-1][:last] if n > 1 else views[0][:length]
        #: One memoryview per page (the range's part of it, for view()).
        self.pages: List[memoryview] = views

    def unpin(self) -> None:
        """Release the views in ``pages`` (using one afterwards raises
        ValueError) and with them the pins, except those of pages a buffer
        taken from a view still refers to: each goes with its last buffer."""
        with self._lock:
            views, self.pages = self.pages, []
        for v in views:
            release_view(v)

    def __enter__(self) -> "PinnedPages":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.unpin()

    def __len__(self) -> int:
        return len(self.pages)


class AddressSpace:
    """Mixin of :class:`MM`: the address space behind the lock."""

    __slots__ = ()
    _mm: Any

    def _label(self) -> str:  # pragma: no cover - MM overrides
        raise NotImplementedError

    def _closed(self) -> bool:
        return bool(self._mm.mm_closed)

    def _check(self, rc: int, what: str) -> int:
        if rc < 0:
            raise self._failed(os_error(rc, f"{what} on {self._label()}"))
        if _pending:
            raise_pending(lambda: f"{what} on {self._label()}", rc)
        return rc

    def _failed(self, exc: BaseException) -> BaseException:
        """``exc``, for an operation that failed, with what its MMU notifiers
        raised meanwhile (if anything) as its cause (notifiers.py)."""
        if _pending:
            cause = pending_error(lambda: f"the operation that raised {exc!r:.80}")
            if cause is not None:
                exc.__cause__ = cause
        return exc

    def _syscall(self, op: str, fn: Any, **args: Tuple[Any, int, int]) -> int:
        """``fn(mm, *values)`` for ``args`` (name=(value, lowest, highest) of
        the C type): its result, OSError for a negative errno.  The call goes
        to C as it is; only when cffi refuses a value (not an int, or beyond
        the C type) does bad_args() find which argument and say so."""
        values = [value for value, _, _ in args.values()]
        if _pending:
            clear_stale()
        try:
            rc = _again(fn, self._mm, *values)
        except (TypeError, OverflowError) as exc:
            raise bad_args(f"{op} on {self._label()}", exc, **args) from None
        return self._check(rc, f"{op}({', '.join(f'{k}={v:#x}' for k, v in zip(args, values))})")

    # -- the system calls ------------------------------------------------------

    def mmap(self, length: int, prot: int, flags: int, addr: Optional[int] = None) -> int:
        """Map ``length`` bytes of anonymous memory; return the address.

        ``flags`` needs ``MAP_ANONYMOUS`` and one of ``MAP_PRIVATE`` /
        ``MAP_SHARED``, and may add ``MAP_FIXED``, ``MAP_FIXED_NOREPLACE``
        (``addr`` is a hint without them), and as Linux: ``MAP_POPULATE``
        (prefault; ``MAP_NONBLOCK`` cancels it, ``MAP_LOCKED`` implies it),
        ``MAP_GROWSDOWN`` (a private mapping a fault just below grows),
        ``MAP_32BIT`` (below 2 GiB), ``MAP_NORESERVE`` and ``MAP_STACK``
        (accepted, nothing to do); ``MAP_HUGETLB`` is EINVAL, as on a kernel
        without huge pages.  OSError with Linux's errno.
        """
        return self._syscall("mmap", _mmap, addr=(0 if addr is None else addr, *U64),
                             length=(length, *U64), prot=(prot, *C_INT), flags=(flags, *C_INT))

    def munmap(self, addr: int, length: int) -> None:
        """Unmap [addr, addr+length) (write lock, downgraded while tearing down)."""
        self._syscall("munmap", lib.py_mm_munmap, addr=(addr, *U64), length=(length, *U64))

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """Change the protection of a mapped range (mprotect(2), errno as
        Linux).  ``PROT_GROWSDOWN`` moves the start of the range to the start
        of the first mapping it overlaps, which must be a ``MAP_GROWSDOWN``
        one (EINVAL otherwise, ENOMEM if it overlaps none); ``PROT_GROWSUP``
        is EINVAL, as on x86-64."""
        self._syscall("mprotect", lib.py_mm_mprotect, addr=(addr, *U64), length=(length, *U64),
                      prot=(prot, *C_INT))

    def brk(self, addr: int) -> int:
        """Set the program break; return the new one (the old one if refused,
        as brk(2) does).  OSError only if the mm's lock was refused (EDEADLK:
        this task holds it already)."""
        return int(self._syscall("brk", lib.py_mm_brk, addr=(addr, *U64)))

    def madvise(self, addr: int, length: int, advice: int) -> None:
        """madvise(2): ``MADV_DONTNEED`` (and ``MADV_FREE`` on private
        memory) drops the pages, private ones come back zeroed;
        ``MADV_DONTFORK`` / ``MADV_WIPEONFORK`` (private memory only) leave
        the range out of a fork's child / give it to the child empty
        (``MADV_DOFORK`` / ``MADV_KEEPONFORK`` undo them; VMAs are split
        at the range's edges); ``MADV_POPULATE_READ`` / ``_WRITE`` fault the
        range in; hints only check the range (see :meth:`sys_madvise` for the
        list).  OSError with Linux's errno: ENOMEM for a hole (the mapped
        parts are done), EINVAL for advice not allowed there."""
        self._syscall("madvise", lib.py_mm_madvise, addr=(addr, *U64), length=(length, *U64),
                      advice=(advice, *C_INT))

    # -- faults and guest memory ------------------------------------------------

    def fault(self, addr: int, access: int = Access.READ, *, write: Optional[bool] = None,
              killable: bool = False) -> None:
        """Fault the page at ``addr`` in for ``access`` (:class:`Access`:
        ``READ``, ``WRITE``, ``EXEC``; ``True`` is a write).  ``write=True``
        is the same as ``access=Access.WRITE`` (the older spelling; giving
        both with different meanings is a ValueError).  Under the
        default design only the VMA's lock is taken.  SegmentationFault if
        the mm refuses the access (SEGV_ACCERR for an exec access to a VMA
        without PROT_EXEC).  A fault just below a MAP_GROWSDOWN mapping
        grows it.  ``killable``: InterruptedError at once if the current
        task is killed (``task_kill``), as a killable fault."""
        if write is not None:
            access = self._access_with_write(access, write)
        if _pending:
            clear_stale()
        try:
            if killable:
                rc = _guest_fault(self._mm, addr, access, _KILLABLE)
            else:
                rc = _fault(self._mm, addr, access)
        except (TypeError, OverflowError) as exc:
            raise bad_args(f"fault on {self._label()}", exc, addr=(addr, *U64),
                           access=(access, 0, 2)) from None
        if rc == _ERESTART:
            rc = _again(_guest_fault, self._mm, addr, access, _KILLABLE if killable else 0)
        if rc:
            self._fault_failed(rc, addr, access, "fault")
        if _pending:
            raise_pending(lambda: f"fault at {addr:#x} on {self._label()}")

    def _access_with_write(self, access: int, write: bool) -> int:
        if write not in (True, False):
            raise TypeError(f"fault on {self._label()}: write must be a bool, got {write!r}")
        wanted = Access.WRITE if write else Access.READ
        if access not in (Access.READ, wanted):
            raise ValueError(f"fault on {self._label()}: access={access!r} contradicts write={write!r}")
        return wanted

    def _fault_failed(self, rc: int, addr: int, access: int, op: str) -> None:
        if rc == -_errno.EINVAL and not (isinstance(access, int) and 0 <= access <= 2):
            raise ValueError(f"{op} on {self._label()}: access {access!r} is not one of "
                             f"Access.READ, WRITE, EXEC") from None
        if rc < 0:
            raise self._failed(os_error(rc, f"{op} at {addr:#x} on {self._label()}"))
        raise self._failed(SegmentationFault(addr, rc, f"{op} on {self._label()}",
                                             access == Access.WRITE))

    def read(self, addr: int, n: int) -> bytes:
        """Copy ``n`` bytes out of guest memory (copy_from_user), faulting
        pages in; one read-lock acquisition."""
        if _pending:
            clear_stale()
        if 0 <= n <= _SCRATCH:
            buf = _scratch()
        else:
            n = int_in(n, "n", f"read on {self._label()}", 0, TASK_SIZE)
            buf = self._allocate("char[]", n, "read", f"n={n:#x}")
        try:
            rc = _access(self._mm, addr, buf, n, 0, ffi.NULL)
        except (TypeError, OverflowError) as exc:
            raise bad_args(f"read on {self._label()}", exc, addr=(addr, *U64),
                           n=(n, 0, TASK_SIZE)) from None
        if rc == _ERESTART:
            rc = _again(_access, self._mm, addr, buf, n, 0, ffi.NULL)
        if rc:
            self._access_failed(rc, addr, None, "read", False)
        data = ffi.unpack(buf, n)
        if _pending:
            raise_pending(lambda: f"read at {addr:#x} on {self._label()}", data)
        return data

    def write(self, addr: int, data: Any) -> None:
        """Copy ``data`` (any bytes-like object) into guest memory
        (copy_to_user), faulting pages in; one read-lock acquisition.
        On a fault, the bytes before the faulting page have been written."""
        if _pending:
            clear_stale()
        if type(data) is bytes:
            src, n = data, len(data)    # cffi passes bytes as a pointer, no copy
        else:
            try:
                src = ffi.from_buffer(data)
            except TypeError:
                raise TypeError(f"write on {self._label()}: data must be a bytes-like "
                                f"object, not {type(data).__name__}") from None
            n = len(src)
        try:
            rc = _access(self._mm, addr, src, n, 1, ffi.NULL)
        except (TypeError, OverflowError) as exc:
            raise bad_args(f"write on {self._label()}", exc, addr=(addr, *U64)) from None
        if rc == _ERESTART:
            rc = _again(_access, self._mm, addr, src, n, 1, ffi.NULL)
        if rc:
            # The C core kept where it faulted for this thread.
            self._access_failed(rc, addr, None, "write", True)
        if _pending:
            raise_pending(lambda: f"write at {addr:#x} on {self._label()}")

    def _access_failed(self, rc: int, addr: int, fault_addr: Optional[int], op: str,
                       write: bool) -> None:
        """Raise for a failed access or pin that began at ``addr``: OSError for a
        negative errno (the lock refused, memory ran out), else the fault at
        ``fault_addr`` (None: the calling thread's last mm_access() recorded it)."""
        if rc < 0:
            raise self._failed(os_error(rc, f"{op} at {addr:#x} on {self._label()}"))
        if fault_addr is None:
            fault_addr = lib.mm_access_fault_addr()
        raise self._failed(SegmentationFault(fault_addr, rc, f"{op} on {self._label()}", write))

    def _allocate(self, ctype: str, n: int, op: str, asked: str) -> Any:
        """An uninitialised C array for ``n`` items: nothing touches its
        memory but the copy into it, so an access the mm refuses early costs
        no more than what it copied.  MemoryError naming what was ``asked``
        (the argument and its value)."""
        try:
            return _alloc_uncleared(ctype, n)
        except MemoryError:
            raise MemoryError(f"{op} on {self._label()}: cannot allocate the buffer "
                              f"{asked} needs") from None

    def _pin(self, addr: int, n: int, write: bool, op: str, asked: str) -> List[Any]:
        """Pin ``n`` pages from ``addr``: one buffer per page, owning its pin."""
        cpages = self._allocate("struct page *[]", n or 1, op, asked)
        where = ffi.new("uint64_t *")
        if _pending:
            clear_stale()
        try:
            rc = _again(lib.py_mm_get_user_pages, self._mm, addr, n, write, cpages, where)
        except (TypeError, OverflowError) as exc:
            raise bad_args(f"{op} on {self._label()}", exc, write=(write, *C_INT)) from None
        if rc:
            self._access_failed(rc, addr, where[0], op, write)
        owned = _own_pins(cpages, n)
        if _pending:
            raise_pending(lambda: f"{op} at {addr:#x} on {self._label()}", owned)
        return owned

    def get_user_pages(self, addr: int, n: int, write: bool = False) -> PinnedPages:
        """Fault in and pin ``n`` pages from ``addr`` (page aligned) under
        the read lock.  Pinned pages survive a concurrent munmap until unpinned."""
        where = f"get_user_pages on {self._label()}"
        addr = int_in(addr, "addr", where, *U64)
        n = int_in(n, "n", where, 0, TASK_SIZE // PAGE_SIZE)
        if addr % PAGE_SIZE:
            raise ValueError(f"{where}: addr {addr:#x} is not page aligned")
        owned = self._pin(addr, n, write, "get_user_pages", f"n={n:#x}")
        return PinnedPages(self, addr, owned, bool(write))  # type: ignore[arg-type]

    def view(self, addr: int, length: int, write: bool = False) -> PinnedPages:
        """A zero-copy view of [addr, addr+length): the pages are pinned and
        ``pages`` holds one memoryview per page, trimmed to the range.  See
        :class:`PinnedPages` for how long it stays valid and what it sees
        after the range changes."""
        where = f"view on {self._label()}"
        addr = int_in(addr, "addr", where, *U64)
        length = int_in(length, "length", where, 0, TASK_SIZE)
        first = addr - addr % PAGE_SIZE
        n = (addr + length - first + PAGE_SIZE - 1) // PAGE_SIZE if length else 0
        owned = self._pin(first, n, write, "view", f"length={length:#x} ({n} pages)")
        return PinnedPages(self, first, owned, bool(write), addr - first,  # type: ignore[arg-type]
                           length)

    # -- the address space as a whole --------------------------------------------

    def fork(self) -> "MM":
        """A copy of this address space: private pages shared copy-on-write,
        shared ones shared (the child's lock is taken nested, as fork does)."""
        from .mm import MM
        err = ffi.new("int *")
        if _pending:
            clear_stale()
        raw = lib.py_mm_fork(self._mm, err)
        while raw == ffi.NULL and err[0] == _ERESTART:     # see _again()
            raw = lib.py_mm_fork(self._mm, err)
        if raw == ffi.NULL:
            raise self._failed(os_error(err[0], f"fork of {self._label()}"))
        child = MM._adopt(raw, name=f"{getattr(self, 'name', None) or 'mm'}-child")
        if _pending:
            raise_pending(lambda: f"fork of {self._label()}", child)
        return child

    def close(self) -> None:
        """exit_mmap(): notifiers' release(), then every mapping goes.  Later
        operations fail (OSError EINVAL; faults SegmentationFault)."""
        if _pending:
            clear_stale()
        if not self._closed():
            rc = _again(lib.py_mm_exit_mmap, self._mm)
            if rc < 0 and rc != -_errno.EINVAL:     # EINVAL: closed meanwhile by another thread
                raise self._failed(os_error(rc, f"close on {self._label()}"))
        forget_mm(self)  # type: ignore[arg-type]
        if _pending:
            raise_pending(lambda: f"close of {self._label()}")

    def maps(self) -> List[VMA]:
        """The mappings in address order (read under the read lock)."""
        count = ffi.new("size_t *")
        cap = 64
        while True:
            out = ffi.new("struct mm_vma_info[]", cap)
            self._check(_again(lib.py_mm_maps, self._mm, out, cap, count), "maps")
            if count[0] <= cap:
                break
            cap = count[0] + 16
        return [vma_of(out[i]) for i in range(count[0])]

    def maps_text(self) -> str:
        """``maps()`` in the exact field layout of /proc/pid/maps."""
        return "".join(v.maps_line() + "\n" for v in self.maps())

    def register_notifier(self, obj: Any) -> NotifierHandle:
        """Call ``obj.invalidate_range_start(start, end)`` / ``invalidate_range_end
        (start, end)`` around every removal or write-protection of page-table
        entries, and ``obj.release()`` when the mm is closed (any may be
        missing).  Takes the write lock.  Callbacks run with the mm's lock
        held: they must not call into this mm.

        A callback that raises does not stop the operation: it completes, and
        its Python call then raises :class:`NotifierError` (``result``: what
        it returned), or the OSError it fails with, caused by that
        NotifierError.  Each exception is also kept on ``handle.errors``."""
        return register(self, obj)  # type: ignore[arg-type]

    @property
    def brk_value(self) -> int:
        """The current program break."""
        return int(self._check(_again(lib.py_mm_get_brk, self._mm), "brk_value"))

    @property
    def map_count(self) -> int:
        """Number of VMAs."""
        return int(self._check(_again(lib.py_mm_map_count, self._mm), "map_count"))

    def set_max_map_count(self, n: int) -> None:
        """Change this mm's vm.max_map_count (default 65530)."""
        count = int_in(n, "n", f"set_max_map_count on {self._label()}", 1, (1 << 32) - 1)
        self._check(_again(lib.py_mm_set_max_map_count, self._mm, count),
                    f"set_max_map_count({n})")

    def pgtable_bytes(self) -> int:
        """Bytes of page-table memory (all levels)."""
        return int(lib.mm_pgtable_bytes(self._mm))

    def nr_pages(self) -> int:
        """Pages mapped by the page table."""
        return int(lib.mm_nr_pages(self._mm))
