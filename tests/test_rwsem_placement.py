"""Placing a semaphore in a caller's buffer: ``RWSemaphore(buffer=, offset=)``.

The offset is a byte offset whatever the buffer's item size or shape, and the
semaphore's ``SIZE`` bytes lie inside the buffer, or construction fails with
an error naming the problem.  Each placement is first made with
``attach=True``, which writes nothing, and its address compared with the one
expected: a placement outside the buffer fails the test before anything is
written there.
"""
from __future__ import annotations

import array
import ctypes
import mmap
from multiprocessing import shared_memory
from typing import Any, Callable, Iterator, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmap_lock_native as mln
from conftest import lock_address
from mmap_lock_native._ffi import ffi

SIZE = mln.RWSemaphore.SIZE
ALIGN = mln.RWSemaphore.ALIGNMENT
SENTINEL = 0xA5

_cleanups: List[Callable[[], None]] = []


def _shm(n: int) -> Any:
    mem = shared_memory.SharedMemory(create=True, size=n)

    def close() -> None:
        mem.close()
        mem.unlink()
    _cleanups.append(close)
    return mem.buf


#: Writable, C-contiguous buffers of ``n`` bytes (n a multiple of 64), of every kind.
GOOD_KINDS = {
    "bytearray": lambda n: bytearray(n),
    "2-D bytes": lambda n: memoryview(bytearray(n)).cast("B", (n // 64, 64)),
    "2-D int32": lambda n: memoryview(bytearray(n)).cast("i", (n // 64, 16)),
    "1-D int64 view": lambda n: memoryview(bytearray(n)).cast("q"),
    "array('q')": lambda n: array.array("q", bytes(n)),
    "array('h')": lambda n: array.array("h", bytes(n)),
    "ctypes int64[]": lambda n: (ctypes.c_int64 * (n // 8))(),
    "mmap": lambda n: mmap.mmap(-1, n),
    "SharedMemory.buf": _shm,
}

#: Buffers the semaphore cannot live in, and the error each must give.
BAD_KINDS = {
    "bytes": (lambda n: bytes(n), ValueError, "read-only"),
    "read-only view": (lambda n: memoryview(bytearray(n)).toreadonly(), ValueError, "read-only"),
    "read-only mmap": (lambda n: _readonly_mmap(n), ValueError, "read-only"),
    "every 2nd byte": (lambda n: memoryview(bytearray(2 * n))[::2], ValueError, "contiguous"),
    "reversed": (lambda n: memoryview(bytearray(n))[::-1], ValueError, "contiguous"),
    "list": (lambda n: [0] * n, TypeError, "buffer protocol"),
    "str": (lambda n: "x" * n, TypeError, "buffer protocol"),
    "None-like int": (lambda n: n, TypeError, "buffer protocol"),
}


def _readonly_mmap(n: int) -> mmap.mmap:
    area = mmap.mmap(-1, n)
    area.write(bytes(n))
    return mmap.mmap(-1, n, access=mmap.ACCESS_READ)


@pytest.fixture(autouse=True)
def _close_buffers() -> Iterator[None]:
    yield
    import gc
    gc.collect()  # semaphores still exporting a SharedMemory buffer
    while _cleanups:
        _cleanups.pop()()


def _bytes_of(buf: Any) -> memoryview:
    return memoryview(buf).cast("B")


def _base(buf: Any) -> int:
    return int(ffi.cast("uintptr_t", ffi.from_buffer(_bytes_of(buf))))


offsets = st.one_of(
    st.integers(-2 * SIZE, 4096 + 2 * SIZE),          # around both ends, aligned or not
    st.integers(-(1 << 70), 1 << 70),                  # negative and huge
    st.sampled_from([(1 << 63) - 1, 1 << 63, 1 << 64, -(1 << 63)]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(GOOD_KINDS)), pages=st.integers(1, 2), offset=offsets)
def test_placement_is_in_bytes_and_inside_the_buffer(kind: str, pages: int, offset: int) -> None:
    n = pages * 4096 - 64 * (pages - 1)   # not always a page: the end is not page aligned
    buf = GOOD_KINDS[kind](n)
    base = _base(buf)
    fits = 0 <= offset <= n - SIZE
    if not fits or (base + offset) % ALIGN:
        with pytest.raises(ValueError, match="offset" if not fits else "aligned"):
            mln.RWSemaphore(buffer=buf, offset=offset, attach=True)
        with pytest.raises(ValueError, match="offset" if not fits else "aligned"):
            mln.RWSemaphore(buffer=buf, offset=offset)
        return
    placed = mln.RWSemaphore(buffer=buf, offset=offset)
    attached = mln.RWSemaphore(buffer=buf, offset=offset, attach=True)  # validates first
    assert lock_address(placed) == lock_address(attached) == base + offset, (kind, offset)
    del placed, attached
    flat = _bytes_of(buf)
    flat[:] = bytes([SENTINEL]) * n
    sem = mln.RWSemaphore(buffer=buf, offset=offset, name=kind)
    with sem.write():
        assert sem.is_write_locked()
    sem.down_read()
    sem.up_read()
    outside = bytes(flat[:offset]) + bytes(flat[offset + SIZE:])
    assert outside == bytes([SENTINEL]) * (n - SIZE), f"{kind}: bytes outside the semaphore changed"
    del sem, flat


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(sorted(BAD_KINDS)), offset=offsets, attach=st.booleans())
def test_unusable_buffers_are_refused_by_kind(kind: str, offset: int, attach: bool) -> None:
    make, error, words = BAD_KINDS[kind]
    with pytest.raises(error, match=words):
        mln.RWSemaphore(buffer=make(4096), offset=offset, attach=attach)


@pytest.mark.parametrize("offset", [1.0, "64", None, 64j, b"\x40"])
def test_offset_of_a_wrong_type_is_a_type_error_naming_it(offset: Any) -> None:
    with pytest.raises(TypeError, match="offset must be an int"):
        mln.RWSemaphore(buffer=bytearray(4096), offset=offset)


@pytest.mark.parametrize("make", [
    lambda: memoryview(bytearray(4096)).cast("B", (64, 64)),   # "double free or corruption"
    lambda: array.array("q", bytes(4096)),                     # placed past the end: SIGSEGV
], ids=["2-D view", "array('q')"])
def test_issue_reproducers_place_within_the_buffer(make: Callable[[], Any]) -> None:
    """Issue 10 A1: offset 4032 (the last SIZE bytes, when SIZE was 64) was taken
    in rows / items (64 x 64 bytes, 8-byte items).  The last SIZE bytes now."""
    end = 4096 - SIZE
    buf = make()
    sem = mln.RWSemaphore(buffer=buf, offset=end)
    attached = mln.RWSemaphore(buffer=buf, offset=end, attach=True)
    assert lock_address(sem) == lock_address(attached) == _base(buf) + end
    del sem, attached
    flat = _bytes_of(buf)
    flat[:] = bytes([SENTINEL]) * 4096
    sem = mln.RWSemaphore(buffer=buf, offset=end)
    with sem.write():
        pass
    assert bytes(flat[:end]) == bytes([SENTINEL]) * end
    assert bytes(flat[end:]) != bytes([SENTINEL]) * SIZE   # rwsem_init wrote there
    del flat
    with pytest.raises(ValueError, match=f"offset {end + 1} leaves no room"):
        mln.RWSemaphore(buffer=buf, offset=end + 1)
