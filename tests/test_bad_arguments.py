"""Every public function fed wrong types, huge and negative values (hypothesis).

A value is either accepted (the call goes through, or the C core refuses it
as Linux would: OSError with its errno, SegmentationFault) or refused before
C sees it with TypeError or ValueError naming the argument (MemoryError
naming it for a buffer that cannot be had).  Never an OverflowError or
AttributeError, never a value silently wrapped or truncated.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmap_lock_native as mln
from conftest import hold, mm_hold

P = mln.PAGE_SIZE
RW = mln.PROT_READ | mln.PROT_WRITE
PRIV = mln.MAP_PRIVATE | mln.MAP_ANONYMOUS

#: Integers around every C type's limits, and anything but an integer.
VALUES = st.one_of(
    st.integers(-(1 << 70), 1 << 70),
    st.integers(-16, 16 * P),
    st.sampled_from([-1, -(1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1,
                     1 << 63, -(1 << 63), (1 << 64) - 1, 1 << 64, 1 << 200, 10 ** 400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, "1", "", b"1", 1j, object(), [1], {}, 2.0, True]),
)

#: The C core's verdicts on a value it took: fine, they are Linux's.
C_VERDICTS = (OSError, mln.SegmentationFault, mln.LockError)


def _with(guard: Any) -> None:
    with guard:
        pass


def _mapped(mm: mln.MM) -> int:
    return mm.mmap(4 * P, RW, PRIV)


def _smmu(mm: mln.MM, fn: Callable[[mln.SecondaryMMU], Any]) -> Any:
    with mm.secondary_mmu() as t:
        return fn(t)


def _locked(mm: mln.MM, fn: Callable[[mln.ReadLocked, int], Any]) -> Any:
    """``fn(locked, a)`` under ``mm.read_locked()``, ``a`` a mapping made before."""
    a = _mapped(mm)
    with mm.read_locked() as lk:
        return fn(lk, a)


#: name -> (argument named in the error, call(mm, value)).
MM_CALLS: Dict[str, Tuple[str, Callable[[mln.MM, Any], Any]]] = {
    "mmap length": ("length", lambda mm, v: mm.mmap(v, RW, PRIV)),
    "mmap prot": ("prot", lambda mm, v: mm.mmap(P, v, PRIV)),
    "mmap flags": ("flags", lambda mm, v: mm.mmap(P, RW, v)),
    "mmap addr": ("addr", lambda mm, v: mm.mmap(P, RW, PRIV, v)),
    "munmap addr": ("addr", lambda mm, v: mm.munmap(v, P)),
    "munmap length": ("length", lambda mm, v: mm.munmap(_mapped(mm), v)),
    "mprotect addr": ("addr", lambda mm, v: mm.mprotect(v, P, RW)),
    "mprotect length": ("length", lambda mm, v: mm.mprotect(_mapped(mm), v, RW)),
    "mprotect prot": ("prot", lambda mm, v: mm.mprotect(_mapped(mm), P, v)),
    "brk addr": ("addr", lambda mm, v: mm.brk(v)),
    "madvise addr": ("addr", lambda mm, v: mm.madvise(v, P, mln.MADV_DONTNEED)),
    "madvise length": ("length", lambda mm, v: mm.madvise(_mapped(mm), v, mln.MADV_DONTNEED)),
    "madvise advice": ("advice", lambda mm, v: mm.madvise(_mapped(mm), P, v)),
    "fault addr": ("addr", lambda mm, v: mm.fault(v)),
    "fault access": ("access", lambda mm, v: mm.fault(_mapped(mm), v)),
    "find_vma addr": ("addr", lambda mm, v: mm.find_vma(v)),
    "vma_lookup addr": ("addr", lambda mm, v: mm.vma_lookup(v)),
    "pin_page addr": ("addr", lambda mm, v: mm.pin_page(v).unpin()),
    "pin_page access": ("access", lambda mm, v: mm.pin_page(_mapped(mm), v).unpin()),
    "pin_pages addr": ("addr", lambda mm, v: mm.pin_pages(v, 1).unpin()),
    "pin_pages n": ("n", lambda mm, v: mm.pin_pages(_mapped(mm), v).unpin()),
    "pin_pages access": ("access", lambda mm, v: mm.pin_pages(_mapped(mm), 1, v).unpin()),
    "vma_host_range addr": ("addr", lambda mm, v: mm.vma_host_range(v)),
    "vma_host_range access": ("access", lambda mm, v: mm.vma_host_range(_mapped(mm), v)),
    "mremap addr": ("addr", lambda mm, v: mm.mremap(v, P, P)),
    "mremap old_length": ("old_length", lambda mm, v: mm.mremap(_mapped(mm), v, P)),
    "mremap new_length": ("new_length", lambda mm, v: mm.mremap(_mapped(mm), P, v)),
    "mremap flags": ("flags", lambda mm, v: mm.mremap(_mapped(mm), P, 2 * P, v)),
    "mremap new_addr": ("new_addr", lambda mm, v: mm.mremap(_mapped(mm), P, P, 3, v)),
    "secondary_mmu kick": ("kick", lambda mm, v: mm.secondary_mmu(v).close()),
    "changed_since seq": ("seq", lambda mm, v: _smmu(mm, lambda t: t.changed_since(v, 0))),
    "changed_since start": ("start", lambda mm, v: _smmu(mm, lambda t: t.changed_since(0, v))),
    "changed_since end": ("end", lambda mm, v: _smmu(mm, lambda t: t.changed_since(0, 0, v))),
    "locked find_vma addr": ("addr", lambda mm, v: _locked(mm, lambda lk, a: lk.find_vma(v))),
    "locked vma_lookup addr": ("addr", lambda mm, v: _locked(mm, lambda lk, a: lk.vma_lookup(v))),
    "locked fault addr": ("addr", lambda mm, v: _locked(mm, lambda lk, a: lk.fault(v))),
    "locked fault access": ("access", lambda mm, v: _locked(mm, lambda lk, a: lk.fault(a, v))),
    "locked pin_page addr": ("addr", lambda mm, v: _locked(mm, lambda lk, a: lk.pin_page(v))),
    "locked pin_page access": ("access", lambda mm, v: _locked(
        mm, lambda lk, a: lk.pin_page(a, v).unpin())),
    "locked pin_pages n": ("n", lambda mm, v: _locked(mm, lambda lk, a: lk.pin_pages(a, v))),
    "locked vma_host_range addr": ("addr", lambda mm, v: _locked(
        mm, lambda lk, a: lk.vma_host_range(v))),
    "locked vma_host_range access": ("access", lambda mm, v: _locked(
        mm, lambda lk, a: lk.vma_host_range(a, v))),
    "locked read addr": ("addr", lambda mm, v: _locked(mm, lambda lk, a: lk.read(v, 8))),
    "locked read n": ("n", lambda mm, v: _locked(mm, lambda lk, a: lk.read(a, v))),
    "locked write addr": ("addr", lambda mm, v: _locked(mm, lambda lk, a: lk.write(v, b"12"))),
    "locked write data": ("data", lambda mm, v: _locked(mm, lambda lk, a: lk.write(a, v))),
    "unpin start": ("start", lambda mm, v: mm.pin_pages(_mapped(mm), 2).unpin(v)),
    "unpin stop": ("stop", lambda mm, v: mm.pin_pages(_mapped(mm), 2).unpin(0, v)),
    "read addr": ("addr", lambda mm, v: mm.read(v, 8)),
    "read n": ("n", lambda mm, v: mm.read(_mapped(mm), v)),
    "write addr": ("addr", lambda mm, v: mm.write(v, b"12345678")),
    "write data": ("data", lambda mm, v: mm.write(_mapped(mm), v)),
    "get_user_pages addr": ("addr", lambda mm, v: mm.get_user_pages(v, 1).unpin()),
    "get_user_pages n": ("n", lambda mm, v: mm.get_user_pages(_mapped(mm), v).unpin()),
    "get_user_pages write": ("write", lambda mm, v: mm.get_user_pages(_mapped(mm), 1, v).unpin()),
    "view addr": ("addr", lambda mm, v: mm.view(v, 8).unpin()),
    "view length": ("length", lambda mm, v: mm.view(_mapped(mm), v).unpin()),
    "view write": ("write", lambda mm, v: mm.view(_mapped(mm), 8, v).unpin()),
    "set_max_map_count n": ("n", lambda mm, v: mm.set_max_map_count(v)),
    "sys_mmap addr": ("addr", lambda mm, v: mm.sys_mmap(v, P, RW, PRIV, -1, 0)),
    "sys_mmap length": ("length", lambda mm, v: mm.sys_mmap(0, v, RW, PRIV, -1, 0)),
    "sys_mmap prot": ("prot", lambda mm, v: mm.sys_mmap(0, P, v, PRIV, -1, 0)),
    "sys_mmap flags": ("flags", lambda mm, v: mm.sys_mmap(0, P, RW, v, -1, 0)),
    "sys_mmap fd": ("fd", lambda mm, v: mm.sys_mmap(0, P, RW, PRIV, v, 0)),
    "sys_mmap offset": ("offset", lambda mm, v: mm.sys_mmap(0, P, RW, PRIV, -1, v)),
    "sys_munmap addr": ("addr", lambda mm, v: mm.sys_munmap(v, P)),
    "sys_munmap length": ("length", lambda mm, v: mm.sys_munmap(_mapped(mm), v)),
    "sys_mprotect addr": ("addr", lambda mm, v: mm.sys_mprotect(v, P, RW)),
    "sys_mprotect length": ("length", lambda mm, v: mm.sys_mprotect(_mapped(mm), v, RW)),
    "sys_mprotect prot": ("prot", lambda mm, v: mm.sys_mprotect(_mapped(mm), P, v)),
    "sys_brk addr": ("addr", lambda mm, v: mm.sys_brk(v)),
    "sys_madvise addr": ("addr", lambda mm, v: mm.sys_madvise(v, P, mln.MADV_DONTNEED)),
    "sys_madvise length": ("length", lambda mm, v: mm.sys_madvise(_mapped(mm), v, 4)),
    "sys_madvise advice": ("advice", lambda mm, v: mm.sys_madvise(_mapped(mm), P, v)),
    "sys_mremap addr": ("addr", lambda mm, v: mm.sys_mremap(v, P, P, 0)),
    "sys_mremap old_length": ("old_length", lambda mm, v: mm.sys_mremap(_mapped(mm), v, P, 0)),
    "sys_mremap new_length": ("new_length", lambda mm, v: mm.sys_mremap(_mapped(mm), P, v, 1)),
    "sys_mremap flags": ("flags", lambda mm, v: mm.sys_mremap(_mapped(mm), P, P, v)),
    "sys_mremap new_addr": ("new_addr", lambda mm, v: mm.sys_mremap(_mapped(mm), P, P, 3, v)),
    "set_hold_sampling period": ("period", lambda mm, v: mm.set_hold_sampling(v)),
    "mmap_write_lock_nested subclass": (
        "subclass", lambda mm, v: (mln.mmap_write_lock_nested(mm, v), mln.mmap_write_unlock(mm))),
    "mmap_lock_speculate_retry seq": ("seq", lambda mm, v: mln.mmap_lock_speculate_retry(mm, v)),
    "mmap_read_locked timeout": ("timeout", lambda mm, v: _with(mln.mmap_read_locked(mm, v))),
    "mmap_write_locked timeout": ("timeout", lambda mm, v: _with(mln.mmap_write_locked(mm, v))),
    "record capacity": ("capacity", lambda mm, v: _with(mln.trace.record(mm, v))),
}

#: name -> (argument named in the error, call(value)) for what needs no mm.
PLAIN_CALLS: Dict[str, Tuple[str, Callable[[Any], Any]]] = {
    "MM name": ("name", lambda v: mln.MM(name=v)),
    "MM lock": ("lock", lambda v: mln.MM(lock=v)),
    "MM lock_class": ("lock_class", lambda v: mln.MM(lock_class=v)),
    "RWSemaphore name": ("name", lambda v: mln.RWSemaphore(name=v)),
    "RWSemaphore offset": ("offset", lambda v: mln.RWSemaphore(buffer=bytearray(4096), offset=v)),
    "down_write_nested subclass": (
        "subclass", lambda v: _sem_call(lambda s: (s.down_write_nested(v), s.up_write()))),
    "acquire_read timeout": (
        "timeout", lambda v: _sem_call(lambda s: s.acquire_read(v) and s.up_read())),
    "acquire_write timeout": (
        "timeout", lambda v: _sem_call(lambda s: s.acquire_write(v) and s.up_write())),
    "read timeout": ("timeout", lambda v: _sem_call(lambda s: _with(s.read(v)))),
    "write timeout": ("timeout", lambda v: _sem_call(lambda s: _with(s.write(v)))),
    "set_current_task task": (
        "task", lambda v: (mln.set_current_task(v), mln.set_current_task(None))),
    "task_kill task": ("task", lambda v: (mln.task_kill(v), mln.task_revive(v))),
    "task_revive task": ("task", lambda v: mln.task_revive(v)),
    "task_is_killed task": ("task", lambda v: mln.task_is_killed(v)),
    "set_lockdep_mode mode": ("mode", lambda v: mln.set_lockdep_mode(v)),
    "set_hooks start_locking": ("start_locking", lambda v: mln.trace.set_hooks(start_locking=v)),
    "record mm": ("mm", lambda v: mln.trace.record(v)),
    "LockStats mm": ("mm", lambda v: mln.LockStats(v)),
    "SecondaryMMU mm": ("mm", lambda v: mln.SecondaryMMU(v)),
}

#: Every function of the mmap locking API takes the mm first.
MM_FIRST = ["mmap_assert_locked", "mmap_assert_write_locked", "mmap_init_lock",
            "mmap_lock_is_contended", "mmap_lock_speculate_try_begin", "mmap_read_lock",
            "mmap_read_lock_killable", "mmap_read_locked", "mmap_read_trylock",
            "mmap_read_trylock_non_owner", "mmap_read_unlock", "mmap_read_unlock_non_owner",
            "mmap_write_downgrade", "mmap_write_lock", "mmap_write_lock_killable",
            "mmap_write_locked", "mmap_write_trylock", "mmap_write_unlock"]
for _name in MM_FIRST:
    PLAIN_CALLS[f"{_name} mm"] = ("mm", lambda v, f=getattr(mln, _name): f(v))
PLAIN_CALLS["mmap_write_lock_nested mm"] = ("mm", lambda v: mln.mmap_write_lock_nested(v, 0))
PLAIN_CALLS["mmap_lock_speculate_retry mm"] = ("mm", lambda v: mln.mmap_lock_speculate_retry(v, 0))


def _sem_call(fn: Callable[[mln.RWSemaphore], Any]) -> Any:
    return fn(mln.RWSemaphore(name="fuzzed"))


def _judge(arg: str, value: Any, call: Callable[[], Any]) -> None:
    try:
        call()
    except (TypeError, ValueError, MemoryError) as exc:
        assert arg in str(exc), f"{type(exc).__name__} for {value!r} does not name {arg}: {exc}"
    except C_VERDICTS:
        pass


#: Public callables that take no argument, or any value (truthiness, an opaque object).
TAKE_ANYTHING = {"current_task", "get_debug", "lockdep_mode", "lockdep_reset", "set_debug",
                 "set_lock_stats", "register_notifier", "reset_lock_stats", "lock_stats",
                 "mmap_lock_is_contended", "read_locked"}
#: Classes the package makes for the caller (records, handles, exceptions).
NOT_CONSTRUCTED_BY_CALLERS = {"LockError", "LockOrderError", "LockOrderWarning", "OwnerDiedError",
                              "SegmentationFault", "VMA", "PinnedPages", "NotifierHandle",
                              "NotifierError", "Access", "HostRange", "Invalidation",
                              "InvalidationReason", "Pin", "PinnedRange", "ReadLocked"}


def _takes_arguments(fn: Any, method: bool) -> bool:
    return len(inspect.signature(fn).parameters) > (1 if method else 0)


def _public_callables() -> Iterator[Tuple[str, Any, bool]]:
    """(name, callable, is a method) of the package's API."""
    for name in mln.__all__:
        obj = getattr(mln, name)
        if callable(obj) and name not in NOT_CONSTRUCTED_BY_CALLERS:
            yield name, obj, False
    for cls in (mln.MM, mln.RWSemaphore, mln.ReadLocked, mln.SecondaryMMU, mln.Pin,
                mln.PinnedRange):
        for klass in cls.__mro__[:-1]:
            for name, fn in vars(klass).items():
                if callable(fn) and not name.startswith("_"):
                    yield name, fn, True


def test_every_public_function_is_fuzzed() -> None:
    """Every public function and class, and every public method of MM and
    RWSemaphore, that takes an argument is in a table above."""
    covered = {key.split()[0] for key in list(MM_CALLS) + list(PLAIN_CALLS)} | TAKE_ANYTHING
    missing = {name for name, fn, method in _public_callables()
               if name not in covered and (isinstance(fn, type) or _takes_arguments(fn, method))}
    assert missing == set()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES)
@pytest.mark.parametrize("case", sorted(MM_CALLS))
def test_mm_calls_refuse_bad_values_naming_them(case: str, value: Any) -> None:
    arg, call = MM_CALLS[case]
    mm = mln.MM(name="fuzzed")
    try:
        _judge(arg, value, lambda: call(mm, value))
    finally:
        mln.set_current_task(None)
    assert not mm.mmap_lock.is_locked(), mm


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(value=VALUES)
@pytest.mark.parametrize("case", sorted(PLAIN_CALLS))
def test_calls_refuse_bad_values_naming_them(case: str, value: Any, lockdep_clean: None) -> None:
    # lockdep_clean restores the checker's mode after the whole test: set_lockdep_mode
    # is fuzzed too, and any mode it accepts is as good as another meanwhile.
    arg, call = PLAIN_CALLS[case]
    try:
        _judge(arg, value, lambda: call(value))
    finally:
        mln.trace.clear_hooks()
        mln.set_current_task(None)


# -- the issue's reproducers ------------------------------------------------------------------

BAD_TIMEOUTS = [math.inf, -math.inf, math.nan, -1, -1e-9, 1e300, 10 ** 20, 10 ** 400,
                mln.TIMEOUT_MAX * 2]
WRONG_TIMEOUTS = ["1", b"1", 1j, True, [1]]

#: (name, call(lock owner, timeout)) of every call with a timeout.
TIMED = {
    "acquire_read": lambda sem, mm, t: sem.acquire_read(t),
    "acquire_write": lambda sem, mm, t: sem.acquire_write(t),
    "read": lambda sem, mm, t: _with(sem.read(t)),
    "write": lambda sem, mm, t: _with(sem.write(t)),
    "mmap_read_locked": lambda sem, mm, t: _with(mln.mmap_read_locked(mm, t)),
    "mmap_write_locked": lambda sem, mm, t: _with(mln.mmap_write_locked(mm, t)),
}


@pytest.mark.parametrize("contended", [False, True], ids=["free", "write-held elsewhere"])
@pytest.mark.parametrize("call", sorted(TIMED))
def test_bad_timeouts_are_refused_at_once_contended_or_not(call: str, contended: bool) -> None:
    mm = mln.MM(name="timed")
    sem = mln.RWSemaphore(name="timed")
    holders = [hold(sem, "write"), mm_hold(mm, "write")] if contended else []
    try:
        for t in BAD_TIMEOUTS:
            with pytest.raises(ValueError, match="timeout"):
                TIMED[call](sem, mm, t)
        for t in WRONG_TIMEOUTS:
            with pytest.raises(TypeError, match="timeout"):
                TIMED[call](sem, mm, t)
    finally:
        for h in holders:
            h.done()
    assert not sem.is_locked() and not mm.mmap_lock.is_locked()


@pytest.mark.parametrize("call", sorted(TIMED))
def test_every_valid_timeout_works_uncontended(call: str) -> None:
    for t in (0, 0.0, 1e-12, 2, mln.TIMEOUT_MAX):
        sem, mm = mln.RWSemaphore(), mln.MM()
        TIMED[call](sem, mm, t)


def test_issue_reproducers_give_clear_errors() -> None:
    mm = mln.MM(name="guest")
    a = mm.mmap(P, RW, PRIV)
    with pytest.raises(ValueError, match=r"read on MM 'guest' .*: n 0x8000000000000000 is outside"):
        mm.read(a, 2 ** 63)
    with pytest.raises(ValueError, match="get_user_pages on MM 'guest' .*: n 0x10000000000"):
        mm.get_user_pages(a, 2 ** 40)
    with pytest.raises(ValueError, match="munmap on MM 'guest' .*: addr -0x1 is outside"):
        mm.munmap(-1, P)
    with pytest.raises(ValueError, match="mmap on MM 'guest' .*: length -0x1000 is outside"):
        mm.mmap(-P, RW, PRIV)
    with pytest.raises(TypeError, match="lock_class"):
        mln.MM(lock_class=123)
    with pytest.raises(TypeError, match="subclass must be an int, not float 1.5"):
        mln.RWSemaphore().down_write_nested(1.5)
