"""Run the test suite's x86-64 guest under Unicorn on one MM, two guest
threads at once, then print the mm's lock statistics and write a Chrome
trace (open it in ui.perfetto.dev) with one track per guest thread: its
lock waits and holds, each tagged with the mm operation, and its system
calls and signals.

    pip install -e '.[unicorn]'
    python examples/unicorn_guest.py [trace.json]
"""
from __future__ import annotations

import sys
import threading

import mmap_lock_native as mln
from mmap_lock_native import guest_x86_64 as guest
from mmap_lock_native.unicorn import Emulator
from unicorn.x86_const import UC_X86_REG_RDI, UC_X86_REG_RSI

CODE_AT = 0x400000


def main(trace_path: str = "guest-trace.json") -> int:
    emu = Emulator(mln.MM(name="guest"))
    emu.load(guest.CODE, CODE_AT)
    threads = [
        emu.thread(CODE_AT + guest.ENTRY["page_fault1"], emu.stack(),
                   {UC_X86_REG_RDI: 20, UC_X86_REG_RSI: 16}),
        emu.thread(CODE_AT + guest.ENTRY["mmap1"], emu.stack(), {UC_X86_REG_RDI: 200}),
        emu.thread(CODE_AT + guest.ENTRY["protect"], emu.stack()),
    ]
    with mln.trace.record(emu.mm, 1 << 18) as rec:
        emu.recorder = rec
        results = {}
        runners = [threading.Thread(target=lambda t=t: results.setdefault(t.task, t.run()))
                   for t in threads]
        for r in runners:
            r.start()
        for r in runners:
            r.join()
    for t in threads:
        print(f"guest thread {t.task}: {results[t.task]}, {t.counts}")
        t.close()
    print(emu.mm.lock_stats())
    print(f"per-VMA faults: {emu.mm.vma_lock_stats()}")
    rec.to_chrome_trace(trace_path)
    print(f"trace: {trace_path} ({len(rec.events)} lock events, "
          f"{len(rec.annotations)} annotations)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
