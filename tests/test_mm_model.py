"""A hypothesis state machine drives random sequences of mmap, munmap,
mprotect, brk, madvise, fault, read, write, get_user_pages, fork and close
against several live ``mln.MM`` objects and, step by step, against the
pure-Python reference model in ``mm_model.py``: every call must give the same
result or the same error (errno, or SegmentationFault address and si_code),
and after every step the maps, the break, the VMA count and the contents of
every page that may hold data must agree."""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any, Callable, List, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

import mmap_lock_native as mln

sys.path.insert(0, os.path.dirname(__file__))
import mm_model as M  # noqa: E402

PAGE = M.PAGE
MAX_MMS = 4
PATTERN = bytes(range(251)) * 40
#: Protections, read-write the most likely.
PROTS = st.sampled_from([3, 3, 3, 1, 1, 0, 2, 4, 5, 6, 7])


def outcome(fn: Callable[..., Any], *args: Any) -> Tuple:
    """A call's result as a comparable tuple, for the library and the model alike."""
    try:
        return ("ok", fn(*args))
    except mln.SegmentationFault as e:
        return ("segv", e.addr, e.si_code)
    except M.ModelSegv as e:
        return ("segv", e.addr, e.si_code)
    except M.ModelOSError as e:
        return ("errno", e.errno)
    except OSError as e:
        return ("errno", e.errno)


def fmt(records: List[M.MapRecord]) -> List[str]:
    return [f"{r.start:x}-{r.end:x} prot={r.prot} {'s' if r.flags == M.MAP_SHARED else 'p'}"
            f" pgoff={r.pgoff} heap={r.heap}" for r in records]


def gup_bytes(mm: mln.MM, addr: int, n: int, write: bool) -> List[bytes]:
    with mm.get_user_pages(addr, n, write) as pinned:
        return [bytes(p) for p in pinned.pages]


class MMMachine(RuleBasedStateMachine):
    #: The lock design of the mms it makes (one machine per design, below).
    LOCK = "rwsem"
    #: Whether they have contiguous host backing (one more machine, below).
    HOST_BACKING = False

    def __init__(self) -> None:
        super().__init__()
        self.mms: List[Tuple[mln.MM, M.ModelMM]] = []

    @initialize()
    def start(self) -> None:
        """One mm with a private and a shared mapping and a heap page to begin with."""
        real = mln.MM(stats=False, lock=self.LOCK, host_backing=self.HOST_BACKING)
        model = M.ModelMM()
        self.mms = [(real, model)]
        rw = M.PROT_READ | M.PROT_WRITE
        self.both(real, model, "mmap", 4 * PAGE, rw, M.MAP_PRIVATE | M.MAP_ANONYMOUS)
        self.both(real, model, "mmap", 3 * PAGE, rw, M.MAP_SHARED | M.MAP_ANONYMOUS)
        self.both(real, model, "brk", M.START_BRK + PAGE, model_name="brk_call")

    def teardown(self) -> None:
        for real, _ in self.mms:
            real.close()
        self.mms = []

    # -- drawing helpers --------------------------------------------------------------------

    def pick(self, data: Any) -> Tuple[mln.MM, M.ModelMM]:
        return self.mms[data.draw(st.integers(0, len(self.mms) - 1), label="mm")]

    @staticmethod
    def points(model: M.ModelMM) -> List[int]:
        pts = {M.START_BRK, M.MMAP_BASE, M.MMAP_BASE - 8 * PAGE, M.MMAP_MIN_ADDR,
               M.page_align(model.brk), M.TASK_SIZE - 4 * PAGE}
        for v in model.vmas:
            pts.update((v.start, v.end))
        return sorted(pts)

    def addr(self, data: Any, model: M.ModelMM, aligned: bool = True) -> int:
        """An address inside a mapping (mostly), or near a mapping boundary or
        a landmark (brk, mmap_base, mmap_min_addr, the top)."""
        kind = data.draw(st.integers(0, 9), label="where")
        if model.vmas and kind < 7:
            v = data.draw(st.sampled_from(model.vmas), label="vma")
            pages = (v.end - v.start) // PAGE
            k = data.draw(st.integers(0, min(pages, 16) - 1), label="page")
            a = v.start + k * PAGE if kind < 4 else v.end - (k + 1) * PAGE
        else:
            base = data.draw(st.sampled_from(self.points(model)), label="near")
            a = base + data.draw(st.integers(-4, 4), label="pages") * PAGE
        if not aligned or data.draw(st.integers(0, 9), label="unaligned?") == 0:
            a += data.draw(st.integers(1, PAGE - 1), label="offset")
        return max(a, 0)

    @staticmethod
    def length(data: Any) -> int:
        kind = data.draw(st.integers(0, 19), label="length kind")
        if kind == 0:
            return 0
        if kind == 1:
            return data.draw(st.sampled_from([M.TASK_SIZE, M.TASK_SIZE + 1, 1 << 63,
                                              M.U64 - PAGE, M.U64]), label="huge")
        n = data.draw(st.integers(1, 8), label="npages") * PAGE
        if kind == 2:
            n -= data.draw(st.integers(1, PAGE - 1), label="short by")
        return n

    def both(self, real: mln.MM, model: M.ModelMM, name: str, *args: Any,
             model_name: str = "") -> Tuple:
        got = outcome(getattr(real, name), *args)
        want = outcome(getattr(model, model_name or name), *args)
        assert got == want, (name, [hex(a) if isinstance(a, int) else a for a in args],
                             got, want)
        return got

    # -- the system calls ---------------------------------------------------------------------

    @rule(data=st.data())
    def mmap(self, data: Any) -> None:
        real, model = self.pick(data)
        prot = data.draw(PROTS, label="prot")
        if data.draw(st.integers(0, 15), label="extra prot?") == 0:
            prot |= 8
        typ = data.draw(st.sampled_from([M.MAP_PRIVATE] * 4 + [M.MAP_SHARED] * 3
                                        + [M.MAP_PRIVATE | M.MAP_SHARED, 0]), label="type")
        anon = 0 if data.draw(st.integers(0, 29), label="no anon?") == 0 else M.MAP_ANONYMOUS
        place = data.draw(st.sampled_from(["any"] * 3 + ["hint", "fixed", "fixed", "noreplace",
                                                         "both", "low"]), label="placement")
        length = self.length(data)
        flags = typ | anon
        addr = None
        if place == "hint":
            addr = self.addr(data, model, aligned=data.draw(st.booleans(), label="al"))
        elif place in ("fixed", "noreplace", "both"):
            flags |= {"fixed": M.MAP_FIXED, "noreplace": M.MAP_FIXED_NOREPLACE,
                      "both": M.MAP_FIXED | M.MAP_FIXED_NOREPLACE}[place]
            addr = self.addr(data, model)
        elif place == "low":
            flags |= M.MAP_FIXED
            addr = data.draw(st.sampled_from([PAGE, M.MMAP_MIN_ADDR - PAGE]), label="low")
        self.both(real, model, "mmap", length, prot, flags, addr)

    @rule(data=st.data())
    def fill_low(self, data: Any) -> None:
        """One huge PROT_NONE mapping over everything below mmap_base but a
        few pages: later placements run out of room there and go above."""
        real, model = self.pick(data)
        top = M.MMAP_BASE - data.draw(st.integers(0, 12), label="left") * PAGE
        self.both(real, model, "mmap", top - M.MMAP_MIN_ADDR, M.PROT_NONE,
                  M.MAP_PRIVATE | M.MAP_ANONYMOUS | M.MAP_FIXED, M.MMAP_MIN_ADDR)

    @rule(data=st.data())
    def munmap(self, data: Any) -> None:
        real, model = self.pick(data)
        self.both(real, model, "munmap", self.addr(data, model), self.length(data))

    @rule(data=st.data())
    def mprotect(self, data: Any) -> None:
        real, model = self.pick(data)
        prot = data.draw(PROTS, label="prot")
        if data.draw(st.integers(0, 15), label="bad prot?") == 0:
            prot |= data.draw(st.sampled_from([8, 0x10, M.PROT_GROWSDOWN, M.PROT_GROWSUP,
                                               M.PROT_GROWSDOWN | M.PROT_GROWSUP]),
                              label="odd bit")
        self.both(real, model, "mprotect", self.addr(data, model), self.length(data), prot)

    @rule(data=st.data())
    def madvise(self, data: Any) -> None:
        real, model = self.pick(data)
        # Drops, hints, fork flags, populating, and advice not emulated (5, 12, -1).
        advice = data.draw(st.sampled_from([M.MADV_DONTNEED] * 4 + [M.MADV_FREE] * 2
                                           + [M.MADV_DONTFORK, M.MADV_WIPEONFORK] * 3
                                           + [M.MADV_DOFORK, M.MADV_KEEPONFORK] * 2
                                           + [M.MADV_POPULATE_READ, M.MADV_POPULATE_WRITE] * 2
                                           + [0, 1, 2, 3, 5, 12, -1, 14, 20, 24]),
                           label="advice")
        self.both(real, model, "madvise", self.addr(data, model), self.length(data), advice)

    @rule(data=st.data())
    def fork_advice(self, data: Any) -> None:
        """A fork flag over a few pages, mostly of a mapping: what the next
        fork leaves out or gives the child empty."""
        real, model = self.pick(data)
        advice = data.draw(st.sampled_from([M.MADV_DONTFORK, M.MADV_WIPEONFORK] * 2
                                           + [M.MADV_DOFORK, M.MADV_KEEPONFORK]), label="advice")
        npages = data.draw(st.integers(1, 4), label="npages")
        self.both(real, model, "madvise", self.addr(data, model, aligned=True), npages * PAGE,
                  advice)

    @rule(data=st.data())
    def brk(self, data: Any) -> None:
        real, model = self.pick(data)
        kind = data.draw(st.integers(0, 5), label="brk kind")
        if kind == 0:
            new = data.draw(st.sampled_from([0, M.START_BRK - 1, M.TASK_SIZE, M.TASK_SIZE + 1,
                                             M.TASK_SIZE - PAGE, M.START_BRK]), label="special")
        else:
            new = model.brk + data.draw(st.integers(-6 * PAGE, 8 * PAGE), label="delta")
            if kind == 1:
                new = M.page_align(new)
            new = max(new, 0)
        self.both(real, model, "brk", new, model_name="brk_call")

    @rule(data=st.data())
    def set_limit(self, data: Any) -> None:
        real, model = self.pick(data)
        if data.draw(st.integers(0, 3), label="reset?") == 0:
            n = M.DEFAULT_MAX_MAP_COUNT
        else:
            n = max(1, len(model.vmas) + data.draw(st.integers(-1, 3), label="headroom"))
        real.set_max_map_count(n)
        model.set_max_map_count(n)

    # -- accesses ----------------------------------------------------------------------------------

    @rule(data=st.data(), write=st.booleans())
    def fault(self, data: Any, write: bool) -> None:
        real, model = self.pick(data)
        self.both(real, model, "fault", self.addr(data, model, aligned=False), write)

    @rule(data=st.data())
    def read(self, data: Any) -> None:
        real, model = self.pick(data)
        n = data.draw(st.sampled_from([0, 1, 7, 100, PAGE - 1, PAGE, PAGE + 3, 3 * PAGE]),
                      label="n")
        addr = self.addr(data, model, aligned=False)
        if data.draw(st.integers(0, 19), label="wrap?") == 0:
            addr = M.U64 - 2
        self.both(real, model, "read", addr, n)

    @rule(data=st.data())
    def write(self, data: Any) -> None:
        real, model = self.pick(data)
        n = data.draw(st.sampled_from([1, 5, 64, PAGE, PAGE + 17, 2 * PAGE + 1]), label="n")
        seed = data.draw(st.integers(0, 250), label="seed")
        payload = PATTERN[seed:seed + n]
        addr = self.addr(data, model, aligned=False)
        self.both(real, model, "write", addr, payload)

    @precondition(lambda self: self.HOST_BACKING)
    @rule(data=st.data())
    def window_write(self, data: Any) -> None:
        """An emulator's store straight into the host range vma_host_range gave
        (no fault for the range's other pages): to the model, a plain write."""
        real, model = self.pick(data)
        n = data.draw(st.sampled_from([1, 5, 64, PAGE, PAGE + 17, 2 * PAGE + 1]), label="n")
        seed = data.draw(st.integers(0, 250), label="seed")
        addr = self.addr(data, model, aligned=False)
        try:
            hr = real.vma_host_range(addr, mln.Access.WRITE)
        except mln.SegmentationFault as e:
            assert ("segv", e.addr, e.si_code) == outcome(model.fault, addr, True)
            return
        n = min(n, hr.end - addr)
        payload = PATTERN[seed:seed + n]
        ctypes.memmove(hr.host + (addr - hr.start), payload, n)
        assert outcome(model.write, addr, payload)[0] == "ok"

    @rule(data=st.data(), write=st.booleans())
    def get_user_pages(self, data: Any, write: bool) -> None:
        real, model = self.pick(data)
        addr = self.addr(data, model) & ~(PAGE - 1)
        n = data.draw(st.integers(0, 3), label="n")
        got = outcome(gup_bytes, real, addr, n, write)
        want = outcome(model.get_user_pages, addr, n, write)
        assert got == want, ("get_user_pages", hex(addr), n, write, got[:1], want[:1])

    # -- the address spaces as a whole ----------------------------------------------------------

    @precondition(lambda self: len(self.mms) < MAX_MMS)
    @rule(data=st.data())
    def fork(self, data: Any) -> None:
        real, model = self.pick(data)
        got = outcome(real.fork)
        want = outcome(model.fork)
        assert got[0] == want[0], ("fork", got, want)
        if got[0] == "ok":
            self.mms.append((got[1], want[1]))
        else:
            assert got == want

    @precondition(lambda self: len(self.mms) > 1)
    @rule(data=st.data())
    def close(self, data: Any) -> None:
        real, model = self.pick(data)
        real.close()
        model.close()

    @precondition(lambda self: any(m.closed for _, m in self.mms) and len(self.mms) > 1)
    @rule(data=st.data())
    def drop_closed(self, data: Any) -> None:
        closed = [i for i, (_, m) in enumerate(self.mms) if m.closed]
        del self.mms[data.draw(st.sampled_from(closed), label="closed mm")]

    # -- after every step ----------------------------------------------------------------------------

    @invariant()
    def same_address_spaces(self) -> None:
        for i, (real, model) in enumerate(self.mms):
            got, want = M.records_of(real.maps()), model.maps()
            assert got == want, (f"mm {i} maps differ", fmt(got), fmt(want))
            assert real.brk_value == model.brk, (i, hex(real.brk_value), hex(model.brk))
            assert real.map_count == len(model.vmas), i
            pages = model.content_pages()
            pages += [v.start for v in model.vmas] + [v.end - PAGE for v in model.vmas]
            window = None
            for a in sorted(set(pages)):
                v = model.lookup(a)
                if v is None or v.prot == M.PROT_NONE:
                    continue
                if self.HOST_BACKING:
                    # Through the window, as an emulator reads: only the page each
                    # range is asked for is faulted, so pages written through the
                    # window stay without a PTE (what fork must adopt).
                    if window is None or not window.start <= a < window.end:
                        window = real.vma_host_range(a, mln.Access.READ)
                    got = ctypes.string_at(window.host + (a - window.start), PAGE)
                else:
                    got = real.read(a, PAGE)
                assert got == model.read(a, PAGE), (f"mm {i} contents differ", hex(a))


# One machine per lock design: the same model holds whatever lock is behind the mm.
for _lock in mln.LOCK_BACKENDS:
    _machine = type(f"MMMachine_{_lock}", (MMMachine,), {"LOCK": _lock})
    _machine.TestCase.settings = settings(max_examples=100, stateful_step_count=40,
                                          deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
    globals()[f"test_mm_against_model_{_lock}"] = _machine.TestCase
# Contiguous host backing under the default design, with stores through the window too.
_machine = type("MMMachine_host_backed", (MMMachine,),
                {"LOCK": mln.DEFAULT_LOCK, "HOST_BACKING": True})
_machine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow,
                                                             HealthCheck.data_too_large])
test_mm_against_model_host_backed = _machine.TestCase
del _lock, _machine
