"""MMs across a host fork() (docs/mm.md, "Host fork"): in the child, a
host-backed MM made before the fork is refused with ESTALE whatever the
call, collecting it there releases nothing of the parent's, and an MM the
child makes has memory of its own, so the parent's data and its later
demand-zero pages are untouched.  An MM without host backing is the
child's own copy and stays usable there.  Every wait is bounded."""
from __future__ import annotations

import errno
import gc
import os
from typing import Callable

import pytest

import mmap_lock_native as mln
from conftest import TIMEOUT, reap_child, wait_child

P = mln.PAGE_SIZE
RW = mln.PROT_READ | mln.PROT_WRITE
PRIV = mln.MAP_PRIVATE | mln.MAP_ANONYMOUS
PAGES = 64


def in_child(check: Callable[[], None]) -> None:
    """Run ``check`` in a forked child; the test fails with what it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            check()
            code = 0
        except BaseException as exc:  # noqa: B902 - everything goes back to the parent
            os.write(w, f"{type(exc).__name__}: {exc}".encode()[:4000])
        finally:
            os._exit(code)
    os.close(w)
    try:
        status = wait_child(pid, TIMEOUT)
        why = os.read(r, 4096).decode(errors="replace")
    finally:
        reap_child(pid)
        os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0, f"in the child: {why}"


def test_a_host_backed_mm_is_refused_in_the_child_and_the_parents_memory_is_untouched():
    mm = mln.MM(name="parent", host_backing=True)
    a = mm.mmap(16 * P, RW, PRIV)
    mm.write(a, b"parent")
    pin = mm.pin_page(a, mln.Access.READ)
    smmu = mm.secondary_mmu()

    def child() -> None:
        calls = {
            "mmap": lambda: mm.mmap(P, RW, PRIV),
            "read": lambda: mm.read(a, 6),
            "write": lambda: mm.write(a, b"child!"),
            "munmap": lambda: mm.munmap(a, P),
            "fork": mm.fork,
            "vma_host_range": lambda: mm.vma_host_range(a),
            "maps": mm.maps,
            "SecondaryMMU.enter": smmu.enter,      # no guest runs on the parent's memory
        }
        for name, call in calls.items():
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == errno.ESTALE, (name, info.value)
            assert "copied into this process by fork()" in str(info.value), name
        with pytest.raises(OSError, match="ESTALE"):
            mm.sys_munmap(a, P)         # the embedder's error, not the guest's: raised
        assert bytes(pin.memory[:6]) == b"parent"               # a pin still reads its page
        # An MM of the child's own: filled, and left without freeing as the child exits.
        own = mln.MM(name="child", host_backing=True)
        b = own.mmap(PAGES * P, RW, PRIV)
        own.write(b, b"\xcc" * (PAGES * P))
        assert own.read(b + 5 * P, 2) == b"\xcc\xcc"
        pin.unpin()
        gc.collect()

    in_child(child)
    assert mm.read(a, 6) == b"parent"
    assert bytes(pin.memory[:6]) == b"parent"
    pin.unpin()
    assert smmu.enter() is True     # the parent's guest still enters
    smmu.exit()
    smmu.close()
    c = mm.mmap(PAGES * P, RW, PRIV)
    assert mm.read(c, PAGES * P) == bytes(PAGES * P), "the child's writes reached the parent"
    mm.close()


def test_an_mm_without_host_backing_is_the_childs_own_copy():
    mm = mln.MM(name="plain")
    a = mm.mmap(4 * P, RW, PRIV)
    mm.write(a, b"parent")

    def child() -> None:
        assert mm.read(a, 6) == b"parent"
        mm.write(a, b"child!")
        b = mm.mmap(P, RW, PRIV)
        mm.write(b, b"more")
        assert mm.read(a, 6) == b"child!" and mm.read(b, 4) == b"more"

    in_child(child)
    assert mm.read(a, 6) == b"parent"
    mm.close()
