"""A real guest, end to end (issue 11, item 4): x86-64 machine code
(``mmap_lock_native.guest_x86_64``) run under Unicorn by the adapter, guest
threads sharing one MM: mmap/touch/munmap loops and brk beside each other,
mprotect then a write (SEGV_ACCERR), a munmap by one thread making the
other's next access fault (SEGV_MAPERR) and never read the old page, fork
with copy-on-write both ways while another guest thread runs, MAP_FIXED
remaps racing MADV_DONTNEED and mprotect; and an arm64 guest's memory
system calls.  Needs the ``unicorn`` extra; every wait is bounded."""
from __future__ import annotations

import errno
import shutil
import subprocess
from typing import Dict, List, Optional

import pytest

import mmap_lock_native as mln
from conftest import TIMEOUT, Worker

try:
    import unicorn  # noqa: F401
except Exception as exc:  # noqa: B902 - missing, or a wheel whose library will not load
    pytest.skip(f"the Unicorn adapter's tests need the unicorn package (pip install "
                f"'mmap-lock-native[unicorn]'): {type(exc).__name__}: {exc}",
                allow_module_level=True)

from unicorn.x86_const import (UC_X86_REG_RCX, UC_X86_REG_RDI,  # noqa: E402
                               UC_X86_REG_RDX, UC_X86_REG_RSI)

from mmap_lock_native import guest_x86_64 as guest  # noqa: E402
from mmap_lock_native.unicorn import Emulator, GuestSignal, GuestThread  # noqa: E402

P = mln.PAGE_SIZE
RW = mln.PROT_READ | mln.PROT_WRITE
PRIV = mln.MAP_PRIVATE | mln.MAP_ANONYMOUS
CODE_AT = 0x400000
#: Guest runs are bounded by their loop counts; this bounds the test's wait.
RUN_TIMEOUT = 6 * TIMEOUT


#: Whether the test's mm has contiguous host backing (the _backing fixture sets it).
_HOST_BACKING = False


@pytest.fixture(params=[False, True], ids=["per-page", "host-backed"], autouse=True)
def _backing(request):
    """Every test twice: pages as separate host allocations (one Unicorn region
    each), and contiguous host backing (a region per VMA)."""
    global _HOST_BACKING
    _HOST_BACKING = request.param
    yield
    _HOST_BACKING = False


def _emulator(name: str) -> Emulator:
    emu = Emulator(mln.MM(name=name, host_backing=_HOST_BACKING))
    emu.load(guest.CODE, CODE_AT)
    return emu


def _thread(emu: Emulator, entry: str, *args: int, **kw) -> GuestThread:
    regs = dict(zip((UC_X86_REG_RDI, UC_X86_REG_RSI, UC_X86_REG_RDX, UC_X86_REG_RCX), args))
    return emu.thread(CODE_AT + guest.ENTRY[entry], emu.stack(), regs, **kw)


def _run_all(*threads: GuestThread) -> List[mln.unicorn.ExitStatus]:
    workers = [Worker(t.run, name=f"guest-{t.task}").begin() for t in threads]
    return [w.finish(RUN_TIMEOUT) for w in workers]


def test_the_stored_machine_code_is_the_source_assembled(tmp_path):
    if not shutil.which("as") or not shutil.which("objcopy"):
        pytest.skip("GNU as and objcopy are not installed: the stored code cannot be rebuilt")
    src = tmp_path / "guest.S"
    src.write_text(guest.SOURCE)
    subprocess.run(["as", "--64", "-o", str(tmp_path / "g.o"), str(src)], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(tmp_path / "g.o"),
                    str(tmp_path / "g.bin")], check=True)
    assert (tmp_path / "g.bin").read_bytes() == guest.CODE


def test_two_guest_threads_map_touch_unmap_and_use_brk_on_one_mm():
    emu = _emulator("two")
    before = emu.mm.nr_pages()
    pf1 = _thread(emu, "page_fault1", 20, 16)
    mm1 = _thread(emu, "mmap1", 50)
    heap = _thread(emu, "heap")
    with mln.trace.record(emu.mm, 1 << 18) as rec:
        assert _run_all(pf1, mm1, heap) == [(0, None)] * 3
    assert emu.mm.nr_pages() == before          # every page the loops touched is gone
    assert pf1.counts["syscalls"] == 41
    if _HOST_BACKING:   # a region per VMA: a fault or so per mapping, not one per page
        assert 20 <= pf1.counts["faults"] < 20 * 4
    else:
        assert pf1.counts["faults"] >= 20 * 16
    # Each guest thread is its own task on the lock's tracks.
    tasks = {e.task for e in rec.events}
    assert {pf1.task, mm1.task, heap.task} <= tasks
    assert {"mmap", "munmap", "brk"} <= {e.mm_op for e in rec.events}
    for t in (pf1, mm1, heap):
        t.close()


def test_mprotect_to_read_only_then_a_write_is_segv_accerr():
    emu = _emulator("protect")
    t = _thread(emu, "protect")
    status = t.run()
    assert status.code is None and status.signal.signo == 11
    assert status.signal.si_code == mln.SEGV_ACCERR
    assert status.signal.access == mln.Access.WRITE
    v = emu.mm.vma_lookup(status.signal.addr)
    assert v is not None and v.prot == mln.PROT_READ
    t.close()


#: Runs of the munmap race until one exercised it (the scheduler decides
#: whether the reader runs inside a munmap window; on a loaded machine a run
#: may see none).  Every run checks that nothing stale was read.
MUNMAP_RACE_RUNS = 5


def _munmap_race_once() -> "tuple[List[GuestSignal], GuestThread]":
    """One run: statuses checked (exit 3 would be a stale read); the reader's
    signals and the reader (closed by the caller)."""
    emu = _emulator("munmap")
    p_addr, e_addr = 0x50000000, emu.mm.mmap(P, RW, PRIV)
    emu.mm.mmap(P, RW, PRIV | mln.MAP_FIXED, p_addr)
    faults: List[GuestSignal] = []

    def retry(thread: GuestThread, sig: GuestSignal) -> bool:
        faults.append(sig)
        thread.pc = CODE_AT + guest.ENTRY["reader"]
        return sig.si_code == mln.SEGV_MAPERR and sig.addr & ~(P - 1) == p_addr

    reader = _thread(emu, "reader", p_addr, e_addr, on_signal=retry)
    writer = _thread(emu, "writer", p_addr, e_addr, 60, 20000)
    try:
        assert _run_all(reader, writer) == [(0, None), (0, None)]
    finally:
        emu.mm.write(e_addr, (-1).to_bytes(8, "little", signed=True))
        writer.close()
    assert all(f.si_code == mln.SEGV_MAPERR for f in faults), faults
    return faults, reader


def test_a_munmap_by_one_thread_makes_the_others_next_access_fault_never_stale():
    """The writer maps P afresh each round with a new marker, munmaps it, and
    only then publishes the marker in E.  The reader reads E, then P: P
    equal to E would be a read through a translation munmap had removed
    (exit 3).  Its accesses between munmap and the next mmap are SEGV_MAPERR;
    its handler goes back to the top of its loop (E first), as a guest's
    SIGSEGV handler would longjmp.  Repeated (bounded) until a run had the
    reader fault and be stopped inside its guest, so the race was run."""
    seen = []
    for _ in range(MUNMAP_RACE_RUNS):
        faults, reader = _munmap_race_once()
        exercised = (len(faults), reader.counts["invalidations"], reader.smmu.kicks)
        reader.close()
        seen.append(exercised)
        if all(exercised):
            return
    pytest.fail(f"in {MUNMAP_RACE_RUNS} runs the reader never faulted inside a munmap window "
                f"and was kicked (faults, invalidations, kicks per run: {seen}): the race "
                f"was not exercised")


def test_fork_copies_on_write_both_ways_while_a_guest_thread_runs():
    emu = _emulator("forker")
    q, e = emu.mm.mmap(P, RW, PRIV), emu.mm.mmap(P, RW, PRIV)
    watcher = _thread(emu, "watcher", q, e)
    forker = _thread(emu, "forker", q)
    w = Worker(watcher.run, name="watcher").begin()
    try:
        assert forker.run() == (0, None)
        (child,) = emu.children
        assert child.run() == (0, None)
    finally:
        emu.mm.write(e, (-1).to_bytes(8, "little", signed=True))
    assert w.finish(RUN_TIMEOUT) == (0, None)
    assert emu.mm.read(q, 1) == b"\x02" and child.mm.read(q, 1) == b"\x03"
    assert watcher.counts["invalidations"] > 0  # fork write-protected its view too
    for t in (watcher, forker, child):
        t.close()


def test_map_fixed_remaps_racing_dontneed_and_mprotect():
    emu = _emulator("remap")
    r = emu.mm.mmap(P, RW, PRIV)
    accerr: Dict[str, int] = {"n": 0}

    def retry(thread: GuestThread, sig: GuestSignal) -> bool:
        accerr["n"] += 1
        return sig.si_code == mln.SEGV_ACCERR      # read-only for a moment: write again

    remapper = _thread(emu, "remapper", r, 300, on_signal=retry)
    racer = _thread(emu, "racer", r, 300)
    assert _run_all(remapper, racer) == [(0, None), (0, None)]
    assert emu.mm.vma_lookup(r).prot == RW
    remapper.close()
    racer.close()


def test_an_arm64_guest_maps_stores_and_unmaps():
    def movz(d: int, imm: int) -> int:
        return 0xD2800000 | imm << 5 | d

    svc, x4_minus_1 = 0xD4000001, 0x92800004
    words = [movz(0, 0), movz(1, 4096), movz(2, 3), movz(3, 0x22), x4_minus_1, movz(5, 0),
             movz(8, 222), svc,                          # x0 = mmap(0, 4096, RW, ...)
             movz(9, 7), 0xF9000009, 0xF940000A,         # str x9, [x0]; ldr x10, [x0]
             movz(1, 4096), movz(8, 215), svc,           # munmap(x0, 4096)
             0xAA0A03E0, movz(8, 93), svc]               # exit(x10)
    code = b"".join(w.to_bytes(4, "little") for w in words)
    emu = Emulator(mln.MM(name="arm64", host_backing=_HOST_BACKING), arch="arm64")
    emu.load(code, CODE_AT)
    t = emu.thread(CODE_AT, emu.stack())
    assert t.run() == (7, None)
    assert t.counts["syscalls"] == 3 and emu.mm.nr_pages() == 1    # the code page
    t.close()


SIGCHLD = 17
CLONE_AS_GLIBC_FORK = 0x01200000 | 0x100000 | SIGCHLD   # CHILD_SETTID|CLEARTID, PARENT_SETTID
CLONE_VM = 0x100


def _x86_clone_program(exit_with_result: bool) -> bytes:
    """clone(rdi = flags, rsi = 0, rdx = parent_tid, r10 = child_tid); then
    exit(clone's result) or: the parent stores 2 at [rbx] and exits 2, the
    child stores 3 and exits 3."""
    clone = b"\xb8\x38\x00\x00\x00\x0f\x05"                 # mov eax, 56; syscall
    leave = b"\xb8\x3c\x00\x00\x00\x0f\x05"                 # mov eax, 60; syscall
    if exit_with_result:
        return clone + b"\x89\xc7" + leave                       # mov edi, eax
    side = [b"\x48\xc7\x03" + bytes([v, 0, 0, 0]) + b"\xbf" + bytes([v, 0, 0, 0]) + leave
            for v in (2, 3)]                                     # [rbx] = v; exit(v)
    return clone + b"\x48\x85\xc0" + b"\x74" + bytes([len(side[0])]) + side[0] + side[1]


def _arm64_clone_program(exit_with_result: bool) -> bytes:
    """The same for arm64: clone(x0 = flags, x1 = 0, x2 = parent_tid, x3 = 0,
    x4 = child_tid), [x19] the parent's / the child's store."""
    def movz(d: int, imm: int) -> int:
        return 0xD2800000 | imm << 5 | d

    svc, str_x9_x19 = 0xD4000001, 0xF9000269
    words = [movz(8, 220), svc]
    if exit_with_result:
        words += [movz(8, 93), svc]
    else:
        side = [[movz(9, v), str_x9_x19, movz(0, v), movz(8, 93), svc] for v in (2, 3)]
        words += [0xB4000000 | (1 + len(side[0])) << 5] + side[0] + side[1]   # cbz x0, child
    return b"".join(w.to_bytes(4, "little") for w in words)


def _clone_regs(arch: str, flags: int, q: int, stack: int = 0,
                tids: Optional[int] = None) -> Dict[int, int]:
    from unicorn.arm64_const import (UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2,
                                     UC_ARM64_REG_X4, UC_ARM64_REG_X19)
    from unicorn.x86_const import UC_X86_REG_R10, UC_X86_REG_RBX
    t = q if tids is None else tids
    if arch == "arm64":
        return {UC_ARM64_REG_X0: flags, UC_ARM64_REG_X1: stack, UC_ARM64_REG_X2: t + 16,
                UC_ARM64_REG_X4: t + 8, UC_ARM64_REG_X19: q}
    return {UC_X86_REG_RDI: flags, UC_X86_REG_RSI: stack, UC_X86_REG_RDX: t + 16,
            UC_X86_REG_R10: t + 8, UC_X86_REG_RBX: q}


_CLONE_PROGRAMS = {"x86_64": _x86_clone_program, "arm64": _arm64_clone_program}


@pytest.mark.parametrize("arch", sorted(_CLONE_PROGRAMS))
@pytest.mark.parametrize("new_stack", [False, True], ids=["same-stack", "new-stack"])
def test_clone_as_glibcs_fork_copies_on_write_and_stores_the_childs_pid(arch, new_stack):
    emu = Emulator(mln.MM(name=f"clone-{arch}", host_backing=_HOST_BACKING), arch=arch)
    emu.load(_CLONE_PROGRAMS[arch](False), CODE_AT)
    q = emu.mm.mmap(P, RW, PRIV)
    emu.mm.write(q, b"\x01")
    sp = emu.stack()
    stack = q + P - 64 if new_stack else 0
    parent = emu.thread(CODE_AT, sp, _clone_regs(arch, CLONE_AS_GLIBC_FORK, q, stack))
    assert parent.run() == (2, None)
    (child,) = emu.children
    assert child.run() == (3, None)
    sp_reg = parent.arch.sp
    assert parent.uc.reg_read(sp_reg) == sp and child.uc.reg_read(sp_reg) == (stack or sp)
    pid = child.emu.pid
    assert pid != emu.pid
    assert emu.mm.read(q, 1) == b"\x02" and child.mm.read(q, 1) == b"\x03"
    # PARENT_SETTID wrote the parent's memory, CHILD_SETTID the child's, nothing else.
    assert int.from_bytes(emu.mm.read(q + 16, 4), "little") == pid
    assert int.from_bytes(child.mm.read(q + 8, 4), "little") == pid
    assert emu.mm.read(q + 8, 4) == bytes(4) and child.mm.read(q + 16, 4) == bytes(4)
    parent.close()
    child.close()


@pytest.mark.parametrize("arch", sorted(_CLONE_PROGRAMS))
@pytest.mark.parametrize("tids", [0x10, (1 << 64) - 32], ids=["unmapped", "top"])
def test_clone_with_tid_addresses_it_cannot_store_to_still_forks(arch, tids):
    """As the kernel: a fault storing the tid is ignored, the fork goes on."""
    emu = Emulator(mln.MM(name=f"clone-{arch}", host_backing=_HOST_BACKING), arch=arch)
    emu.load(_CLONE_PROGRAMS[arch](False), CODE_AT)
    q = emu.mm.mmap(P, RW, PRIV)
    parent = emu.thread(CODE_AT, emu.stack(),
                        _clone_regs(arch, CLONE_AS_GLIBC_FORK, q, tids=tids))
    assert parent.run() == (2, None)
    (child,) = emu.children
    assert child.run() == (3, None)
    assert emu.mm.read(q, 1) == b"\x02" and child.mm.read(q, 1) == b"\x03"
    parent.close()
    child.close()


@pytest.mark.parametrize("arch", sorted(_CLONE_PROGRAMS))
@pytest.mark.parametrize("flags", [CLONE_VM | SIGCHLD, 0x4000 | SIGCHLD, 0x10000 | 0x800 | 0x100])
def test_clone_of_a_thread_or_vfork_is_enosys_and_makes_no_child(arch, flags):
    emu = Emulator(mln.MM(name=f"clone-{arch}", host_backing=_HOST_BACKING), arch=arch)
    emu.load(_CLONE_PROGRAMS[arch](True), CODE_AT)
    q = emu.mm.mmap(P, RW, PRIV)
    t = emu.thread(CODE_AT, emu.stack(), _clone_regs(arch, flags, q))
    assert t.run() == ((-errno.ENOSYS) & 0xFF, None)
    assert emu.children == []
    t.close()


def test_a_guest_threads_write_reaches_the_emulators_output():
    emu = _emulator("hello")
    buf = emu.mm.mmap(P, RW, PRIV)
    emu.mm.write(buf, b"hi from the guest\n")
    t = _thread(emu, "hello", buf, 18)
    assert t.run() == (0, None)
    assert emu.output == [(1, b"hi from the guest\n")]
    t.close()


def test_the_example_runs_the_guest_and_writes_a_trace_per_guest_thread(tmp_path):
    import json
    import os
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trace = tmp_path / "trace.json"
    p = subprocess.run([sys.executable, os.path.join(root, "examples", "unicorn_guest.py"),
                        str(trace)], capture_output=True, text=True, timeout=RUN_TIMEOUT,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "per-VMA faults" in p.stdout and "lock statistics" in p.stdout
    events = json.loads(trace.read_text())["traceEvents"]
    tracks = {e["tid"] for e in events if e.get("ph") in ("B", "i")}
    assert len(tracks) == 3                     # one per guest thread
    assert any(e.get("name") == "SIGSEGV" for e in events)


@pytest.mark.parametrize("call,exc,names", [
    (lambda: Emulator(mm=3), TypeError, "mm"),
    (lambda: Emulator(arch="sparc"), ValueError, "arch"),
    (lambda: Emulator(arch=None), ValueError, "arch"),
    (lambda: Emulator().load(3, CODE_AT), TypeError, "code"),
    (lambda: Emulator().load(b"", CODE_AT), ValueError, "code"),
    (lambda: Emulator().load(b"\x90", -1), ValueError, "addr"),
    (lambda: Emulator().load(b"\x90", 1 << 64), ValueError, "addr"),
    (lambda: Emulator().thread("x"), TypeError, "pc"),
    (lambda: Emulator().thread(0, -5), ValueError, "sp"),
    (lambda: Emulator().thread(0, 0, regs=[1]), TypeError, "regs"),
    (lambda: Emulator().thread(0, on_signal=5), TypeError, "on_signal"),
])
def test_the_adapter_refuses_bad_arguments_naming_them(call, exc, names):
    with pytest.raises(exc, match=names):
        call()


def test_a_closed_guest_thread_is_refused_and_calls_from_inside_the_guest_too():
    emu = _emulator("closed")
    t = _thread(emu, "mmap1", 1)
    t.close()
    with pytest.raises(ValueError, match="closed"):
        t.run()
    # A hook of the embedder's own that calls into the mm from inside the guest.
    t2 = _thread(emu, "mmap1", 1)
    seen = []

    def inside(uc, address, size, data):
        if seen:
            return
        try:
            emu.mm.map_count
        except OSError as exc:
            seen.append(exc.errno)

    import unicorn
    t2.uc.hook_add(unicorn.UC_HOOK_CODE, inside)
    assert t2.run() == (0, None)
    import errno as errno_
    assert seen == [errno_.EDEADLK]
    t2.close()


class _FakeUc:
    """Records what the region map asks of Unicorn."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []

    def mem_map_ptr(self, addr: int, size: int, perms: int, host: int) -> None:
        self.calls.append(("map", addr, size, perms, host))

    def mem_unmap(self, addr: int, size: int) -> None:
        self.calls.append(("unmap", addr, size))

    def mem_protect(self, addr: int, size: int, perms: int) -> None:
        self.calls.append(("protect", addr, size, perms))


def test_an_emulator_makes_a_host_backed_mm_unless_given_one():
    assert Emulator().mm.host_backing
    assert not Emulator(mln.MM(name="plain")).mm.host_backing


def test_a_whole_vma_range_is_mapped_once_and_invalidated_in_part():
    """Contiguous backing: a host range of four pages (what vma_host_range
    returns for a whole VMA) is one Unicorn region, an invalidation of its
    middle splits it, host offsets kept, and mapping the range again fills
    only the hole."""
    from mmap_lock_native.unicorn import _Regions
    uc = _FakeUc()
    regions = _Regions(uc)
    base, host = 0x10000, 0x7F0000000000
    regions.install(mln.HostRange(host, base, base + 4 * P, RW))
    assert uc.calls == [("map", base, 4 * P, 3, host)]
    regions.change(base + P, base + 2 * P, None)             # munmap of page 1
    regions.change(base + 2 * P, base + 3 * P, mln.PROT_READ)  # mprotect of page 2
    assert uc.calls[1:] == [("unmap", base + P, P), ("protect", base + 2 * P, P, 1)]
    assert regions.map == {base: (base + P, host, RW),
                           base + 2 * P: (base + 3 * P, host + 2 * P, mln.PROT_READ),
                           base + 3 * P: (base + 4 * P, host + 3 * P, RW)}
    # The whole range again (lower protection asked): only the hole is mapped, the
    # regions that translate the rest the same way stay.
    whole = mln.HostRange(host, base, base + 4 * P, mln.PROT_READ)
    assert regions.install(whole, replace=False) is True
    assert uc.calls[3:] == [("map", base + P, P, 1, host + P)]
    # Another host address for page 0 conflicts: refused without replace, else
    # it replaces what it overlaps.
    moved = mln.HostRange(host + 9 * P, base, base + P, RW)
    assert regions.install(moved, replace=False) is False and len(uc.calls) == 4
    assert regions.install(moved) is True
    assert uc.calls[4:] == [("unmap", base, P), ("map", base, P, 3, host + 9 * P)]
    regions.change(0, mln.TASK_SIZE, None)                   # close: everything goes
    assert len(regions) == 0


def test_a_guest_mmap_on_a_host_backed_mm_is_mapped_before_its_first_access():
    """The adapter maps a new host-backed range at the mmap syscall (sparing
    the first access a Unicorn exit); per-page backing stays lazy.  Either
    way the first page is all the mm faulted in, and munmap removes it."""
    emu = _emulator("premap")
    t = _thread(emu, "reader", 0, 0)
    before = emu.mm.nr_pages()
    addr = t._syscall("mmap", [0, 4 * P, RW, PRIV, (1 << 64) - 1, 0])
    assert addr > 0 and addr % P == 0
    covered = [(s, e) for s, (e, _, _) in t.regions.map.items() if s <= addr < e]
    if _HOST_BACKING:
        assert covered and covered[0][1] >= addr + 4 * P, t.regions.map
        assert emu.mm.nr_pages() == before + 1
    else:
        assert not covered and emu.mm.nr_pages() == before
    assert t._syscall("munmap", [addr, 4 * P]) == 0
    t._drain()
    assert not [s for s, (e, _, _) in t.regions.map.items() if s < addr + 4 * P and addr < e]
    t.close()
