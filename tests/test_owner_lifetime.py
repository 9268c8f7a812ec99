"""Every Python object that refers to C memory keeps that memory's owner alive.

Each object below is made from an owner (a semaphore, an mm) that is then
dropped and collected; fresh owners are made, which would reuse freed memory;
then the object is used.  It must work on its own memory and leave the
fresh owners untouched (issue 10 A3: a guard of a collected mm's lock
write-locked the next mm allocated there).
"""
from __future__ import annotations

import gc
from typing import Any, Callable, Dict, List

import pytest

import mmap_lock_native as mln

P = mln.PAGE_SIZE
FRESH = 64


def _fresh_owners() -> "tuple[List[mln.MM], List[mln.RWSemaphore]]":
    return [mln.MM() for _ in range(FRESH)], [mln.RWSemaphore() for _ in range(FRESH)]


def _untouched(mms: List[mln.MM], sems: List[mln.RWSemaphore]) -> None:
    for mm in mms:
        assert not mm.mmap_lock.is_locked() and not mm.mmap_lock.is_contended(), mm
        stats = mm.lock_stats()    # the mmap API's acquisitions, released or not
        assert stats.read_acquisitions == stats.write_acquisitions == 0, mm
    for sem in sems:
        assert not sem.is_locked(), sem


def _semaphore(kind: str) -> mln.RWSemaphore:
    if kind == "plain":
        return mln.RWSemaphore(name=kind)
    if kind == "shared":
        return mln.RWSemaphore(shared=True, name=kind)
    if kind == "placed":
        return mln.RWSemaphore(buffer=bytearray(4096), offset=64, name=kind)
    return mln.MM(name=kind).mmap_lock


SEMAPHORE_KINDS = ["plain", "shared", "placed", "an mm's mmap_lock"]

#: Guards of a semaphore: how each is obtained, and the mode it takes.
GUARDS: Dict[str, Callable[[mln.RWSemaphore], Any]] = {
    "read()": lambda s: s.read(),
    "write()": lambda s: s.write(),
    "read(timeout)": lambda s: s.read(timeout=5.0),
    "write(timeout)": lambda s: s.write(timeout=5.0),
}


@pytest.mark.parametrize("guard", sorted(GUARDS))
@pytest.mark.parametrize("kind", SEMAPHORE_KINDS)
def test_a_semaphore_guard_keeps_its_lock_alive(kind: str, guard: str) -> None:
    g = GUARDS[guard](_semaphore(kind))
    gc.collect()
    mms, sems = _fresh_owners()
    with g as sem:
        assert sem.is_write_locked() == guard.startswith("write")
        assert sem.readers == (0 if guard.startswith("write") else 1)
        _untouched(mms, sems)
    assert not sem.is_locked()
    with g:                                   # a stand-in object serves as often as needed
        pass
    _untouched(mms, sems)


def test_the_issue_reproducer_does_not_lock_the_next_mm() -> None:
    g = mln.MM().mmap_lock.write()
    gc.collect()
    m0 = mln.MM()
    with g:
        assert not m0.mmap_lock.is_locked()
    assert not m0.mmap_lock.is_locked()


def test_a_semaphore_guard_misused_after_its_object_is_gone_names_the_lock() -> None:
    g = mln.RWSemaphore(name="gone").read()
    gc.collect()
    with pytest.raises(mln.LockError, match="up_read on RWSemaphore 'gone'"):
        g.__exit__(None, None, None)


def _enter_and_exit(guard: Any) -> None:
    with guard:
        pass


#: Objects made from an mm, and a use of each that touches the mm's memory.
MM_OBJECTS: Dict[str, "tuple[Callable[[mln.MM], Any], Callable[[Any], None]]"] = {
    "mmap_lock": (lambda mm: mm.mmap_lock, lambda s: (s.down_write(), s.up_write())),
    "mmap_read_locked": (lambda mm: mln.mmap_read_locked(mm), _enter_and_exit),
    "mmap_write_locked": (lambda mm: mln.mmap_write_locked(mm), _enter_and_exit),
    "mmap_write_locked(timeout)": (lambda mm: mln.mmap_write_locked(mm, timeout=5.0),
                                   _enter_and_exit),
    "lock_stats": (lambda mm: mm.lock_stats(), lambda st: st.reset()),
    "record": (lambda mm: mln.trace.record(mm), lambda r: (r.__enter__(), r.stop())),
    "register_notifier": (lambda mm: mm.register_notifier(object()), lambda h: h.unregister()),
    "get_user_pages": (lambda mm: mm.get_user_pages(mm.mmap(P, mln.PROT_READ | mln.PROT_WRITE,
                                                            mln.MAP_PRIVATE | mln.MAP_ANONYMOUS),
                                                    1, write=True),
                       lambda p: p.pages[0].__setitem__(slice(0, 4), b"mine")),
}


@pytest.mark.parametrize("name", sorted(MM_OBJECTS))
def test_an_object_made_from_an_mm_keeps_it_alive(name: str) -> None:
    make, use = MM_OBJECTS[name]
    obj = make(mln.MM(name="dropped"))
    gc.collect()
    mms, sems = _fresh_owners()
    use(obj)
    _untouched(mms, sems)
