"""Unicorn bound to an :class:`~mmap_lock_native.MM`: the mm is the guest's
address space and its mmap lock, each guest thread one Unicorn instance
whose memory map is a secondary MMU of the mm (``docs/embedding.md``).

Needs the optional extra: ``pip install 'mmap-lock-native[unicorn]'``.

What the adapter does for each guest thread (:class:`GuestThread`):

- **maps guest memory zero-copy, on demand**: an access Unicorn finds
  unmapped (or mapped without the permission it needs) is resolved in the
  mm (``MM.vma_host_range``: a fault, copy-on-write included) and the host
  range mapped with ``uc.mem_map_ptr``.  An :class:`Emulator` makes its mm
  with contiguous host backing (``MM(host_backing=True)``), so that range
  is a whole VMA (one region, one ``mem_map_ptr``); regions already mapped
  the same way stay, and only the gaps between them are mapped.  Given an
  mm without it, each range is one page;
- **keeps every instance coherent** through its :class:`SecondaryMMU`: the
  mm's invalidations (munmap, mprotect, copy-on-write, DONTNEED, fork,
  mremap) stop the instance with ``uc_emu_stop``, called from C without the
  GIL and repeated until it has left ``emu_start``, and the records are
  applied (``mem_unmap``/``mem_protect``) before it runs guest code again;
- **delivers SIGSEGV** to the guest: a :class:`GuestSignal` with ``si_code``
  (``SEGV_MAPERR``/``SEGV_ACCERR``) and the address, to ``on_signal``, which
  may resume the guest (after fixing its state) or end the thread;
- **sets the current task** per guest thread, so the lock statistics, the
  lock-order checker and the recorder see one task per guest thread;
- **implements the memory system calls** of an x86-64 and an arm64 guest
  (mmap, munmap, mprotect, brk, madvise, mremap, plus write, getpid, gettid,
  exit, exit_group; fork on x86-64, and clone as fork on both: CLONE_VM and
  the other thread, vfork and namespace flags are ENOSYS), through ``MM.sys_*``.

Guest code never runs while its thread is inside the mm: every hook leaves
the guest (``SecondaryMMU.exit``) before it calls into the mm and drains the
invalidations before it enters again.
"""
from __future__ import annotations

import bisect
import errno as _errno
import itertools
import threading
import weakref
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

try:
    import unicorn as _uc
    from unicorn import arm64_const as _arm64
    from unicorn import x86_const as _x86
except ImportError as exc:  # pragma: no cover - exercised when the extra is absent
    raise ImportError("mmap_lock_native.unicorn needs the unicorn package: "
                      "pip install 'mmap-lock-native[unicorn]' (unicorn 2.1)") from exc

from . import tasks as _tasks
from ._unicorn_abi import SyscallRegs, uc_emu_stop_address
from ._args import int_in
from .mm import MM
from .secondary import InvalidationReason, SecondaryMMU
from .vm import (PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, TASK_SIZE, Access, HostRange,
                 SegmentationFault)

__all__ = ["ARCHES", "Emulator", "ExitStatus", "GuestSignal", "GuestThread", "uc_emu_stop_address"]

SIGSEGV = 11
_UC_PROT = {PROT_READ: _uc.UC_PROT_READ, PROT_WRITE: _uc.UC_PROT_WRITE,
            PROT_EXEC: _uc.UC_PROT_EXEC}
_ACCESS = {_uc.UC_MEM_READ_UNMAPPED: Access.READ, _uc.UC_MEM_READ_PROT: Access.READ,
           _uc.UC_MEM_WRITE_UNMAPPED: Access.WRITE, _uc.UC_MEM_WRITE_PROT: Access.WRITE,
           _uc.UC_MEM_FETCH_UNMAPPED: Access.EXEC, _uc.UC_MEM_FETCH_PROT: Access.EXEC}
_NEVER = (1 << 64) - 1     # an emu_start "until" no guest reaches


def _uc_prot_of(prot: int) -> int:
    out = 0
    for bit, ucbit in _UC_PROT.items():
        if prot & bit:
            out |= ucbit
    return out


_UC_PROT_OF = tuple(_uc_prot_of(p) for p in range(8))


def _uc_prot(prot: int) -> int:
    """Unicorn's protection bits for PROT_* ``prot`` (others ignored)."""
    return _UC_PROT_OF[prot & 7]


class GuestSignal(NamedTuple):
    """A signal for the guest: SIGSEGV with its ``si_code`` and address."""

    signo: int
    si_code: int
    addr: int
    access: Access


class ExitStatus(NamedTuple):
    """How a guest thread ended: ``exit(code)``, or a signal it did not survive."""

    code: Optional[int]
    signal: Optional[GuestSignal]


class _Arch(NamedTuple):
    """What differs between guest architectures."""

    name: str
    uc_arch: int
    uc_mode: int
    pc: int
    sp: int
    nr: int                     # the register with the syscall number
    args: Tuple[int, ...]       # syscall arguments, in order
    ret: int                    # the register with the result
    syscalls: Dict[int, str]    # number -> name
    hook: Tuple[int, ...]       # hook_add's type and extra arguments for the syscall trap
    regs: Tuple[int, ...]       # every register fork copies
    trap_length: int            # from the pc the trap hook reads to the next instruction
    clone_tids: Tuple[int, int]  # clone's parent_tid and child_tid argument positions


_X86_64 = _Arch(
    "x86_64", _uc.UC_ARCH_X86, _uc.UC_MODE_64, _x86.UC_X86_REG_RIP, _x86.UC_X86_REG_RSP,
    _x86.UC_X86_REG_RAX,
    (_x86.UC_X86_REG_RDI, _x86.UC_X86_REG_RSI, _x86.UC_X86_REG_RDX, _x86.UC_X86_REG_R10,
     _x86.UC_X86_REG_R8, _x86.UC_X86_REG_R9),
    _x86.UC_X86_REG_RAX,
    {0: "read", 1: "write", 9: "mmap", 10: "mprotect", 11: "munmap", 12: "brk", 25: "mremap",
     28: "madvise", 39: "getpid", 56: "clone", 57: "fork", 60: "exit", 186: "gettid",
     231: "exit_group"},
    (_uc.UC_HOOK_INSN, _x86.UC_X86_INS_SYSCALL),
    tuple(getattr(_x86, f"UC_X86_REG_{r}") for r in (
        "RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP", "R8", "R9", "R10", "R11",
        "R12", "R13", "R14", "R15", "RIP", "EFLAGS", "FS_BASE", "GS_BASE")),
    2,                          # the hook sees rip at the 2-byte syscall
    (2, 3))                     # clone(flags, stack, parent_tid, child_tid, tls)

_ARM64 = _Arch(
    "arm64", _uc.UC_ARCH_ARM64, _uc.UC_MODE_ARM, _arm64.UC_ARM64_REG_PC,
    _arm64.UC_ARM64_REG_SP, _arm64.UC_ARM64_REG_X8,
    tuple(getattr(_arm64, f"UC_ARM64_REG_X{i}") for i in range(6)),
    _arm64.UC_ARM64_REG_X0,
    {64: "write", 93: "exit", 94: "exit_group", 172: "getpid", 178: "gettid", 214: "brk",
     215: "munmap", 216: "mremap", 220: "clone", 222: "mmap", 226: "mprotect", 233: "madvise"},
    (_uc.UC_HOOK_INTR,),
    tuple(getattr(_arm64, f"UC_ARM64_REG_X{i}") for i in range(31)) + (
        _arm64.UC_ARM64_REG_SP, _arm64.UC_ARM64_REG_PC, _arm64.UC_ARM64_REG_NZCV),
    0,                          # svc's exception leaves pc at the next instruction
    (2, 4))                     # clone(flags, stack, parent_tid, tls, child_tid)

#: The guest architectures, by name.
ARCHES: Dict[str, _Arch] = {"x86_64": _X86_64, "arm64": _ARM64}
_ARM64_EXCP_SWI = 2         # the interrupt number of svc
# clone flags a fork-like clone may have (glibc's fork uses the first three);
# the low byte is the exit signal.  Threads, vfork and namespaces are not emulated.
_CLONE_CHILD_CLEARTID, _CLONE_PARENT_SETTID, _CLONE_CHILD_SETTID = 0x200000, 0x100000, 0x1000000
_CLONE_FORK_FLAGS = _CLONE_CHILD_CLEARTID | _CLONE_PARENT_SETTID | _CLONE_CHILD_SETTID | 0xFF


class _Regions:
    """What one Unicorn instance has mapped: guest [start, end) -> (host, prot),
    kept sorted, so that an invalidation finds what it overlaps in O(log n)
    and can split a region (a whole-VMA range, once there are such, may be
    invalidated in part)."""

    def __init__(self, uc: Any) -> None:
        self.uc = uc
        self.starts: List[int] = []
        self.map: Dict[int, Tuple[int, int, int]] = {}     # start -> (end, host, prot)

    def _add(self, start: int, end: int, host: int, prot: int) -> None:
        bisect.insort(self.starts, start)
        self.map[start] = (end, host, prot)

    def _remove(self, start: int) -> Tuple[int, int, int]:
        del self.starts[bisect.bisect_left(self.starts, start)]
        return self.map.pop(start)

    def _overlapping(self, start: int, end: int) -> List[Tuple[int, int, int, int]]:
        """The regions overlapping [start, end), as (start, end, host, prot), in order."""
        out = []
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while i < len(self.starts) and self.starts[i] < end:
            rs = self.starts[i]
            re, host, prot = self.map[rs]
            if re > start:
                out.append((rs, re, host, prot))
            i += 1
        return out

    def _agrees(self, region: Tuple[int, int, int, int], hr: HostRange) -> bool:
        """Whether a region maps its part of ``hr`` to the same host memory with at
        least ``hr``'s protection: it is still exact (no invalidation removed it),
        so it stays, and a whole-VMA range only fills in around it."""
        rs, _, host, prot = region
        return host - rs == hr.host - hr.start and prot & hr.prot == hr.prot

    def install(self, hr: HostRange, replace: bool = True) -> bool:
        """Map ``hr``: the regions that agree with it stay and the gaps between
        them are mapped.  Regions that translate part of it differently go
        first, or with ``replace`` False nothing is done and False returned
        (inside a hook Unicorn cannot have a region replaced)."""
        over = self._overlapping(hr.start, hr.end)
        if not over:            # the common case: nothing of it mapped yet
            self.uc.mem_map_ptr(hr.start, hr.end - hr.start, _uc_prot(hr.prot), hr.host)
            self._add(hr.start, hr.end, hr.host, hr.prot)
            return True
        if not all(self._agrees(r, hr) for r in over):
            if not replace:
                return False
            for r in over:
                if not self._agrees(r, hr):
                    self.change(max(r[0], hr.start), min(r[1], hr.end), None)
            over = self._overlapping(hr.start, hr.end)
        at = hr.start
        for rs, re, _, _ in over + [(hr.end, hr.end, 0, 0)]:
            if rs > at:
                self.uc.mem_map_ptr(at, rs - at, _uc_prot(hr.prot), hr.host + (at - hr.start))
                self._add(at, rs, hr.host + (at - hr.start), hr.prot)
            at = max(at, re)
        return True

    def change(self, start: int, end: int, new_prot: Optional[int]) -> None:
        """Unmap [start, end) (``new_prot`` None or 0), or lower its protection to
        what ``new_prot`` allows; the parts of regions outside stay as they were."""
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while i < len(self.starts) and self.starts[i] < end:
            rs = self.starts[i]
            re, host, prot = self.map[rs]
            if re <= start:
                i += 1
                continue
            s, e = max(rs, start), min(re, end)
            keep = prot & new_prot if new_prot else 0
            if keep == prot:
                i += 1
                continue
            self._remove(rs)
            if keep:
                self.uc.mem_protect(s, e - s, _uc_prot(keep))
                self._add(s, e, host + (s - rs), keep)
            else:
                self.uc.mem_unmap(s, e - s)
            if rs < s:
                self._add(rs, s, host, prot)
            if e < re:
                self._add(e, re, host + (e - rs), prot)
            i = bisect.bisect_right(self.starts, e - 1)

    def __len__(self) -> int:
        return len(self.starts)


def _close(smmu: SecondaryMMU, uc: Any) -> None:
    """A dropped thread: abandon its consumer before the engine can go (the
    finalizer holds ``uc``, so the kick never reaches a closed engine)."""
    smmu._finalizer()   # abandon: never kicked or waited for again


_pids = itertools.count(1000)


class GuestThread:
    """One guest thread: a Unicorn instance on the emulator's mm.

    ``on_signal(thread, signal) -> bool`` is called for each SIGSEGV: True
    resumes the guest at ``thread.pc``, the faulting instruction unless the
    handler moved it (as a guest's handler would longjmp), False ends the
    thread with that signal.  Without one, a SIGSEGV ends the thread.
    """

    def __init__(self, emu: "Emulator", pc: int, sp: int = 0,
                 regs: Optional[Dict[int, int]] = None, task: Optional[int] = None,
                 on_signal: Optional[Callable[["GuestThread", GuestSignal], bool]] = None
                 ) -> None:
        self.emu = emu
        self.mm = emu.mm
        self.arch = emu.arch
        #: The task id this thread's mm calls are made as.
        self.task = task if task is not None else next(emu._tasks)
        self.on_signal = on_signal
        #: SIGSEGVs delivered, in order.
        self.signals: List[GuestSignal] = []
        #: Hook calls, by kind: faults resolved, syscalls, invalidation records applied, runs.
        self.counts = {"faults": 0, "syscalls": 0, "invalidations": 0, "runs": 0}
        self.status: Optional[ExitStatus] = None
        self.uc = _uc.Uc(self.arch.uc_arch, self.arch.uc_mode)
        self.regions = _Regions(self.uc)
        handle = int(self.uc._uch.value)
        self.smmu = self.mm.secondary_mmu((emu._kick, handle))
        self._finalizer = weakref.finalize(self, _close, self.smmu, self.uc)
        self._pending_signal: Optional[GuestSignal] = None
        self._fault: Optional[Tuple[int, int, Access]] = None
        self._regs = SyscallRegs(self.uc, handle, (self.arch.nr, *self.arch.args), self.arch.ret)
        self.uc.hook_add(_uc.UC_HOOK_MEM_UNMAPPED | _uc.UC_HOOK_MEM_PROT, self._on_memory)
        self.uc.hook_add(self.arch.hook[0], self._on_trap, None, 1, 0, *self.arch.hook[1:])
        for reg, value in (regs or {}).items():
            self.uc.reg_write(reg, value)
        if sp:
            self.uc.reg_write(self.arch.sp, sp)
        #: Where the guest resumes (the faulting instruction after a signal).
        self.pc = pc

    # -- the guest's memory, on demand --------------------------------------------------

    def _drain(self) -> None:
        """Apply every invalidation record to this instance's map."""
        for rec in self.smmu.drain():
            self.counts["invalidations"] += 1
            lower = rec.reason in (InvalidationReason.PROTECT, InvalidationReason.WRPROTECT)
            self.regions.change(rec.start, rec.end, rec.new_prot if lower else None)

    def _enter(self) -> None:
        """Enter the guest, draining first whatever is pending."""
        while not self.smmu.enter():
            self._drain()

    def _resolve(self, addr: int, size: int, access: Access, inline: bool) -> Optional[bool]:
        """Map the pages an access of ``size`` bytes at ``addr`` needs, outside
        the guest, by KVM's protocol: drain, read the count, look up, and
        install only if no invalidation of that range started since.  No
        record may be drained between that check and the install (the
        record would be lost while the translation it kills goes in); one
        that comes after it leaves a record pending, and entering the guest
        then fails until it is drained.

        True: mapped; None: a signal is pending for the guest.  ``inline``
        (inside a memory hook): Unicorn cannot have a region it is accessing
        replaced, nor records applied there, so False asks the run loop to
        do it outside.  Whatever range ``vma_host_range`` returns (the VMA's
        window with host backing, else a page) is mapped whole, around what
        already maps part of it the same way."""
        first = addr & ~(PAGE_SIZE - 1)
        last = (addr + max(size, 1) - 1) & ~(PAGE_SIZE - 1)
        covered = 0     # the end of what this call mapped (a whole VMA maps both pages)
        for page in ((first,) if last == first else (first, last)):
            if page < covered:
                continue
            while True:
                if not inline:
                    self._drain()
                elif self.smmu.pending:
                    return False
                seq = self.smmu.seq
                try:
                    hr = self.mm.vma_host_range(max(page, addr), access)
                except SegmentationFault as fault:
                    self._pending_signal = GuestSignal(SIGSEGV, fault.si_code, addr, access)
                    return None
                if self.smmu.changed_since(seq, hr.start, hr.end):
                    continue
                if not self.regions.install(hr, replace=not inline):
                    return False
                self.counts["faults"] += 1
                covered = hr.end
                break
        return True

    def _premap(self, addr: int, prot: int) -> None:
        """After a guest mmap on a host-backed mm: map the new range now, as
        the lazy path would on the first access, sparing that access a
        Unicorn exit.  A read of the first page is all it costs the mm (its
        slot's frame becomes the page: no data allocated, no syscall); when
        it cannot be done here (records pending, PROT_NONE, no memory) the
        first access maps it as usual."""
        if not prot & PROT_READ:
            return
        if not self._resolve(addr, 1, Access.READ, inline=True):
            self._pending_signal = None     # a signal is the guest's only for its own access

    def _on_memory(self, uc: Any, uc_access: int, addr: int, size: int, value: int,
                   data: Any) -> bool:
        access = _ACCESS.get(uc_access, Access.READ)
        self.smmu.exit()
        done = self._resolve(addr, size, access, inline=True)
        if done and self.smmu.enter():
            return True                 # retried at once by Unicorn
        if done is not None:            # not mapped here, or records came meanwhile
            self._fault = (addr, size, access)
        return False                    # the run loop takes over at this instruction

    # -- system calls --------------------------------------------------------------------

    def _on_trap(self, uc: Any, *args: Any) -> None:
        if self.arch is _ARM64 and args[0] != _ARM64_EXCP_SWI:
            return
        self.smmu.exit()
        try:
            nr, *argv = self._regs.read()
            self.counts["syscalls"] += 1
            name = self.arch.syscalls.get(nr, "")
            ret = self._syscall(name, argv)
            rec = self.emu.recorder
            if rec is not None and rec._active:
                rec.annotate(f"syscall {name or nr}", nr=nr, ret=ret)
            if ret is not None:
                self._regs.write_result(ret)
        finally:
            self._enter()       # drains first whatever the call left pending

    def _syscall(self, name: str, a: List[int]) -> Optional[int]:
        mm = self.mm
        if name == "mmap":
            ret = mm.sys_mmap(*a[:6])
            if ret >= 0 and mm.host_backing:
                self._premap(ret, a[2])
            return ret
        if name == "munmap":
            return mm.sys_munmap(a[0], a[1])
        if name == "mprotect":
            return mm.sys_mprotect(a[0], a[1], a[2])
        if name == "brk":
            return mm.sys_brk(a[0])
        if name == "madvise":
            return mm.sys_madvise(a[0], a[1], a[2])
        if name == "mremap":
            return mm.sys_mremap(a[0], a[1], a[2], a[3], a[4])
        if name == "write":
            return self._write(a[0], a[1], a[2])
        if name in ("getpid", "gettid"):
            return self.emu.pid if name == "getpid" else self.task
        if name in ("exit", "exit_group"):
            self.status = ExitStatus(a[0] & 0xFF, None)
            self.uc.emu_stop()
            return None
        if name == "fork":
            return self.emu._fork(self).emu.pid
        if name == "clone":
            return self._clone(a)
        return -_errno.ENOSYS

    def _clone(self, a: List[int]) -> int:
        """clone(2) as fork: a new stack if given, the child's pid stored at
        parent_tid / child_tid as asked (a fault there is ignored, as the
        kernel ignores it); -ENOSYS for what only threads, vfork or
        namespaces need (CLONE_VM and the rest)."""
        flags = a[0] & 0xFFFFFFFF     # the legacy clone reads the low 32 bits
        if flags & ~_CLONE_FORK_FLAGS:
            return -_errno.ENOSYS
        child = self.emu._fork(self, sp=a[1])
        pid = child.emu.pid
        ptid, ctid = (a[i] for i in self.arch.clone_tids)
        for wanted, mm, addr in ((_CLONE_PARENT_SETTID, self.mm, ptid),
                                 (_CLONE_CHILD_SETTID, child.mm, ctid)):
            if flags & wanted:
                try:
                    mm.write(addr, pid.to_bytes(4, "little"))
                except SegmentationFault:
                    pass
        return pid

    def _write(self, fd: int, buf: int, n: int) -> int:
        if fd not in (1, 2):
            return -_errno.EBADF
        try:
            data = self.mm.read(buf, min(n, 1 << 20))
        except SegmentationFault:
            return -_errno.EFAULT
        self.emu.output.append((fd, data))
        return len(data)

    # -- running -----------------------------------------------------------------------

    def run(self) -> ExitStatus:
        """Run the guest thread until it exits or dies of a signal, on the
        calling Python thread, as this guest thread's task."""
        previous = _tasks.current_task()
        _tasks.set_current_task(self.task)
        try:
            while self.status is None:
                self._run_once()
        finally:
            _tasks.set_current_task(previous if previous != self.task else None)
        return self.status

    def _run_once(self) -> None:
        self._enter()
        failed: Optional[BaseException] = None
        try:
            self.counts["runs"] += 1
            self.uc.emu_start(self.pc, _NEVER)
        except _uc.UcError as exc:
            failed = getattr(self.uc, "_hook_exception", None) or exc
        finally:
            self.smmu.exit()
        self.pc = self.uc.reg_read(self.arch.pc)
        fault, self._fault = self._fault, None
        if fault is not None:
            self._resolve(*fault, inline=False)     # then restart at the same instruction
        sig, self._pending_signal = self._pending_signal, None
        if sig is not None:
            self.signals.append(sig)
            rec = self.emu.recorder
            if rec is not None and rec._active:
                rec.annotate("SIGSEGV", si_code=sig.si_code, addr=hex(sig.addr))
            if self.on_signal is None or not self.on_signal(self, sig):
                self.status = ExitStatus(None, sig)
            return
        if failed is not None and self.status is None and fault is None:
            raise RuntimeError(f"guest thread {self.task} at pc {self.pc:#x}: {failed}") from failed

    def restart(self, pc: int, regs: Optional[Dict[int, int]] = None) -> None:
        """Make an ended thread runnable again at ``pc`` (its map of guest
        memory kept), with ``regs`` written first."""
        for reg, value in (regs or {}).items():
            self.uc.reg_write(reg, value)
        self.pc = pc
        self.status = None

    def close(self) -> None:
        """Unregister from the mm (its write lock); the Unicorn instance goes with this object."""
        self.smmu.close()
        self._finalizer.detach()

    def __repr__(self) -> str:
        return (f"<GuestThread task {self.task} pc {self.pc:#x} on {self.mm._label()}: "
                f"{len(self.regions)} regions, {self.status or 'running'}>")


class Emulator:
    """An mm and its guest threads (``arch``: ``"x86_64"`` or ``"arm64"``).
    Without ``mm``, it makes one with contiguous host backing, so that each
    VMA is one Unicorn region (a plain one where the host cannot have it).

    ``emu.load(code, addr)`` maps code; ``emu.stack()`` a growing stack;
    ``emu.thread(pc, sp)`` a guest thread, run with ``thread.run()`` (one
    Python thread each).  ``output`` collects what the guest wrote to fds 1
    and 2; ``children`` the threads its forks made (run them too).
    """

    def __init__(self, mm: Optional[MM] = None, arch: str = "x86_64") -> None:
        if mm is not None and not isinstance(mm, MM):
            raise TypeError(f"Emulator: mm must be an MM or None, not {type(mm).__name__}")
        if not isinstance(arch, str) or arch not in ARCHES:
            raise ValueError(f"Emulator: arch {arch!r:.40} is not one of {', '.join(ARCHES)}")
        if mm is None:
            try:
                mm = MM(name="guest", host_backing=True)
            except MemoryError:     # no frame file here (memfd_create): a region per page
                mm = MM(name="guest")
        self.mm = mm
        self.arch = ARCHES[arch]
        self.pid = next(_pids)
        self.output: List[Tuple[int, bytes]] = []
        #: Guest threads made by fork(), not yet run.
        self.children: List[GuestThread] = []
        #: A ``trace.record(mm)`` recorder: the guest's syscalls and signals
        #: are annotated on its threads' tracks while it records.
        self.recorder: Optional[Any] = None
        self._kick = uc_emu_stop_address()
        self._tasks = itertools.count(self.pid * 1000)
        self._lock = threading.Lock()

    def load(self, code: bytes, addr: int, prot: int = PROT_READ | PROT_EXEC) -> int:
        """Map ``code`` at ``addr`` (MAP_FIXED, page-rounded) with ``prot``."""
        where = f"Emulator.load on {self.mm._label()}"
        addr = int_in(addr, "addr", where, 0, TASK_SIZE)
        try:
            code = bytes(memoryview(code))
        except TypeError:
            raise TypeError(f"{where}: code must be a bytes-like object, not "
                            f"{type(code).__name__}") from None
        if not code:
            raise ValueError(f"{where}: code is empty")
        length = (len(code) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        from .vm import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE
        self.mm.mmap(length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, addr)
        self.mm.write(addr, code)
        self.mm.mprotect(addr, length, prot)
        return addr

    def stack(self, size: int = 64 * PAGE_SIZE) -> int:
        """A MAP_GROWSDOWN stack of ``size`` bytes to start with: its top."""
        from .vm import MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_PRIVATE
        base = self.mm.mmap(size, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN)
        return base + size

    def thread(self, pc: int, sp: int = 0, regs: Optional[Dict[int, int]] = None,
               on_signal: Optional[Callable[[GuestThread, GuestSignal], bool]] = None
               ) -> GuestThread:
        """A new guest thread starting at ``pc`` (stack pointer ``sp``, other
        registers from ``regs``: Unicorn register id -> value)."""
        where = f"Emulator.thread on {self.mm._label()}"
        pc = int_in(pc, "pc", where, 0, (1 << 64) - 1)
        sp = int_in(sp, "sp", where, 0, (1 << 64) - 1)
        if regs is not None and not isinstance(regs, dict):
            raise TypeError(f"{where}: regs must be a dict of register id -> value, not "
                            f"{type(regs).__name__}")
        if on_signal is not None and not callable(on_signal):
            raise TypeError(f"{where}: on_signal must be callable or None")
        return GuestThread(self, pc, sp, regs, on_signal=on_signal)

    def _fork(self, parent: GuestThread, sp: int = 0) -> GuestThread:
        """fork(): the child mm (copy-on-write), a child emulator and its one
        thread, with the parent's registers (the stack pointer ``sp`` if
        given) and 0 as fork's result."""
        child_mm = self.mm.fork()
        child = Emulator(child_mm, parent.arch.name)
        regs = {r: parent.uc.reg_read(r) for r in parent.arch.regs}
        regs[parent.arch.ret] = 0
        if sp:
            regs[parent.arch.sp] = sp
        pc = regs.pop(parent.arch.pc) + parent.arch.trap_length
        thread = child.thread(pc, regs=regs, on_signal=parent.on_signal)
        with self._lock:
            self.children.append(thread)
        return thread
