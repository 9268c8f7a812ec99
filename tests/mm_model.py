"""A small pure-Python reference model of the emulated address space.

It mirrors the rules of csrc/mm/mm_mmap.c, mm_fault.c and mm.c (the
contract in csrc/mm/mm.h) so that a test can run the same calls against an
``mln.MM`` and a :class:`ModelMM` and compare the results, the errors, the
maps and the contents:

* VMAs are ``[start, end)`` with a protection, a shared flag and, for shared
  ones, a backing object and a page offset into it, and the flags madvise
  sets (DONTFORK, WIPEONFORK).  The layout is kept maximally merged:
  touching private VMAs of the same protection and flags are one VMA; shared
  ones never merge.
* Contents are per page, zero until written.  Private pages belong to the mm
  (copied at fork: copy-on-write is invisible to contents); shared pages
  belong to the backing object, shared by every VMA cut from it, in this mm
  and in forks, and survive MADV_DONTNEED.
* Placement: a hint is used (rounded up to a page) if the range is free and
  above mmap_min_addr; otherwise the highest gap below MMAP_BASE, then the
  highest below TASK_SIZE.
* max_map_count: an operation fails with ENOMEM and changes nothing when the
  VMA count it would leave (merges included) exceeds the limit and exceeds
  the current count.  The model computes the layout the operation would
  leave and counts it.
* mprotect splits a VMA at a boundary of the range only if that VMA's
  protection changes (visible for shared VMAs, which never merge back); so
  do madvise's flag advice (DONTFORK, DOFORK, WIPEONFORK, KEEPONFORK) when
  the flag changes.  fork leaves DONTFORK VMAs out and gives WIPEONFORK ones
  to the child without their private contents.
* MADV_POPULATE_* prefault, which changes no contents: only their errors
  are modelled (ENOMEM for a hole, EINVAL at a VMA without PROT_READ for a
  read, PROT_WRITE for a write, the walk stopping there).
* Errors: OSError(errno) from the system calls (:class:`ModelOSError`), and
  :class:`ModelSegv` (addr, si_code) for refused accesses.

Not a test module (no ``test_`` prefix): the stateful test imports it.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

PAGE = 4096
PAGE_MASK = ~(PAGE - 1)
U64 = (1 << 64) - 1

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
PROT_SEM = 0x8
PROT_GROWSDOWN, PROT_GROWSUP = 0x01000000, 0x02000000
PROT_ALL = 7
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 1, 2, 16, 32
MAP_FIXED_NOREPLACE = 0x100000
MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED = 0, 1, 2, 3, 4
MADV_FREE, MADV_DONTNEED_LOCKED = 8, 24
MADV_DONTFORK, MADV_DOFORK, MADV_WIPEONFORK, MADV_KEEPONFORK = 10, 11, 18, 19
MADV_POPULATE_READ, MADV_POPULATE_WRITE = 22, 23
#: VMA flags (csrc/mm/vma.h's values, though only equality matters here).
VM_DONTCOPY, VM_WIPEONFORK = 8, 16
#: Flag advice: the flag, and whether it is set (else cleared).
MADV_FLAGS = {MADV_DONTFORK: (VM_DONTCOPY, True), MADV_DOFORK: (VM_DONTCOPY, False),
              MADV_WIPEONFORK: (VM_WIPEONFORK, True), MADV_KEEPONFORK: (VM_WIPEONFORK, False)}
MADV_POPULATE = (MADV_POPULATE_READ, MADV_POPULATE_WRITE)
#: Advice that changes nothing observable: only the range is checked.
MADV_HINTS = (MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED,
              14, 15, 16, 17, 20, 21)   # (NO)HUGEPAGE, DONT/DODUMP, COLD, PAGEOUT
SEGV_MAPERR, SEGV_ACCERR = 1, 2

TASK_SIZE = 0x7FFFFFFFF000
MMAP_BASE = 0x7F0000000000
START_BRK = 0x0000555555560000
MMAP_MIN_ADDR = 65536
DEFAULT_MAX_MAP_COUNT = 65530


class ModelOSError(Exception):
    """A failed system call: ``errno`` as the C core's negative return."""

    def __init__(self, err: int) -> None:
        super().__init__(errno.errorcode.get(err, err))
        self.errno = err


class ModelSegv(Exception):
    """A refused access: the faulting address and the si_code."""

    def __init__(self, addr: int, si_code: int) -> None:
        super().__init__(f"{addr:#x} si_code={si_code}")
        self.addr = addr
        self.si_code = si_code


def page_align(x: int) -> int:
    """PAGE_ALIGN in uint64 arithmetic (wraps to a small value on overflow)."""
    return (x + PAGE - 1) & PAGE_MASK & U64


def page_length(addr: int, length: int) -> int:
    """mm_mmap.c's page_length(): 0 if zero or if it overflows."""
    ln = page_align(length)
    if not length or ln < length or addr + ln > U64:
        return 0
    return ln


class Backing:
    """A shared anonymous mapping's pages (the kernel's shmem file)."""

    _ids = 0

    def __init__(self) -> None:
        Backing._ids += 1
        self.id = Backing._ids
        self.pages: Dict[int, bytearray] = {}

    def __repr__(self) -> str:
        return f"<Backing {self.id}: {sorted(self.pages)}>"


@dataclass
class MVma:
    start: int
    end: int
    prot: int
    backing: Optional[Backing] = None     # shared iff not None
    pgoff: int = 0                        # meaningful for shared ones only
    flags: int = 0                        # VM_DONTCOPY, VM_WIPEONFORK

    @property
    def shared(self) -> bool:
        return self.backing is not None

    def copy(self) -> "MVma":
        return MVma(self.start, self.end, self.prot, self.backing, self.pgoff, self.flags)

    def permits(self, write: bool) -> bool:
        return bool(self.prot & PROT_WRITE) if write else self.prot != PROT_NONE


@dataclass(frozen=True)
class MapRecord:
    """What the comparison looks at: mirrors mln.VMA's fields (pgoff only for shared)."""

    start: int
    end: int
    prot: int
    flags: int
    pgoff: Optional[int]
    heap: bool


def split_out(v: MVma, start: int, end: int) -> List[MVma]:
    """Copies of the pieces of @v cut at start and end where they fall inside it."""
    cuts = [c for c in (start, end) if v.start < c < v.end]
    out, at = [], v.start
    for c in cuts + [v.end]:
        out.append(MVma(at, c, v.prot, v.backing, v.pgoff + (at - v.start) // PAGE, v.flags))
        at = c
    return out


def normalized(vmas: List[MVma]) -> List[MVma]:
    """Sorted, touching private VMAs of the same protection and flags merged
    (the C layout is always maximally merged)."""
    out: List[MVma] = []
    for v in sorted(vmas, key=lambda v: v.start):
        p = out[-1] if out else None
        if (p is not None and p.end == v.start and not p.shared and not v.shared
                and p.prot == v.prot and p.flags == v.flags):
            p.end = v.end
        else:
            out.append(v.copy())
    return out


@dataclass
class ModelMM:
    vmas: List[MVma] = field(default_factory=list)
    private: Dict[int, bytearray] = field(default_factory=dict)
    brk: int = START_BRK
    start_brk: int = START_BRK
    mmap_base: int = MMAP_BASE
    max_map_count: int = 0      # 0: the default
    closed: bool = False

    # -- lookups ----------------------------------------------------------------------------

    def limit(self) -> int:
        return self.max_map_count or DEFAULT_MAX_MAP_COUNT

    def lookup(self, addr: int) -> Optional[MVma]:
        for v in self.vmas:
            if v.start <= addr < v.end:
                return v
        return None

    def intersecting(self, start: int, end: int) -> List[MVma]:
        return [v for v in self.vmas if v.start < end and v.end > start]

    def range_free(self, start: int, end: int) -> bool:
        return not self.intersecting(start, end)

    def vmas_in(self, start: int, end: int) -> int:
        return len(self.intersecting(start, end))

    def over_limit(self, after: List[MVma]) -> bool:
        """The limit rule, given the (merged) layout the operation would leave."""
        now = len(self.vmas)
        return len(after) > now and len(after) > self.limit()

    def fully_mapped(self, start: int, end: int) -> bool:
        at = start
        for v in self.vmas:
            if v.end <= at:
                continue
            if v.start > at:
                return False
            at = v.end
            if at >= end:
                return True
        return at >= end

    # -- layout changes ------------------------------------------------------------------------

    def _layout_unmap(self, start: int, end: int) -> List[MVma]:
        """The layout with [start, end) unmapped (merged: removal merges nothing)."""
        return [piece for v in self.vmas for piece in split_out(v, start, end)
                if not (piece.start >= start and piece.end <= end)]

    def _layout_map(self, new: MVma) -> List[MVma]:
        return normalized(self._layout_unmap(new.start, new.end) + [new])

    def _layout_protect(self, start: int, end: int, prot: int) -> List[MVma]:
        out = []
        for v in self.vmas:
            pieces = split_out(v, start, end) if v.prot != prot else [v.copy()]
            for piece in pieces:
                if piece.start >= start and piece.end <= end:
                    piece.prot = prot
                out.append(piece)
        return normalized(out)

    def _layout_flag(self, start: int, end: int, flag: int, on: bool) -> List[MVma]:
        """Each VMA of [start, end) with @flag set (@on) or cleared: split only
        where the flag changes, as change_range() does."""
        out = []
        for v in self.vmas:
            new = v.flags | flag if on else v.flags & ~flag
            pieces = split_out(v, start, end) if new != v.flags else [v.copy()]
            for piece in pieces:
                if piece.start >= start and piece.end <= end:
                    piece.flags = new
                out.append(piece)
        return normalized(out)

    def _zap_private(self, start: int, end: int) -> None:
        for a in [a for a in self.private if start <= a < end]:
            del self.private[a]

    # -- placement -----------------------------------------------------------------------------

    def _gaps(self) -> Iterator[Tuple[int, int]]:
        at = 0
        for v in self.vmas:
            if v.start > at:
                yield at, v.start
            at = v.end
        yield at, 1 << 64

    def _gap_topdown(self, ln: int, low: int, high: int) -> int:
        best = 0
        for s, e in self._gaps():
            s, e = max(s, low), min(e, high)
            if e - s >= ln:
                best = max(best, e - ln)
        return best

    def _find_room(self, hint: int, ln: int) -> int:
        hint -= hint % PAGE                 # round_hint_to_min: down, and lift a low hint
        if hint and hint < MMAP_MIN_ADDR:
            hint = MMAP_MIN_ADDR
        if hint:
            if hint + ln <= TASK_SIZE and self.range_free(hint, hint + ln):
                return hint
        a = self._gap_topdown(ln, MMAP_MIN_ADDR, self.mmap_base)
        if not a:
            a = self._gap_topdown(ln, MMAP_MIN_ADDR, TASK_SIZE)
        return a

    # -- system calls ----------------------------------------------------------------------------

    def mmap(self, length: int, prot: int, flags: int, addr: Optional[int] = None) -> int:
        addr = addr or 0
        typ = flags & (MAP_SHARED | MAP_PRIVATE)
        fixed = bool(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
        ln = page_align(length)
        if not flags & MAP_ANONYMOUS:
            raise ModelOSError(errno.EBADF)
        if not length:
            raise ModelOSError(errno.EINVAL)
        if ln < length or ln > TASK_SIZE:
            raise ModelOSError(errno.ENOMEM)
        if fixed:
            if addr + ln > TASK_SIZE:           # the range first, then the alignment
                raise ModelOSError(errno.ENOMEM)
            if addr % PAGE:
                raise ModelOSError(errno.EINVAL)
            if addr < MMAP_MIN_ADDR:
                raise ModelOSError(errno.EPERM)
        prot &= PROT_ALL
        if self.closed:
            raise ModelOSError(errno.EINVAL)
        if fixed:
            if flags & MAP_FIXED_NOREPLACE and not self.range_free(addr, addr + ln):
                raise ModelOSError(errno.EEXIST)
        else:
            addr = self._find_room(addr, ln)
            if not addr:
                raise ModelOSError(errno.ENOMEM)
        if typ not in (MAP_SHARED, MAP_PRIVATE):    # the kernel checks the type last
            raise ModelOSError(errno.EINVAL)
        after = self._layout_map(MVma(addr, addr + ln, prot,
                                      Backing() if typ == MAP_SHARED else None, 0))
        if self.over_limit(after):
            raise ModelOSError(errno.ENOMEM)
        self._zap_private(addr, addr + ln)
        self.vmas = after
        return addr

    def munmap(self, addr: int, length: int) -> None:
        ln = page_length(addr, length)
        end = addr + ln
        if addr % PAGE or not ln or end > TASK_SIZE:
            raise ModelOSError(errno.EINVAL)
        if self.closed:
            raise ModelOSError(errno.EINVAL)
        after = self._layout_unmap(addr, end)
        if self.over_limit(after):
            raise ModelOSError(errno.ENOMEM)
        self._zap_private(addr, end)
        self.vmas = after

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
        prot &= ~grows
        if grows == PROT_GROWSDOWN | PROT_GROWSUP:
            raise ModelOSError(errno.EINVAL)
        if addr % PAGE:
            raise ModelOSError(errno.EINVAL)
        if not length:
            return
        ln = page_length(addr, length)
        end = addr + ln
        if not ln:
            raise ModelOSError(errno.ENOMEM)
        if prot & ~(PROT_ALL | PROT_SEM):
            raise ModelOSError(errno.EINVAL)
        prot &= PROT_ALL
        if self.closed:
            raise ModelOSError(errno.EINVAL)
        if grows:
            # No VMA here grows down (the model makes none) and none grows up:
            # ENOMEM without a VMA in the range (or, growing up, a hole at addr).
            first = min((v.start for v in self.intersecting(addr, end)), default=None)
            if first is None or grows == PROT_GROWSUP and first > addr:
                raise ModelOSError(errno.ENOMEM)
            raise ModelOSError(errno.EINVAL)
        # As Linux: the VMAs up to the first hole change, then ENOMEM for the hole.
        stop = addr
        while stop < end:
            v = self.lookup(stop)
            if v is None:
                break
            stop = v.end
        stop = min(stop, end)
        if stop > addr:
            after = self._layout_protect(addr, stop, prot)
            if self.over_limit(after):
                raise ModelOSError(errno.ENOMEM)
            self.vmas = after
        if stop < end:
            raise ModelOSError(errno.ENOMEM)

    def brk_call(self, brk: int) -> int:
        ret = self.brk
        if self.closed or brk < self.start_brk or brk > TASK_SIZE:
            return ret
        oldbrk, newbrk = page_align(self.brk), page_align(brk)
        if newbrk == oldbrk:
            self.brk = brk
        elif brk < self.brk:
            after = self._layout_unmap(newbrk, oldbrk)
            if self.over_limit(after):
                return ret
            self._zap_private(newbrk, oldbrk)
            self.vmas = after
            self.brk = brk
        elif self._brk_grow(oldbrk, newbrk):
            self.brk = brk
        return self.brk

    def _brk_grow(self, oldbrk: int, newbrk: int) -> bool:
        if newbrk + PAGE > TASK_SIZE or not self.range_free(oldbrk, newbrk + PAGE):
            return False
        prev = self.lookup(oldbrk - 1) if oldbrk > MMAP_MIN_ADDR else None
        if prev is not None and not prev.shared and prev.prot == PROT_READ | PROT_WRITE \
                and prev.end == oldbrk and not prev.flags:
            prev.end = newbrk           # in place: no new VMA, no limit check
            self.vmas = normalized(self.vmas)
            return True
        after = self._layout_map(MVma(oldbrk, newbrk, PROT_READ | PROT_WRITE))
        if self.over_limit(after):
            return False
        self.vmas = after
        return True

    def madvise(self, addr: int, length: int, advice: int) -> None:
        drops = advice in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE)
        if addr % PAGE or not (drops or advice in MADV_HINTS or advice in MADV_FLAGS
                               or advice in MADV_POPULATE):
            raise ModelOSError(errno.EINVAL)
        if not length:
            return
        ln = page_length(addr, length)
        end = addr + ln
        if not ln:
            raise ModelOSError(errno.EINVAL)
        if self.closed:
            raise ModelOSError(errno.EINVAL)
        if advice in MADV_FLAGS:
            return self._madvise_flag(addr, end, advice)
        if advice in MADV_POPULATE:
            return self._madvise_populate(addr, end, advice)
        if advice == MADV_FREE and any(v.start < end and addr < v.end and v.shared
                                       for v in self.vmas):
            raise ModelOSError(errno.EINVAL)   # private anonymous memory only
        if drops:
            self._zap_private(addr, end)    # private pages come back zeroed; shared keep theirs
        if not self.fully_mapped(addr, end):
            raise ModelOSError(errno.ENOMEM)

    def _madvise_flag(self, addr: int, end: int, advice: int) -> None:
        """The mapped parts change; WIPEONFORK stops at a shared VMA (EINVAL);
        a split past the limit is EAGAIN with nothing changed."""
        flag, on = MADV_FLAGS[advice]
        stop = end
        if advice == MADV_WIPEONFORK:
            for v in self.vmas:
                if v.shared and v.start < end and v.end > addr:
                    stop = max(v.start, addr)
                    break
        if stop > addr:
            after = self._layout_flag(addr, stop, flag, on)
            if self.over_limit(after):
                raise ModelOSError(errno.EAGAIN)
            self.vmas = after
        if stop < end:
            raise ModelOSError(errno.EINVAL)
        if not self.fully_mapped(addr, end):
            raise ModelOSError(errno.ENOMEM)

    def _madvise_populate(self, addr: int, end: int, advice: int) -> None:
        """Linux 5.14: a VMA without the access's permission stops the walk
        with EINVAL; holes are passed over and reported with ENOMEM."""
        need = PROT_WRITE if advice == MADV_POPULATE_WRITE else PROT_READ
        at, hole = addr, False
        for v in self.vmas:
            if v.end <= at:
                continue
            if v.start >= end:
                break
            if v.start > at:
                hole = True
            if not v.prot & need:
                raise ModelOSError(errno.EINVAL)
            at = v.end
        if hole or at < end:
            raise ModelOSError(errno.ENOMEM)

    def set_max_map_count(self, n: int) -> None:
        self.max_map_count = n

    def fork(self) -> "ModelMM":
        if self.closed:
            raise ModelOSError(errno.EINVAL)
        def copied(a: int) -> bool:
            v = self.lookup(a)
            return v is None or not v.flags & (VM_DONTCOPY | VM_WIPEONFORK)

        return ModelMM(vmas=[v.copy() for v in self.vmas if not v.flags & VM_DONTCOPY],
                       private={a: bytearray(p) for a, p in self.private.items() if copied(a)},
                       brk=self.brk, start_brk=self.start_brk, mmap_base=self.mmap_base,
                       max_map_count=self.max_map_count)

    def close(self) -> None:
        if not self.closed:
            self.vmas = []
            self.private = {}
            self.closed = True

    # -- accesses ---------------------------------------------------------------------------------

    def _vma_for(self, addr: int, write: bool) -> MVma:
        v = None if self.closed else self.lookup(addr)
        if v is None:
            raise ModelSegv(addr, SEGV_MAPERR)
        if not v.permits(write):
            raise ModelSegv(addr, SEGV_ACCERR)
        return v

    def _page(self, v: MVma, page_addr: int, create: bool) -> Optional[bytearray]:
        if v.backing is not None:
            idx = v.pgoff + (page_addr - v.start) // PAGE
            pages = v.backing.pages
        else:
            idx, pages = page_addr, self.private
        p = pages.get(idx)
        if p is None and create:
            p = pages[idx] = bytearray(PAGE)
        return p

    def fault(self, addr: int, write: bool = False) -> None:
        self._vma_for(addr, write)

    def _chunks(self, addr: int, n: int) -> Iterator[Tuple[int, int, int]]:
        """(address, offset in page, length) of each page's part of [addr, addr+n)."""
        done = 0
        while done < n:
            off = addr % PAGE
            chunk = min(PAGE - off, n - done)
            yield addr, off, chunk
            addr += chunk
            done += chunk

    def read(self, addr: int, n: int) -> bytes:
        if addr + n > U64:
            raise ModelSegv(addr, SEGV_MAPERR)
        out = bytearray()
        for a, off, chunk in self._chunks(addr, n):
            v = self._vma_for(a, False)
            p = self._page(v, a - off, False)
            out += p[off:off + chunk] if p is not None else bytes(chunk)
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        """Writes the pages before a fault, as copy_to_user does."""
        n = len(data)
        if addr + n > U64:
            raise ModelSegv(addr, SEGV_MAPERR)
        done = 0
        for a, off, chunk in self._chunks(addr, n):
            v = self._vma_for(a, True)
            p = self._page(v, a - off, True)
            p[off:off + chunk] = data[done:done + chunk]
            done += chunk

    def get_user_pages(self, addr: int, n: int, write: bool = False) -> List[bytes]:
        """The pinned pages' contents (a fault pins nothing)."""
        out = []
        for i in range(n):
            a = addr + i * PAGE
            v = self._vma_for(a, write)
            p = self._page(v, a, False)
            out.append(bytes(p) if p is not None else bytes(PAGE))
        return out

    # -- views -------------------------------------------------------------------------------------

    def maps(self) -> List[MapRecord]:
        return [MapRecord(v.start, v.end, v.prot, MAP_SHARED if v.shared else MAP_PRIVATE,
                          v.pgoff if v.shared else None,
                          v.start <= self.brk and v.end >= self.start_brk)
                for v in self.vmas]

    def content_pages(self) -> List[int]:
        """Page addresses whose contents may be non-zero (written at some point)."""
        out = [a for a in self.private if self.lookup(a) is not None]
        for v in self.vmas:
            if v.backing is not None:
                for idx in v.backing.pages:
                    a = v.start + (idx - v.pgoff) * PAGE
                    if v.start <= a < v.end:
                        out.append(a)
        return sorted(set(out))


def records_of(real_maps: list) -> List[MapRecord]:
    """mln.MM.maps() in the model's terms (pgoff kept for shared VMAs only)."""
    return [MapRecord(v.start, v.end, v.prot, v.flags, v.pgoff if v.flags == MAP_SHARED else None,
                      bool(v.heap)) for v in real_maps]
