"""``python -m mmap_lock_native bench --embed``: the issue-11 guest workloads,
the same x86-64 guest code (``guest_x86_64``) run by Unicorn twice, in
alternated rounds:

- **mm**: through the adapter (:mod:`mmap_lock_native.unicorn`): the MM is
  the address space, memory is mapped zero-copy on demand, coherence by
  the invalidation queue;
- **plain**: what an emulator does without the package: ``uc.mem_map`` for
  each guest mmap (a bump allocator), ``uc.mem_unmap`` for munmap, the
  syscalls handled in the same kind of hook.

Workloads (an op is one iteration of the guest's loop):

- ``embed_page_fault1``: mmap 64 pages, store to each, munmap;
- ``embed_steady``: stores to 64 pages mapped already (touched once first);
- ``embed_mmap1``: mmap one page, store to it, munmap.

Each row has both throughputs (median of the rounds) and ``ratio_vs_plain``.
The adapter's mm has contiguous host backing (``MM(host_backing=True)``,
``docs/mm.md``): a VMA is one Unicorn region, mapped at its first fault.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Tuple

from . import guest_x86_64 as guest
from .mm import MM

__all__ = ["WORKLOADS", "run_embed"]

CODE_AT = 0x400000
PAGES = 64
#: Workload -> (guest entry, iterations of a run on the adapter, on plain Unicorn):
#: about 0.2 s each here, long enough for a steady figure.
WORKLOADS: Dict[str, Tuple[str, int, int]] = {
    "embed_page_fault1": ("page_fault1", 60, 1000),
    "embed_steady": ("steady", 40000, 40000),
    "embed_mmap1": ("mmap1", 2000, 2000),
}


def _regs(entry: str, iterations: int, base: int) -> Dict[int, int]:
    from unicorn.x86_const import UC_X86_REG_RDI, UC_X86_REG_RDX, UC_X86_REG_RSI
    if entry == "page_fault1":
        return {UC_X86_REG_RDI: iterations, UC_X86_REG_RSI: PAGES}
    if entry == "steady":
        return {UC_X86_REG_RDI: base, UC_X86_REG_RSI: PAGES, UC_X86_REG_RDX: iterations}
    return {UC_X86_REG_RDI: iterations}


def _run_mm(entry: str, iterations: int) -> float:
    """Seconds for one run on the adapter (setup and warm-up not counted)."""
    from .unicorn import Emulator
    from .vm import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
    emu = Emulator(MM(name="bench-embed", host_backing=True))
    emu.load(guest.CODE, CODE_AT)
    sp = emu.stack()
    base = emu.mm.mmap(PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    pc = CODE_AT + guest.ENTRY[entry]
    t = emu.thread(pc, sp, _regs(entry, 1, base))
    t.run()                     # warm-up: its own map of the buffer, for embed_steady
    t.restart(pc, _regs(entry, iterations, base))
    start = time.perf_counter()
    status = t.run()
    elapsed = time.perf_counter() - start
    t.close()
    if status.code != 0:
        raise RuntimeError(f"bench --embed: {entry} on the adapter ended with {status}")
    return elapsed


class _Plain:
    """A minimal emulator on plain ``uc.mem_map``: what the adapter is compared with."""

    def __init__(self) -> None:
        import unicorn as uc
        from unicorn.x86_const import UC_X86_INS_SYSCALL
        self.uc_mod = uc
        self.uc = uc.Uc(uc.UC_ARCH_X86, uc.UC_MODE_64)
        self.uc.mem_map(CODE_AT, 4096 * ((len(guest.CODE) + 4095) // 4096),
                        uc.UC_PROT_READ | uc.UC_PROT_EXEC)
        self.uc.mem_write(CODE_AT, guest.CODE)
        self.next = 0x7F0000000000
        self.code: Any = None
        self.uc.hook_add(uc.UC_HOOK_INSN, self._syscall, None, 1, 0, UC_X86_INS_SYSCALL)

    def mmap(self, length: int) -> int:
        self.next -= length
        self.uc.mem_map(self.next, length, self.uc_mod.UC_PROT_READ | self.uc_mod.UC_PROT_WRITE)
        return self.next

    def _syscall(self, uc: Any, data: Any) -> None:
        from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RDI, UC_X86_REG_RSI
        nr = uc.reg_read(UC_X86_REG_RAX)
        if nr == 9:
            length = (uc.reg_read(UC_X86_REG_RSI) + 4095) & ~4095
            uc.reg_write(UC_X86_REG_RAX, self.mmap(length))
        elif nr == 11:
            uc.mem_unmap(uc.reg_read(UC_X86_REG_RDI), (uc.reg_read(UC_X86_REG_RSI) + 4095) & ~4095)
            uc.reg_write(UC_X86_REG_RAX, 0)
        elif nr == 60:
            self.code = uc.reg_read(UC_X86_REG_RDI)
            uc.emu_stop()
        else:
            uc.reg_write(UC_X86_REG_RAX, (1 << 64) - 38)        # -ENOSYS

    def run(self, pc: int, regs: Dict[int, int]) -> None:
        for reg, value in regs.items():
            self.uc.reg_write(reg, value)
        self.code = None
        self.uc.emu_start(pc, (1 << 64) - 1)
        if self.code != 0:
            raise RuntimeError(f"bench --embed: plain run ended with exit code {self.code}")


def _run_plain(entry: str, iterations: int) -> float:
    """Seconds for one run on plain uc.mem_map (setup and warm-up not counted)."""
    from unicorn.x86_const import UC_X86_REG_RSP
    emu = _Plain()
    stack = emu.mmap(64 * 4096) + 64 * 4096
    base = emu.mmap(PAGES * 4096)
    pc = CODE_AT + guest.ENTRY[entry]
    emu.uc.reg_write(UC_X86_REG_RSP, stack)
    emu.run(pc, _regs(entry, 1, base))
    start = time.perf_counter()
    emu.run(pc, _regs(entry, iterations, base))
    return time.perf_counter() - start


def run_embed(workloads: List[str], rounds: int = 5,
              progress: Callable[[str], None] = lambda s: None) -> List[Dict[str, Any]]:
    """Each workload, ``rounds`` times on each side, alternated: one row each."""
    rows = []
    for name in workloads:
        entry, mm_iterations, plain_iterations = WORKLOADS[name]
        mm_s: List[float] = []
        plain_s: List[float] = []
        for r in range(rounds):
            progress(f"{name}: round {r + 1}/{rounds}")
            # Alternated, and the order flipped each round, so drift hits both alike.
            for side in (("plain", "mm") if r % 2 == 0 else ("mm", "plain")):
                if side == "mm":
                    mm_s.append(_run_mm(entry, mm_iterations))
                else:
                    plain_s.append(_run_plain(entry, plain_iterations))
        mm_ops = mm_iterations / statistics.median(mm_s)
        plain_ops = plain_iterations / statistics.median(plain_s)
        rows.append({"workload": name, "ops_per_sec": mm_ops, "plain_ops_per_sec": plain_ops,
                     "ratio_vs_plain": mm_ops / plain_ops, "rounds": rounds,
                     "iterations": mm_iterations, "plain_iterations": plain_iterations,
                     "mm_seconds": mm_s, "plain_seconds": plain_s})
    return rows


def format_embed(rows: List[Dict[str, Any]]) -> str:
    """The rows as a table."""
    head = f"{'workload':<18} {'adapter ops/s':>14} {'plain ops/s':>14} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['workload']:<18} {r['ops_per_sec']:>14,.0f} "
                     f"{r['plain_ops_per_sec']:>14,.0f} {r['ratio_vs_plain']:>6.2f}x")
    return "\n".join(lines)
