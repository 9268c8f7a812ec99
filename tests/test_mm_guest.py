"""The guest-memory API for embedders (issue 11), on every lock design: the
mmap flags Linux implements or refuses, access types, VMA lookups and the
layout count, pins with host addresses and protection, host ranges,
read_locked(), killable calls, mremap's errnos, the sys_* helpers, and the
recorder's operation tags and annotations."""
from __future__ import annotations

import ctypes
import errno
import threading

import pytest

import mmap_lock_native as mln
from conftest import TIMEOUT, Worker

P = mln.PAGE_SIZE
RW = mln.PROT_READ | mln.PROT_WRITE
PRIV = mln.MAP_PRIVATE | mln.MAP_ANONYMOUS
SHARED = mln.MAP_SHARED | mln.MAP_ANONYMOUS
TOP = 0x200000000000

pytestmark = pytest.mark.usefixtures("every_design")


@pytest.fixture
def mm():
    m = mln.MM(name="guest")
    yield m
    m.close()


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


# -- mmap flags (the bug: they were accepted silently) --------------------------------

def test_map_populate_prefaults_and_map_nonblock_cancels_it(mm):
    mm.mmap(8 * P, RW, PRIV | mln.MAP_POPULATE)
    assert mm.nr_pages() == 8
    mm.mmap(4 * P, RW, PRIV | mln.MAP_POPULATE | mln.MAP_NONBLOCK)
    mm.mmap(4 * P, mln.PROT_NONE, PRIV | mln.MAP_POPULATE)
    assert mm.nr_pages() == 8
    mm.mmap(2 * P, RW, PRIV | mln.MAP_LOCKED)
    assert mm.nr_pages() == 10


def test_map_growsdown_grows_on_a_fault_below_and_keeps_the_guard_gap(mm):
    mm.mmap(P, RW, PRIV | mln.MAP_GROWSDOWN | mln.MAP_FIXED, TOP)
    v = mm.vma_lookup(TOP)
    assert v.flags == mln.MAP_PRIVATE | mln.MAP_GROWSDOWN and v.start == TOP
    mm.write(TOP - 3 * P, b"stack")                 # copy_to_user grows it too
    assert mm.vma_lookup(TOP).start == TOP - 3 * P
    mm.fault(TOP - 4 * P, mln.Access.WRITE)
    assert mm.vma_lookup(TOP).start == TOP - 4 * P
    with pytest.raises(mln.SegmentationFault):      # pins do not grow it (Linux 6.5+)
        mm.pin_page(TOP - 5 * P)
    mm.mmap(P, mln.PROT_READ, PRIV | mln.MAP_FIXED, TOP - 200 * P)
    with pytest.raises(mln.SegmentationFault) as info:
        mm.fault(TOP - 10 * P)                      # within the 256-page guard gap
    assert info.value.si_code == mln.SEGV_MAPERR
    assert "p " in mm.maps_text().splitlines()[-1]


def test_refused_and_accepted_flags_with_linux_errnos(mm):
    assert errno_of(mm.mmap, P, RW, PRIV | mln.MAP_HUGETLB) == errno.EINVAL
    assert errno_of(mm.mmap, P, RW, SHARED | mln.MAP_GROWSDOWN) == errno.EINVAL
    mm.mmap(P, RW, PRIV | mln.MAP_NORESERVE | mln.MAP_STACK)
    assert mm.mmap(P, RW, PRIV | mln.MAP_32BIT) == 0x40000000
    assert mm.map_count == 2


# -- access types, lookups, the layout count ------------------------------------------------

def test_exec_access_needs_prot_exec(mm):
    x = mm.mmap(P, mln.PROT_READ | mln.PROT_EXEC, PRIV)
    d = mm.mmap(P, RW, PRIV)
    mm.fault(x, mln.Access.EXEC)
    for call in (lambda: mm.fault(d, mln.Access.EXEC), lambda: mm.pin_page(d, mln.Access.EXEC)):
        with pytest.raises(mln.SegmentationFault) as info:
            call()
        assert info.value.si_code == mln.SEGV_ACCERR and info.value.addr == d
    with pytest.raises(ValueError, match="access"):
        mm.fault(d, 3)


def test_find_vma_vma_lookup_and_vma_seq(mm):
    seq = mm.vma_seq
    a = mm.mmap(2 * P, RW, PRIV)
    assert mm.vma_seq > seq
    seq = mm.vma_seq
    assert mm.vma_lookup(a + P) == mm.maps()[0]
    assert mm.vma_lookup(a - P) is None
    assert mm.find_vma(a - P).start == a           # the kernel's find_vma: the next one
    assert mm.find_vma(a + 2 * P) is None
    mm.fault(a, True)
    assert mm.vma_seq == seq                       # faults change no layout
    mm.brk(mm.brk_value + 1)
    assert mm.vma_seq > seq
    assert mm.vma_lookup(a).name == "" and mm.find_vma(0).name == "[heap]"
    assert mm.vma_lookup(mm.mmap(P, RW, SHARED)).name == "/dev/zero (deleted)"


# -- pins and host ranges ---------------------------------------------------------------------

def test_pins_have_host_addresses_protection_and_partial_unpin(mm):
    a = mm.mmap(4 * P, RW, PRIV)
    mm.write(a, b"host")
    pins = mm.pin_pages(a, 4, mln.Access.READ)
    assert [p.addr for p in pins] == [a + i * P for i in range(4)]
    assert ctypes.string_at(pins[0].host, 4) == b"host"
    assert pins[0].prot == RW
    assert pins[0].memory.readonly                 # a read pin gives read-only buffers
    pins.unpin(1, 3)
    assert [p.pinned for p in pins] == [True, False, False, True]
    with pytest.raises(ValueError, match="unpinned"):
        pins[1].memory
    pins.unpin()
    w = mm.pin_page(a, mln.Access.WRITE)
    w.memory[0:1] = b"H"
    assert mm.read(a, 4) == b"Host"
    w.unpin()


def test_a_copy_on_write_shared_page_gives_no_write_permission(mm):
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"x")
    child = mm.fork()
    hr = mm.vma_host_range(a)
    assert (hr.start, hr.end, hr.prot) == (a, a + P, mln.PROT_READ)
    hw = mm.vma_host_range(a, mln.Access.WRITE)   # breaks copy-on-write
    assert hw.prot == RW and hw.host != hr.host
    assert child.read(a, 1) == b"x"
    child.close()


# -- contiguous host backing ------------------------------------------------------------------

def test_host_backing_gives_a_whole_vma_in_one_host_range():
    base = mln.MM.host_frames_in_use()
    mm = mln.MM(host_backing=True, name="backed")
    assert mm.host_backing and not mln.MM().host_backing
    a = mm.mmap(64 * P, RW, PRIV)
    hr = mm.vma_host_range(a + 5 * P + 3, mln.Access.WRITE)
    assert (hr.start, hr.end, hr.prot) == (a, a + 64 * P, RW)
    assert mm.nr_pages() == 1                       # only the page asked for is faulted
    # A store straight through the window is the page's content once read.
    ctypes.memmove(hr.host + 40 * P, b"window", 6)
    assert mm.read(a + 40 * P, 6) == b"window"
    mm.write(a + 50 * P, b"mm")
    assert ctypes.string_at(hr.host + 50 * P, 2) == b"mm"
    # A shared mapping keeps one page per range.
    s = mm.mmap(4 * P, RW, SHARED)
    hs = mm.vma_host_range(s, mln.Access.WRITE)
    assert (hs.start, hs.end) == (s, s + P)
    # A fork keeps the backing; copy-on-write keeps the two apart.
    child = mm.fork()
    assert child.host_backing
    assert child.read(a + 40 * P, 6) == b"window"
    hc = child.vma_host_range(a + 40 * P, mln.Access.WRITE)
    ctypes.memmove(hc.host + (a + 40 * P - hc.start), b"CHILD!", 6)
    assert mm.read(a + 40 * P, 6) == b"window" and child.read(a + 40 * P, 6) == b"CHILD!"
    child.close()
    mm.close()
    assert mln.MM.host_frames_in_use() == base     # every frame given back


def test_host_backing_fork_advice_and_populate():
    """MADV_WIPEONFORK on a host-backed mm: the child's window reads zero (a
    store made only through the parent's window too), the parent's window
    stays writable; MADV_DONTFORK leaves the range out; MADV_POPULATE_*
    give every page its PTE."""
    base = mln.MM.host_frames_in_use()
    mm = mln.MM(host_backing=True, name="backed")
    a = mm.mmap(8 * P, RW, PRIV)
    mm.madvise(a, 8 * P, mln.MADV_POPULATE_READ)
    assert mm.nr_pages() == 8
    hr = mm.vma_host_range(a, mln.Access.WRITE)
    ctypes.memmove(hr.host + 2 * P, b"wiped", 5)
    ctypes.memmove(hr.host + 6 * P, b"gone", 4)
    mm.madvise(a + 2 * P, 2 * P, mln.MADV_WIPEONFORK)
    mm.madvise(a + 6 * P, 2 * P, mln.MADV_DONTFORK)
    child = mm.fork()
    assert [(v.start, v.end) for v in child.maps()] == [(a, a + 2 * P), (a + 2 * P, a + 4 * P),
                                                        (a + 4 * P, a + 6 * P)]
    hc = child.vma_host_range(a + 2 * P, mln.Access.READ)
    assert ctypes.string_at(hc.host + (a + 2 * P - hc.start), 5) == bytes(5)
    assert child.read(a + 2 * P, 5) == bytes(5)
    with pytest.raises(mln.SegmentationFault):
        child.read(a + 6 * P, 1)
    hp = mm.vma_host_range(a + 2 * P, mln.Access.READ)
    assert hp.prot == RW                              # not made copy-on-write
    assert mm.read(a + 2 * P, 5) == b"wiped" and mm.read(a + 6 * P, 4) == b"gone"
    child.madvise(a + 2 * P, P, mln.MADV_POPULATE_WRITE)
    child.write(a + 2 * P, b"child")
    assert mm.read(a + 2 * P, 5) == b"wiped"
    child.close()
    mm.close()
    assert mln.MM.host_frames_in_use() == base


def test_host_backing_must_be_a_bool():
    with pytest.raises(TypeError, match="host_backing"):
        mln.MM(host_backing=1)


def test_a_view_of_a_read_pin_stays_read_only(mm):
    a = mm.mmap(P, RW, PRIV)
    with mm.view(a, 8) as v:
        assert v.pages[0].readonly
        with pytest.raises(TypeError):
            v.pages[0][0:1] = b"x"


# -- read_locked, killable --------------------------------------------------------------------

def test_read_locked_runs_a_series_under_one_acquisition(mm):
    a = mm.mmap(2 * P, RW, PRIV)
    with mln.trace.record(mm) as rec:
        with mm.read_locked() as locked:
            assert locked.vma_lookup(a).start == a
            locked.fault(a, mln.Access.WRITE)
            locked.write(a, b"abc")
            assert locked.read(a, 3) == b"abc"
            pin = locked.pin_page(a)
            assert locked.vma_host_range(a).host == pin.host
            assert errno_of(mm.munmap, a, P) == errno.EDEADLK     # would wait for ourselves
    acquisitions = [e for e in rec.events if e.event == "acquire_returned" and e.success]
    assert len(acquisitions) == 1 and not acquisitions[0].write
    assert acquisitions[0].mm_op == "read_locked"
    pin.unpin()
    with pytest.raises(RuntimeError, match="released"):
        locked.read(a, 1)


def test_read_locked_from_another_thread_is_refused(mm):
    a = mm.mmap(P, RW, PRIV)
    with mm.read_locked() as locked:
        w = Worker(lambda: locked.read(a, 1)).begin()
        with pytest.raises(RuntimeError, match="not this thread"):
            w.finish()


def test_killable_calls_fail_at_once_for_a_killed_task(mm):
    a = mm.mmap(P, RW, PRIV)
    mln.set_current_task(777)
    mln.task_kill(777)
    try:
        for call in (lambda: mm.fault(a, killable=True), lambda: mm.pin_page(a, killable=True),
                     lambda: mm.vma_host_range(a, killable=True)):
            with pytest.raises(InterruptedError):
                call()
        mm.fault(a)                                  # not killable: goes through
    finally:
        mln.task_revive(777)
        mln.set_current_task(None)


# -- mremap and the syscall helpers -----------------------------------------------------------

@pytest.mark.parametrize("args,err", [
    ((0, P, P, 8), errno.EINVAL),                                   # unknown flag
    ((0, P, 2 * P, mln.MREMAP_FIXED, 0x300000000), errno.EINVAL),   # FIXED without MAYMOVE
    ((0, P, 2 * P, mln.MREMAP_MAYMOVE | mln.MREMAP_DONTUNMAP), errno.EINVAL),
    ((1, P, P, 0), errno.EINVAL),                                   # unaligned
    ((0, P, 0, 0), errno.EINVAL),                                   # new size 0
    ((-P, P, 2 * P, 0), errno.EFAULT),                              # no VMA
    ((0, 8 * P, 9 * P, 0), errno.EFAULT),                           # across the VMA's end
    ((0, 0, P, mln.MREMAP_MAYMOVE), errno.EINVAL),                  # private "duplicate"
    ((0, 2 * P, 2 * P, mln.MREMAP_MAYMOVE | mln.MREMAP_FIXED, P), errno.EINVAL),  # overlap
])
def test_mremap_errnos_as_linux(mm, args, err):
    a = mm.mmap(4 * P, RW, PRIV | mln.MAP_FIXED, 0x100000000)
    addr, *rest = args
    args = (a + addr if addr >= 0 else a + addr, *rest)
    if len(args) == 5 and args[3] & mln.MREMAP_FIXED and args[3] & mln.MREMAP_MAYMOVE:
        args = (*args[:4], a + args[4])
    assert errno_of(mm.mremap, *args) == err
    assert mm.sys_mremap(*args) == -err


def test_mremap_grows_in_place_moves_with_the_contents_and_shrinks(mm):
    a = mm.mmap(2 * P, RW, PRIV | mln.MAP_FIXED, 0x100000000)
    mm.write(a + P, b"moved")
    assert mm.mremap(a, 2 * P, 3 * P) == a
    mm.mmap(P, mln.PROT_READ, PRIV | mln.MAP_FIXED, a + 3 * P)
    assert errno_of(mm.mremap, a, 3 * P, 5 * P) == errno.ENOMEM
    b = mm.mremap(a, 3 * P, 5 * P, mln.MREMAP_MAYMOVE)
    assert b != a and mm.read(b + P, 5) == b"moved"
    with pytest.raises(mln.SegmentationFault):
        mm.read(a, 1)
    assert mm.mremap(b, 5 * P, P) == b and mm.vma_lookup(b).end == b + P


def test_sys_helpers_return_errnos_and_take_register_values(mm):
    a = mm.sys_mmap(0, P, RW, PRIV, -1, 0)
    assert a > 0 and mm.vma_lookup(a) is not None
    assert mm.sys_mmap(0, P, RW, mln.MAP_PRIVATE, 3, 0) == -errno.EBADF     # no files
    assert mm.sys_mmap(0, P, RW, PRIV, -1, 1) == -errno.EINVAL              # offset
    assert mm.sys_mmap(0, P, RW, PRIV | (1 << 32), 0xFFFFFFFF, 0) > 0       # int: low 32 bits
    assert mm.sys_munmap(a + 1, P) == -errno.EINVAL
    assert mm.sys_mprotect(a, P, 0x100) == -errno.EINVAL
    assert mm.sys_mprotect(a, P, mln.PROT_READ) == 0
    assert mm.sys_madvise(a, P, 1000) == -errno.EINVAL
    assert mm.sys_brk(0) == mm.brk_value
    assert mm.sys_munmap((1 << 64) - P, P) == -errno.EINVAL
    with pytest.raises(ValueError, match="addr"):
        mm.sys_munmap(1 << 64, P)
    with pytest.raises(TypeError, match="length"):
        mm.sys_munmap(a, 1.0)


# -- the recorder: operation tags and annotations ---------------------------------------------

def test_recorder_events_name_the_mm_operation_and_annotations_share_the_tracks(mm, tmp_path):
    import json
    with mln.trace.record(mm) as rec:
        a = mm.mmap(P, RW, PRIV)
        rec.annotate("syscall", nr=11)
        mm.munmap(a, P)
    ops = {e.mm_op for e in rec.events}
    assert {"mmap", "munmap"} <= ops
    assert [n.name for n in rec.annotations] == ["syscall"]
    assert rec.annotations[0].task == mln.current_task()
    path = tmp_path / "t.json"
    rec.to_chrome_trace(path)
    events = json.loads(path.read_text())["traceEvents"]
    spans = [e for e in events if e.get("ph") == "B"]
    assert {e["args"].get("mm_op") for e in spans} >= {"mmap", "munmap"}
    marks = [e for e in events if e.get("name") == "syscall"]
    assert marks and marks[0]["args"] == {"nr": 11}
    assert marks[0]["tid"] in {e["tid"] for e in spans}
    with pytest.raises(RuntimeError, match="not recording"):
        rec.annotate("late")


# -- the invalidation queue -------------------------------------------------------------------

def test_secondary_mmu_records_reasons_and_changed_since(mm):
    a = mm.mmap(2 * P, RW, PRIV)
    mm.write(a, b"x")
    with mm.secondary_mmu(eventfd=True) as t:
        seq = t.seq
        mm.mprotect(a, P, mln.PROT_READ)
        mm.madvise(a + P, P, mln.MADV_DONTNEED)
        assert t.changed_since(seq, a) and not t.changed_since(t.seq, a)
        assert t.pending == 2
        recs = t.drain()
        assert [(r.reason, r.new_prot) for r in recs] == [
            (mln.InvalidationReason.PROTECT, mln.PROT_READ),
            (mln.InvalidationReason.DONTNEED, RW)]
        assert t.enter()
        t.exit()
        import os
        assert int.from_bytes(os.read(t.fileno(), 8), "little") == 2
    with pytest.raises(ValueError, match="closed"):
        t.drain()


def test_an_invalidation_waits_for_a_guest_and_kicks_it(mm):
    """The guest thread enters and spins until kicked; the munmap on this
    thread returns only after it has left."""
    from mmap_lock_native._ffi import ffi
    a = mm.mmap(P, RW, PRIV)
    stop = threading.Event()
    entered = threading.Event()
    log = []

    @ffi.callback("int(void *)")
    def kick(arg):
        log.append("kick")
        stop.set()
        return 0

    t = mm.secondary_mmu((int(ffi.cast("uintptr_t", kick)), 0))

    def guest():
        while not t.enter():
            t.drain()
        entered.set()
        # Inside: calls into the mm are refused (an invalidation waits for us).
        with pytest.raises(OSError) as info:
            mm.read(a, 1)
        assert info.value.errno == errno.EDEADLK
        assert stop.wait(TIMEOUT)
        log.append("left")
        t.exit()

    w = Worker(guest).begin()
    assert entered.wait(TIMEOUT)
    mm.munmap(a, P)
    log.append("munmap returned")
    w.finish()
    assert log[0] == "kick" and log.index("left") < log.index("munmap returned")
    assert t.kicks >= 1 and not t.enter() and t.pending == 1
    t.close()


def test_the_guest_api_after_close():
    """After close(): lookups find nothing, faults and pins are SEGV_MAPERR,
    the syscalls say EINVAL, a new secondary MMU is refused; nothing crashes."""
    mm = mln.MM(name="closed")
    a = mm.mmap(P, RW, PRIV)
    smmu = mm.secondary_mmu()
    mm.close()
    assert mm.find_vma(0) is None and mm.vma_lookup(a) is None
    for call in (lambda: mm.fault(a), lambda: mm.pin_page(a), lambda: mm.vma_host_range(a)):
        with pytest.raises(mln.SegmentationFault) as info:
            call()
        assert info.value.si_code == mln.SEGV_MAPERR
    assert mm.sys_mmap(0, P, RW, PRIV, -1, 0) == -errno.EINVAL
    assert mm.sys_mremap(a, P, P, 0) == -errno.EFAULT
    assert errno_of(mm.secondary_mmu) == errno.EINVAL
    assert smmu.drain()[-1].reason == mln.InvalidationReason.UNMAP     # close unmapped all
    with mm.read_locked() as locked:
        assert locked.vma_lookup(a) is None
    smmu.close()
