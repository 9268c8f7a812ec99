"""Constants, records and errors of the mm emulation (Linux's values)."""
from __future__ import annotations

import enum
import errno as _errno
import os
from typing import NamedTuple

from ._ffi import lib

__all__ = [
    "Access", "HostRange",
    "MADV_COLD", "MADV_DODUMP", "MADV_DOFORK", "MADV_DONTDUMP", "MADV_DONTFORK", "MADV_DONTNEED",
    "MADV_DONTNEED_LOCKED", "MADV_FREE", "MADV_HUGEPAGE", "MADV_KEEPONFORK", "MADV_NOHUGEPAGE",
    "MADV_NORMAL", "MADV_PAGEOUT", "MADV_POPULATE_READ", "MADV_POPULATE_WRITE", "MADV_RANDOM",
    "MADV_SEQUENTIAL", "MADV_WILLNEED", "MADV_WIPEONFORK",
    "MAP_32BIT", "MAP_ANONYMOUS", "MAP_FIXED", "MAP_FIXED_NOREPLACE", "MAP_GROWSDOWN",
    "MAP_HUGETLB", "MAP_LOCKED", "MAP_NONBLOCK", "MAP_NORESERVE", "MAP_POPULATE",
    "MAP_PRIVATE", "MAP_SHARED", "MAP_STACK", "MREMAP_DONTUNMAP", "MREMAP_FIXED",
    "MREMAP_MAYMOVE", "PAGE_SIZE", "PROT_EXEC", "PROT_GROWSDOWN", "PROT_GROWSUP", "PROT_NONE",
    "PROT_READ", "PROT_WRITE",
    "SEGV_ACCERR", "SEGV_MAPERR", "TASK_SIZE", "SegmentationFault", "VMA",
]

PROT_NONE: int = lib.PROT_NONE
PROT_READ: int = lib.PROT_READ
PROT_WRITE: int = lib.PROT_WRITE
PROT_EXEC: int = lib.PROT_EXEC
#: mprotect only: extend the change down to the start of a MAP_GROWSDOWN mapping.
PROT_GROWSDOWN: int = lib.PROT_GROWSDOWN
#: mprotect only: EINVAL here (no mapping grows up on x86-64 or arm64).
PROT_GROWSUP: int = lib.PROT_GROWSUP
MAP_SHARED: int = lib.MAP_SHARED
MAP_PRIVATE: int = lib.MAP_PRIVATE
MAP_FIXED: int = lib.MAP_FIXED
MAP_ANONYMOUS: int = lib.MAP_ANONYMOUS
MAP_FIXED_NOREPLACE: int = lib.MAP_FIXED_NOREPLACE
#: Prefault the mapping (MAP_NONBLOCK cancels it; MAP_LOCKED implies it).
MAP_POPULATE: int = lib.MAP_POPULATE
MAP_NONBLOCK: int = lib.MAP_NONBLOCK
MAP_LOCKED: int = lib.MAP_LOCKED
#: A private mapping that a fault just below grows (a stack).
MAP_GROWSDOWN: int = lib.MAP_GROWSDOWN
#: Refused with EINVAL, as by a kernel without huge pages.
MAP_HUGETLB: int = lib.MAP_HUGETLB
#: Accepted; nothing to do (as in Linux).
MAP_NORESERVE: int = lib.MAP_NORESERVE
MAP_STACK: int = lib.MAP_STACK
#: x86-64's: place the mapping in [1 GiB, 2 GiB).
MAP_32BIT: int = 0x40
MREMAP_MAYMOVE: int = lib.MREMAP_MAYMOVE
MREMAP_FIXED: int = lib.MREMAP_FIXED
MREMAP_DONTUNMAP: int = lib.MREMAP_DONTUNMAP
MADV_NORMAL: int = lib.MADV_NORMAL
MADV_RANDOM: int = lib.MADV_RANDOM
MADV_SEQUENTIAL: int = lib.MADV_SEQUENTIAL
MADV_WILLNEED: int = lib.MADV_WILLNEED
#: Drop the pages: a private page reads as zeros again, a shared one keeps its contents.
MADV_DONTNEED: int = lib.MADV_DONTNEED
MADV_DONTNEED_LOCKED: int = lib.MADV_DONTNEED_LOCKED
#: Private anonymous memory only (EINVAL on a shared mapping): Linux may drop
#: the pages until they are written again; here they are dropped at once.
MADV_FREE: int = lib.MADV_FREE
#: Hints with nothing to emulate: only the range is checked (ENOMEM for a hole).
MADV_COLD: int = lib.MADV_COLD
MADV_PAGEOUT: int = lib.MADV_PAGEOUT
MADV_HUGEPAGE: int = lib.MADV_HUGEPAGE
MADV_NOHUGEPAGE: int = lib.MADV_NOHUGEPAGE
MADV_DONTDUMP: int = lib.MADV_DONTDUMP
MADV_DODUMP: int = lib.MADV_DODUMP
#: Fork leaves the range out of the child (nothing mapped there); DOFORK undoes it.
#: A flag of the VMAs: a part of a VMA is split off (the write lock is taken).
MADV_DONTFORK: int = lib.MADV_DONTFORK
MADV_DOFORK: int = lib.MADV_DOFORK
#: Private anonymous memory only (EINVAL on a shared mapping): fork gives the
#: child the range empty (zero-filled on demand), the parent's pages stay its
#: own; KEEPONFORK undoes it.  A VMA flag, as DONTFORK.
MADV_WIPEONFORK: int = lib.MADV_WIPEONFORK
MADV_KEEPONFORK: int = lib.MADV_KEEPONFORK
#: Fault the range in as reads / writes (Linux 5.14): ENOMEM for a hole,
#: EINVAL where the protection forbids the access (a write populate breaks
#: copy-on-write sharing with a fork, as a write fault does).
MADV_POPULATE_READ: int = lib.MADV_POPULATE_READ
MADV_POPULATE_WRITE: int = lib.MADV_POPULATE_WRITE
SEGV_MAPERR: int = lib.SEGV_MAPERR
SEGV_ACCERR: int = lib.SEGV_ACCERR
#: Bytes per page.
PAGE_SIZE: int = lib.MM_PAGE_SIZE
#: Addresses are below this (x86-64's 47-bit user space).
TASK_SIZE: int = lib.MM_TASK_SIZE



class Access(enum.IntEnum):
    """What the guest does at an address: the access type of a fault or a pin.
    ``WRITE`` is 1, so ``True`` still means a write where a bool was taken."""

    READ = lib.MM_ACCESS_READ
    WRITE = lib.MM_ACCESS_WRITE
    #: An instruction fetch: the VMA needs PROT_EXEC (else SEGV_ACCERR).
    EXEC = lib.MM_ACCESS_EXEC


class HostRange(NamedTuple):
    """Guest [start, end) is host memory [host, host + end - start) in this
    process, with protection ``prot`` for the guest (``MM.vma_host_range``).
    Nothing is pinned: it stays valid until an invalidation covering it starts."""

    host: int
    start: int
    end: int
    prot: int


_SI_CODE_NAMES = {SEGV_MAPERR: "SEGV_MAPERR (no mapping)", SEGV_ACCERR: "SEGV_ACCERR (protection)"}


class SegmentationFault(Exception):
    """An access the emulated mm refuses, as SIGSEGV would report it.

    ``addr`` is the faulting address; ``si_code`` is ``SEGV_MAPERR`` (no VMA
    there) or ``SEGV_ACCERR`` (the VMA's protection forbids the access).
    """

    def __init__(self, addr: int, si_code: int, operation: str, write: bool) -> None:
        kind = "write" if write else "read"
        super().__init__(f"{operation}: {kind} at {addr:#x}: "
                         f"{_SI_CODE_NAMES.get(si_code, si_code)}")
        #: The faulting address.
        self.addr = addr
        #: ``SEGV_MAPERR`` or ``SEGV_ACCERR``.
        self.si_code = si_code
        #: Whether the access was a write.
        self.write = write


class VMA(NamedTuple):
    """One mapping of ``MM.maps()``: [start, end), protection and flags."""

    start: int
    end: int
    prot: int
    flags: int        #: MAP_SHARED or MAP_PRIVATE, and MAP_GROWSDOWN for a growing one
    pgoff: int        #: offset, in pages, into a shared mapping's backing
    heap: bool        #: the brk area ("[heap]")

    def perms(self) -> str:
        """The /proc/pid/maps permission field, e.g. ``'rw-p'``."""
        return "".join((
            "r" if self.prot & PROT_READ else "-",
            "w" if self.prot & PROT_WRITE else "-",
            "x" if self.prot & PROT_EXEC else "-",
            "s" if self.flags & MAP_SHARED else "p"))

    @property
    def name(self) -> str:
        """The name /proc/pid/maps gives it: ``"[heap]"``, ``"/dev/zero (deleted)"``
        for a shared anonymous mapping, or ``""``."""
        if self.flags & MAP_SHARED:
            return "/dev/zero (deleted)"
        return "[heap]" if self.heap else ""

    def maps_line(self) -> str:
        """This mapping as a line of /proc/pid/maps (without the newline)."""
        shared = bool(self.flags & MAP_SHARED)
        head = (f"{self.start:08x}-{self.end:08x} {self.perms()} "
                f"{(self.pgoff * PAGE_SIZE if shared else 0):08x} "
                f"{'00:01' if shared else '00:00'} 0 ")
        name = self.name
        # The kernel pads the header to 72 columns before a name, then a space.
        return f"{head:<72} {name}" if name else head


def vma_of(info: object) -> VMA:
    """A VMA record from a C ``struct mm_vma_info``."""
    flags: int = info.flags  # type: ignore[attr-defined]
    return VMA(info.start, info.end, info.prot,  # type: ignore[attr-defined]
               (MAP_SHARED if flags & 1 else MAP_PRIVATE) | (MAP_GROWSDOWN if flags & 4 else 0),
               info.pgoff, bool(info.heap))  # type: ignore[attr-defined]


def os_error(rc: int, what: str) -> OSError:
    """``OSError`` for a negative errno ``rc`` from the C core, naming the call."""
    code = -rc
    why = ""
    if code == _errno.EDEADLK:
        why = ("; refused: this task holds the mm's lock already, or the call came from one "
               "of the mm's own MMU notifiers (they run under its lock)")
    elif code == _errno.ESTALE:
        why = ("; refused: this host-backed mm was copied into this process by fork(), and its "
               "memory is the parent process's (make a new MM here; docs/mm.md, 'Host fork')")
    return OSError(code, f"{what}: {_errno.errorcode.get(code, code)} ({os.strerror(code)}){why}")
