"""Buffers taken from pinned pages (``mm.view()``, ``mm.get_user_pages()``)
keep their page pinned: however the pin's owner is let go (``unpin()``, the
end of a ``with`` block, the object dropped, the mm closed or freed), a buffer
still referring to a page reads that page, never memory reused for a later
mapping; and read pins give read-only buffers."""
from __future__ import annotations

import ctypes
import gc
from typing import Any, Callable, Dict, List

import pytest

import mmap_lock_native as mln
from mmap_lock_native import address_space

P = mln.PAGE_SIZE
RW = mln.PROT_READ | mln.PROT_WRITE
PRIV = mln.MAP_PRIVATE | mln.MAP_ANONYMOUS
OLD = bytes(range(256)) * (P // 256)
NEW = b"\xee" * P
#: Pages mapped and written after the pin's owner is let go: enough to reuse any freed page.
REFILL = 256

#: Ways to take a buffer from a page's view: what an embedder hands to a device or emulator.
EXPORTS: Dict[str, Callable[[memoryview], Any]] = {
    "slice": lambda page: page[16:],
    "memoryview()": lambda page: memoryview(page),
    "cast('Q')": lambda page: page.cast("Q"),
    "the exporter (.obj)": lambda page: memoryview(page.obj),
    "ctypes from_buffer": lambda page: (ctypes.c_char * len(page)).from_buffer(page),
}


def _pin(mm: mln.MM, a: int, how: str, write: bool) -> mln.PinnedPages:
    return mm.view(a, P, write=write) if how == "view" else mm.get_user_pages(a, 1, write=write)


def _let_go(pinned: mln.PinnedPages, mm: mln.MM, how: str) -> None:
    """Give up the pin's owner in the way named; the caller drops its reference."""
    if how == "unpin":
        pinned.unpin()
    elif how == "with":
        with pinned:
            pass
    elif how in ("close", "free"):
        pinned.unpin()
        mm.close()


def _refill(mm: mln.MM, near: int) -> List[int]:
    """Map and write REFILL pages in this mm (the first where the old page was)
    and REFILL in a new one: a freed page would be handed out again here."""
    fresh = [mm.mmap(P, RW, PRIV | mln.MAP_FIXED, near)] if not mm._closed() else []
    fresh += [mm.mmap(P, RW, PRIV) for _ in range(REFILL)] if not mm._closed() else []
    for a in fresh:
        mm.write(a, NEW)
    other = mln.MM()
    for _ in range(REFILL):
        other.write(other.mmap(P, RW, PRIV), NEW)
    return fresh


@pytest.mark.parametrize("release", ["unpin", "with", "drop", "close", "free"])
@pytest.mark.parametrize("export", sorted(EXPORTS))
@pytest.mark.parametrize("how", ["view", "get_user_pages"])
def test_a_buffer_from_a_pinned_page_never_sees_a_later_mapping(how: str, export: str,
                                                                  release: str) -> None:
    mm = mln.MM()
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, OLD)
    pinned = _pin(mm, a, how, write=True)
    buf = EXPORTS[export](pinned.pages[0])
    _let_go(pinned, mm, release)
    del pinned
    if release == "free":
        mm = mln.MM()                        # the old one is freed with its last reference
    gc.collect()
    if not mm._closed():
        mm.munmap(a, P)
    fresh = _refill(mm, a)
    view = memoryview(buf).cast("B")
    assert bytes(view[:64]) == (OLD[16:80] if export == "slice" else OLD[:64]), \
        "the old buffer shows memory reused for a later mapping"
    view[:4] = b"XXXX"                       # a late write through the old buffer...
    for fresh_a in fresh:                    # ...lands in no later mapping
        assert mm.read(fresh_a, P) == NEW
    del view, buf


def test_the_issue_reproducer_unpin_munmap_mmap() -> None:
    """Issue 10 A2, as reported: a slice kept after unpin() read and wrote the next mapping."""
    mm = mln.MM()
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"old")
    v = mm.view(a, P, write=True)
    kept = v.pages[0][0:16]
    v.unpin()
    mm.munmap(a, P)
    b = mm.mmap(P, RW, PRIV)
    mm.write(b, b"NEW")
    assert bytes(kept[:3]) == b"old"
    kept[:3] = b"xyz"
    assert mm.read(b, 3) == b"NEW"


@pytest.fixture
def pin_drops(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """The pages whose pin is dropped, in order (a wrapper around the drop)."""
    dropped: List[int] = []
    real = address_space._drop_pin

    def counting(page: Any, data: Any) -> None:
        dropped.append(int(address_space.ffi.cast("uintptr_t", data)))
        real(page, data)
    monkeypatch.setattr(address_space, "_drop_pin", counting)
    return dropped


def test_each_pin_goes_with_its_last_buffer(pin_drops: List[int]) -> None:
    mm = mln.MM()
    a = mm.mmap(3 * P, RW, PRIV)
    pinned = mm.get_user_pages(a, 3, write=True)
    kept = pinned.pages[1][8:]
    pinned.unpin()
    assert len(pin_drops) == 2                  # pages 0 and 2 at once
    again = memoryview(kept)
    del kept
    assert len(pin_drops) == 2                  # page 1: still a buffer of it
    del again
    assert len(pin_drops) == 3


def test_unpin_and_with_release_the_views_and_pins_at_once(pin_drops: List[int]) -> None:
    mm = mln.MM()
    a = mm.mmap(2 * P, RW, PRIV)
    with mm.view(a + 10, P) as v:
        page = v.pages[0]
        assert bytes(page[:4]) == bytes(4)
    assert len(pin_drops) == 2
    with pytest.raises(ValueError, match="released"):
        bytes(page)
    pinned = mm.get_user_pages(a, 2)
    pinned.unpin()
    pinned.unpin()                              # idempotent
    assert len(pin_drops) == 4 and len(pinned) == 0


def test_dropping_the_pinned_pages_object_unpins(pin_drops: List[int]) -> None:
    mm = mln.MM()
    a = mm.mmap(P, RW, PRIV)
    pinned = mm.get_user_pages(a, 1)
    del pinned
    assert len(pin_drops) == 1


@pytest.mark.parametrize("how", ["view", "get_user_pages"])
def test_read_pins_give_read_only_buffers(how: str) -> None:
    mm = mln.MM()
    a = mm.mmap(P, RW, PRIV)
    mm.write(a, b"data")
    with _pin(mm, a, how, write=False) as pinned:
        page = pinned.pages[0]
        assert page.readonly and not pinned.write
        for derived in (page[1:], memoryview(page), page.cast("Q")):
            assert derived.readonly
        with pytest.raises(TypeError):
            page[0] = 1
        with pytest.raises(TypeError):
            (ctypes.c_char * 4).from_buffer(page)
        assert bytes(page[:4]) == b"data"
        del page, derived
    assert mm.read(a, 4) == b"data"


@pytest.mark.parametrize("how", ["view", "get_user_pages"])
def test_write_pins_give_writable_buffers(how: str) -> None:
    mm = mln.MM()
    a = mm.mmap(P, RW, PRIV)
    with _pin(mm, a, how, write=True) as pinned:
        assert pinned.write and not pinned.pages[0].readonly
        pinned.pages[0][:4] = b"dev!"
    assert mm.read(a, 4) == b"dev!"
