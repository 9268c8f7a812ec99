"""The mmap_lock tracepoints (``mln.trace.set_hooks``) and the event recorder
(``mln.trace.record``): where each call fires them, with what arguments, and
the recorder's buffer, drop count and Chrome trace export."""
from __future__ import annotations

import errno
import json
import threading
from collections import defaultdict
from typing import Any, List, Optional, Tuple

import pytest

import mmap_lock_native as mln
from mmap_lock_native.chrome_trace import (MMAP_OP_KILLABLE, MMAP_OP_NESTED, MMAP_OP_NON_OWNER,
                                           MMAP_OP_TRY, MMAP_OP_WRITE)
from conftest import (TIMEOUT, Worker, assert_free, kill_waiter, lock_cycles, mm_hold, mm_queue,
                      wait_queued)

S, A, R = "start_locking", "acquire_returned", "released"


# -- helpers -----------------------------------------------------------------------------

class HookLog:
    """Installs all three hooks; ``calls`` gets (event, mm_arg, task, args...) tuples."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []

    def start_locking(self, mm: Any, write: bool) -> None:
        self.calls.append((S, mm, mln.current_task(), write))

    def acquire_returned(self, mm: Any, write: bool, success: bool) -> None:
        self.calls.append((A, mm, mln.current_task(), write, success))

    def released(self, mm: Any, write: bool) -> None:
        self.calls.append((R, mm, mln.current_task(), write))

    def install(self) -> "HookLog":
        mln.trace.set_hooks(start_locking=self.start_locking,
                            acquire_returned=self.acquire_returned, released=self.released)
        return self

    def of(self, mm: mln.MM, task: Optional[int] = None) -> List[tuple]:
        """(event, write[, success]) of the calls about ``mm`` (by ``task``)."""
        out = []
        for call in list(self.calls):
            if call[1] is mm and (task is None or call[2] == task):
                out.append((call[0],) + call[3:])
        return out

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture(autouse=True)
def _no_hooks_leak():
    """Every test starts and ends with no hooks installed, whatever happens."""
    mln.trace.clear_hooks()
    try:
        yield
    finally:
        mln.trace.clear_hooks()


@pytest.fixture
def mm():
    return mln.MM(name="traced", debug=False)


@pytest.fixture
def hooks():
    return HookLog().install()


# -- what each call fires ------------------------------------------------------------------

def _ok(write: bool) -> List[tuple]:
    return [(S, write), (A, write, True)]


SINGLE_THREAD_CALLS = {
    "read_lock": (lambda mm: mln.mmap_read_lock(mm), _ok(False), mln.mmap_read_unlock),
    "write_lock": (lambda mm: mln.mmap_write_lock(mm), _ok(True), mln.mmap_write_unlock),
    "write_lock_nested": (lambda mm: mln.mmap_write_lock_nested(mm, mln.SINGLE_DEPTH_NESTING),
                          _ok(True), mln.mmap_write_unlock),
    "read_lock_killable": (lambda mm: mln.mmap_read_lock_killable(mm), _ok(False),
                           mln.mmap_read_unlock),
    "write_lock_killable": (lambda mm: mln.mmap_write_lock_killable(mm), _ok(True),
                            mln.mmap_write_unlock),
    "read_trylock": (lambda mm: mln.mmap_read_trylock(mm), _ok(False), mln.mmap_read_unlock),
    "write_trylock": (lambda mm: mln.mmap_write_trylock(mm), _ok(True), mln.mmap_write_unlock),
    "read_trylock_non_owner": (lambda mm: mln.mmap_read_trylock_non_owner(mm), _ok(False),
                               mln.mmap_read_unlock_non_owner),
    "read_locked": (None, _ok(False), None),
    "write_locked": (None, _ok(True), None),
}


@pytest.mark.parametrize("name", sorted(SINGLE_THREAD_CALLS))
def test_acquisition_fires_start_then_acquire_returned(mm, hooks, name):
    """Each successful acquisition fires start_locking(mm, write) then acquire_returned(mm, write, True); the release fires released(mm, write)."""
    acquire, expected, release = SINGLE_THREAD_CALLS[name]
    write = expected[0][1]
    if acquire is None:
        with getattr(mln, f"mmap_{'write' if write else 'read'}_locked")(mm):
            assert hooks.of(mm) == expected
            assert all(c[1] is mm for c in hooks.calls)
        assert hooks.of(mm) == expected + [(R, write)]
    else:
        rc = acquire(mm)
        assert rc in (None, 0, True)
        assert hooks.of(mm) == expected
        # The hooks got the MM object itself, on the calling thread.
        assert all(c[1] is mm and c[2] == mln.current_task() for c in hooks.calls)
        release(mm)
        assert hooks.of(mm) == expected + [(R, write)]
    assert_free(mm.mmap_lock)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_failed_trylock_fires_start_then_unsuccessful_return(mm, hooks, mode):
    """A failed trylock fires start_locking then acquire_returned(success=False), and no released."""
    holder = mm_hold(mm, "write")
    hooks.clear()
    assert getattr(mln, f"mmap_{mode}_trylock")(mm) is False
    write = mode == "write"
    assert hooks.of(mm, mln.current_task()) == [(S, write), (A, write, False)]
    holder.done()


def test_failed_non_owner_trylock_fires_unsuccessful_return(mm, hooks):
    """A failed mmap_read_trylock_non_owner fires start_locking then acquire_returned(False, False)."""
    holder = mm_hold(mm, "write")
    hooks.clear()
    assert mln.mmap_read_trylock_non_owner(mm) is False
    assert hooks.of(mm, mln.current_task()) == [(S, False), (A, False, False)]
    holder.done()


@pytest.mark.parametrize("mode", ["read", "write"])
def test_killed_killable_wait_fires_unsuccessful_return(mm, hooks, mode):
    """A killable wait ended by task_kill fires start_locking then acquire_returned(success=False), nothing more."""
    holder = mm_hold(mm, "write")
    fn = getattr(mln, f"mmap_{mode}_lock_killable")
    victim = Worker(fn, mm, name="victim").begin()
    wait_queued(mm.mmap_lock, *((1, 0) if mode == "read" else (0, 1)), workers=(victim,))
    assert kill_waiter(victim) == -errno.EINTR
    write = mode == "write"
    assert hooks.of(mm, victim.task) == [(S, write), (A, write, False)]
    holder.done()
    assert_free(mm.mmap_lock)


def test_contended_acquisition_fires_start_before_waiting(mm, hooks):
    """start_locking fires before a contended acquisition waits, acquire_returned once it gets the lock."""
    holder = mm_hold(mm, "read")
    w = mm_queue(mm, "write", (0, 1), name="writer")
    assert hooks.of(mm, w.task) == [(S, True)]          # fired, still waiting
    holder.done()
    w.wait_acquired()
    assert hooks.of(mm, w.task) == [(S, True), (A, True, True)]
    w.done()
    assert hooks.of(mm, w.task) == [(S, True), (A, True, True), (R, True)]
    assert hooks.of(mm, holder.task)[-1] == (R, False)


def test_non_owner_release_fires_released_on_the_releasing_thread(mm, hooks):
    """A non-owner read hold released by another thread fires released(mm, False) on that thread."""
    assert mln.mmap_read_trylock_non_owner(mm)
    other = Worker(mln.mmap_read_unlock_non_owner, mm, name="releaser").begin()
    other.finish()
    assert hooks.of(mm, mln.current_task()) == [(S, False), (A, False, True)]
    assert hooks.of(mm, other.task) == [(R, False)]
    assert_free(mm.mmap_lock)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_released_fires_before_the_release(mm, mode):
    """Inside the released hook the lock is still held (the tracepoint precedes the release)."""
    seen = []

    def released(m, write):
        seen.append((m is mm, write, m.mmap_lock.is_locked(), m.mmap_lock.is_write_locked()))

    mln.trace.set_hooks(released=released)
    getattr(mln, f"mmap_{mode}_lock")(mm)
    assert seen == []
    getattr(mln, f"mmap_{mode}_unlock")(mm)
    write = mode == "write"
    assert seen == [(True, write, True, write)]
    assert_free(mm.mmap_lock)


def test_downgrade_fires_only_a_successful_read_return(mm, hooks):
    """mmap_write_downgrade fires acquire_returned(mm, write=False, success=True) and nothing else."""
    mln.mmap_write_lock(mm)
    hooks.clear()
    mln.mmap_write_downgrade(mm)
    assert hooks.of(mm) == [(A, False, True)]
    hooks.clear()
    mln.mmap_read_unlock(mm)
    assert hooks.of(mm) == [(R, False)]
    assert_free(mm.mmap_lock)


def test_hooks_see_the_write_lock_in_acquire_returned(mm):
    """acquire_returned of a write fires with the lock already write-held by the caller."""
    seen = []
    mln.trace.set_hooks(
        start_locking=lambda m, w: seen.append(("S", m.mmap_lock.is_locked())),
        acquire_returned=lambda m, w, ok: seen.append(("A", m.mmap_lock.owner)))
    mln.mmap_write_lock(mm)
    mln.mmap_write_unlock(mm)
    assert seen == [("S", False), ("A", mln.current_task())]


def test_refused_release_fires_no_released(mm, hooks):
    """A release refused as misuse (nothing was released) fires no released tracepoint."""
    holder = mm_hold(mm, "write")
    hooks.clear()
    with pytest.raises(mln.LockError):
        mln.mmap_write_unlock(mm)           # not the owner
    with pytest.raises(mln.LockError):
        mln.mmap_read_unlock(mm)            # not held for read
    assert mm.mmap_lock.owner == holder.task
    assert hooks.of(mm, mln.current_task()) == []
    holder.done()


def test_partial_hook_set(mm):
    """set_hooks with only released installs only that one; the others are not called."""
    got = []
    mln.trace.set_hooks(released=lambda m, w: got.append((m is mm, w)))
    assert mln.trace.hooks()["start_locking"] is None
    assert mln.trace.hooks()["acquire_returned"] is None
    mln.mmap_write_lock(mm)
    mln.mmap_write_unlock(mm)
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
    assert got == [(True, True), (True, False)]


def test_set_hooks_replaces_the_whole_set(mm, hooks):
    """A second set_hooks call removes the hooks it does not name."""
    only = []
    mln.trace.set_hooks(start_locking=lambda m, w: only.append(w))
    hooks.clear()
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
    assert only == [False]
    assert hooks.calls == []


def test_hooks_fire_from_many_threads(mm, hooks):
    """Hooks run on each calling thread: every thread's calls are all seen, attributed to it, in order."""
    n, pairs = 6, 50
    gate = threading.Barrier(n, timeout=TIMEOUT)

    def body(write):
        gate.wait()
        lock_cycles(mm, "write" if write else "read", pairs)

    workers = [Worker(body, i % 2 == 0, name=f"t{i}").begin() for i in range(n)]
    for w in workers:
        w.finish()
    for i, w in enumerate(workers):
        write = i % 2 == 0
        assert hooks.of(mm, w.task) == [(S, write), (A, write, True), (R, write)] * pairs
    assert len(hooks.calls) == 3 * n * pairs
    assert_free(mm.mmap_lock)


def test_hooks_cover_every_mm(hooks):
    """Hooks are global: calls on two mms reach them with each mm object."""
    a, b = mln.MM(name="a"), mln.MM(name="b")
    mln.mmap_read_lock(a)
    mln.mmap_write_lock(b)
    mln.mmap_write_unlock(b)
    mln.mmap_read_unlock(a)
    assert hooks.of(a) == _ok(False) + [(R, False)]
    assert hooks.of(b) == _ok(True) + [(R, True)]


def test_clear_hooks_stops_calls(mm, hooks):
    """After clear_hooks no hook is called and hooks() reports none."""
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
    assert len(hooks.of(mm)) == 3
    mln.trace.clear_hooks()
    assert mln.trace.hooks() == {S: None, A: None, R: None}
    hooks.clear()
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
    mln.mmap_write_lock(mm)
    mln.mmap_write_downgrade(mm)
    mln.mmap_read_unlock(mm)
    assert hooks.calls == []


def test_raising_hook_does_not_break_the_lock_call(mm, capfd):
    """A hook that raises is reported on stderr; the lock calls still acquire and release normally."""
    def boom(*args):
        raise ValueError("hook failure")

    mln.trace.set_hooks(start_locking=boom, acquire_returned=boom, released=boom)
    assert mln.mmap_write_lock(mm) is None
    assert mm.mmap_lock.owner == mln.current_task()
    assert mln.mmap_write_unlock(mm) is None
    assert mln.mmap_read_trylock(mm) is True
    mln.mmap_read_unlock(mm)
    assert_free(mm.mmap_lock)
    err = capfd.readouterr().err
    assert "exception in a trace hook" in err and "hook failure" in err


@pytest.mark.parametrize("bad", [42, "hook", object()])
def test_set_hooks_rejects_non_callables(bad, hooks):
    """set_hooks with a non-callable raises TypeError and keeps the hooks installed before."""
    before = mln.trace.hooks()
    with pytest.raises(TypeError):
        mln.trace.set_hooks(start_locking=bad)
    with pytest.raises(TypeError):
        mln.trace.set_hooks(released=bad)
    assert mln.trace.hooks() == before


# -- hooks that change the hooks (issue 10 B8) -----------------------------------------------

#: A lock call firing all three tracepoints, each once.
def _read_cycle(mm: mln.MM) -> None:
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)


CHANGE_HOOKS = {
    "clear_hooks": lambda: mln.trace.clear_hooks(),
    "set_hooks": lambda: mln.trace.set_hooks(released=lambda mm, write: None),
}

_HOOK_CHANGING_CHILD = """
import mmap_lock_native as mln
mm = mln.MM()
for event in ("start_locking", "acquire_returned", "released"):
    for change in (mln.trace.clear_hooks, lambda: mln.trace.set_hooks(released=print)):
        mln.trace.set_hooks(**{event: lambda *args, change=change: change()})
        mln.mmap_read_lock(mm)
        mln.mmap_read_unlock(mm)
        mln.trace.clear_hooks()
print("finished")
"""


def test_a_hook_changing_the_hooks_is_refused_not_hung():
    """The reproducer, in a child process (before the fix it hung for good:
    the change waited for the hook that made it): every tracepoint's hook,
    both changes; each is refused and reported, and the lock calls finish."""
    import subprocess
    import sys
    try:
        out = subprocess.run([sys.executable, "-c", _HOOK_CHANGING_CHILD], capture_output=True,
                             text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a hook that changes the hooks hung the lock call")
    assert out.returncode == 0 and out.stdout.strip() == "finished", out.stderr
    refused = [line for line in out.stderr.splitlines() if "called from inside the" in line]
    assert len(refused) == 6, out.stderr


@pytest.mark.parametrize("change", sorted(CHANGE_HOOKS))
@pytest.mark.parametrize("event", [S, A, R])
def test_hook_changing_the_hooks_gets_a_runtime_error_naming_both(mm, event, change):
    """The hook sees the error (and may handle it); the hooks stay as they were."""
    seen: List[BaseException] = []

    def hook(*args: Any) -> None:
        try:
            CHANGE_HOOKS[change]()
        except RuntimeError as exc:
            seen.append(exc)

    mln.trace.set_hooks(**{event: hook})
    before = mln.trace.hooks()
    Worker(_read_cycle, mm, name="locker").begin().finish()
    assert len(seen) == 1
    assert f"{change} called from inside the {event} trace hook" in str(seen[0])
    assert mln.trace.hooks() == before
    assert_free(mm.mmap_lock)


def test_a_nested_hook_returning_leaves_the_outer_one_refused():
    """A hook that locks another mm runs hooks inside itself; when those
    return, the outer hook is still running, and after it the thread may
    change the hooks again."""
    outer_mm, inner_mm = mln.MM(name="outer"), mln.MM(name="inner")
    results: List[str] = []

    def start(mm: Any, write: bool) -> None:
        if mm is outer_mm:
            _read_cycle(inner_mm)          # fires start/acquire/released for inner_mm here
            try:
                mln.trace.clear_hooks()
            except RuntimeError as exc:
                results.append(str(exc).split(":")[0])

    def body() -> None:
        _read_cycle(outer_mm)
        mln.trace.clear_hooks()            # outside every hook: allowed
        results.append("cleared")

    mln.trace.set_hooks(start_locking=start, released=lambda mm, write: None)
    Worker(body, name="nesting").begin().finish()
    assert results == ["clear_hooks called from inside the start_locking trace hook", "cleared"]
    assert mln.trace.hooks() == {S: None, A: None, R: None}


# -- the recorder --------------------------------------------------------------------------

def _scripted(mm: mln.MM) -> None:
    """One thread's scripted sequence of mmap calls."""
    mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
    mln.mmap_write_lock(mm)
    mln.mmap_write_downgrade(mm)
    assert mln.mmap_read_trylock(mm)
    mln.mmap_read_unlock(mm)
    mln.mmap_read_unlock(mm)
    assert mln.mmap_write_lock_killable(mm) == 0
    mln.mmap_write_unlock(mm)
    mln.mmap_write_lock_nested(mm, 1)
    mln.mmap_write_unlock(mm)
    assert mln.mmap_read_lock_killable(mm) == 0
    mln.mmap_read_unlock(mm)
    assert mln.mmap_read_trylock_non_owner(mm)
    mln.mmap_read_unlock_non_owner(mm)
    assert mln.mmap_write_trylock(mm)
    mln.mmap_write_unlock(mm)


SCRIPTED_OPS = [
    (S, False, False, 0), (A, False, True, 0), (R, False, False, 0),
    (S, True, False, MMAP_OP_WRITE), (A, True, True, MMAP_OP_WRITE),
    (A, False, True, 0),                                            # downgrade
    (S, False, False, MMAP_OP_TRY), (A, False, True, MMAP_OP_TRY),
    (R, False, False, 0), (R, False, False, 0),
    (S, True, False, MMAP_OP_WRITE | MMAP_OP_KILLABLE),
    (A, True, True, MMAP_OP_WRITE | MMAP_OP_KILLABLE), (R, True, False, MMAP_OP_WRITE),
    (S, True, False, MMAP_OP_WRITE | MMAP_OP_NESTED),
    (A, True, True, MMAP_OP_WRITE | MMAP_OP_NESTED), (R, True, False, MMAP_OP_WRITE),
    (S, False, False, MMAP_OP_KILLABLE), (A, False, True, MMAP_OP_KILLABLE),
    (R, False, False, 0),
    (S, False, False, MMAP_OP_TRY | MMAP_OP_NON_OWNER),
    (A, False, True, MMAP_OP_TRY | MMAP_OP_NON_OWNER), (R, False, False, MMAP_OP_NON_OWNER),
    (S, True, False, MMAP_OP_WRITE | MMAP_OP_TRY), (A, True, True, MMAP_OP_WRITE | MMAP_OP_TRY),
    (R, True, False, MMAP_OP_WRITE),
]


def test_recorder_matches_the_hooks(mm, hooks, tmp_path):
    """A recorded scripted sequence has the hooks' events in the same order, with well-formed fields."""
    with mln.trace.record(mm) as rec:
        _scripted(mm)
    me = mln.current_task()
    assert rec.dropped == 0
    got = [(e.event, e.write) + ((e.success,) if e.event == A else ()) for e in rec.events]
    assert got == hooks.of(mm)
    assert [(e.event, e.write, e.success, e.op) for e in rec.events] == SCRIPTED_OPS
    for e in rec.events:
        assert isinstance(e, mln.trace.TraceEvent)
        assert e.task == me
        assert e.mm == mm.address
        assert rec.start_ns <= e.ts_ns <= rec.stop_ns
    ts = [e.ts_ns for e in rec.events]
    assert ts == sorted(ts)
    assert_free(mm.mmap_lock)
    # Its Chrome trace: B/E paired on our track, the non-owner hold as a b/e pair.
    path = tmp_path / "scripted.json"
    rec.to_chrome_trace(path)
    trace, spans = _check_chrome(path)
    names = sorted(s[0] for s in spans[me])
    assert names.count("hold write") == 4 and names.count("hold read") == 4
    assert names.count("wait write") == 4 and names.count("wait read") == 4
    asyncs = [ev for ev in trace["traceEvents"] if ev["ph"] in "be"]
    assert sorted(ev["ph"] for ev in asyncs) == ["b", "e"]
    assert asyncs[0]["id"] == asyncs[1]["id"]


def test_recorder_without_hooks(mm):
    """The recorder works with no hooks installed and records only its own mm, only while active."""
    other = mln.MM(name="other")
    mln.mmap_read_lock(mm)              # before: not recorded
    mln.mmap_read_unlock(mm)
    with mln.trace.record(mm) as rec:
        mln.mmap_write_lock(mm)
        mln.mmap_write_lock(other)      # another mm: not recorded
        mln.mmap_write_unlock(other)
        mln.mmap_write_unlock(mm)
    mln.mmap_read_lock(mm)              # after: not recorded
    mln.mmap_read_unlock(mm)
    assert [(e.event, e.write, e.success) for e in rec.events] == [
        (S, True, False), (A, True, True), (R, True, False)]
    assert rec.dropped == 0
    assert "3 events" in repr(rec)


def test_recorder_records_failures(mm):
    """Failed trylocks and a killed killable wait are recorded as unsuccessful returns."""
    holder = mm_hold(mm, "write")
    with mln.trace.record(mm) as rec:
        assert mln.mmap_read_trylock(mm) is False
        assert mln.mmap_write_trylock(mm) is False
        victim = Worker(mln.mmap_read_lock_killable, mm, name="victim").begin()
        wait_queued(mm.mmap_lock, 1, 0, workers=(victim,))
        assert kill_waiter(victim) == -errno.EINTR
    me = mln.current_task()
    mine = [(e.event, e.write, e.success, e.op) for e in rec.events if e.task == me]
    assert mine == [(S, False, False, MMAP_OP_TRY), (A, False, False, MMAP_OP_TRY),
                    (S, True, False, MMAP_OP_WRITE | MMAP_OP_TRY),
                    (A, True, False, MMAP_OP_WRITE | MMAP_OP_TRY)]
    theirs = [(e.event, e.write, e.success, e.op) for e in rec.events if e.task == victim.task]
    assert theirs == [(S, False, False, MMAP_OP_KILLABLE), (A, False, False, MMAP_OP_KILLABLE)]
    holder.done()


def test_second_concurrent_record_is_refused(mm):
    """A second record of an mm already being recorded raises RuntimeError; the first is unharmed; later ones work."""
    with mln.trace.record(mm) as rec:
        with pytest.raises(RuntimeError):
            with mln.trace.record(mm):
                pass
        other = Worker(lambda: mln.trace.record(mm).__enter__()).begin()
        with pytest.raises(RuntimeError):
            other.finish()
        mln.mmap_read_lock(mm)
        mln.mmap_read_unlock(mm)
    assert len(rec.events) == 3
    with mln.trace.record(mm) as again:
        mln.mmap_read_lock(mm)
        mln.mmap_read_unlock(mm)
    assert len(again.events) == 3
    # Another mm may be recorded at the same time.
    other_mm = mln.MM()
    with mln.trace.record(mm) as r1, mln.trace.record(other_mm) as r2:
        mln.mmap_write_lock(other_mm)
        mln.mmap_write_unlock(other_mm)
    assert r1.events == [] and len(r2.events) == 3


@pytest.mark.parametrize("capacity, error", [(0, ValueError), (-1, ValueError),
                                             (1 << 64, ValueError), (1.5, TypeError),
                                             ("4", TypeError)])
def test_recorder_rejects_bad_capacity(mm, capacity, error):
    """A capacity that is not a positive int raises an error naming it."""
    with pytest.raises(error, match="capacity"):
        mln.trace.record(mm, capacity=capacity)


def test_recorder_capacity_counts_drops(mm):
    """capacity=4 with 10 events keeps the first 4 and counts exactly 6 dropped."""
    with mln.trace.record(mm, capacity=4) as rec:
        for _ in range(2):
            mln.mmap_read_lock(mm)              # 3 events a pair
            mln.mmap_read_unlock(mm)
        mln.mmap_write_lock(mm)                 # 2
        mln.mmap_write_downgrade(mm)            # 1
        mln.mmap_read_unlock(mm)                # 1: 10 in all
    assert len(rec.events) == 4
    assert rec.dropped == 6
    assert [e.event for e in rec.events] == [S, A, R, S]
    assert "6 dropped" in repr(rec)


def test_two_threads_recording_are_well_formed_per_task(mm):
    """With two threads locking concurrently, each task's recorded events follow its own call sequence."""
    pairs = 200
    gate = threading.Barrier(2, timeout=TIMEOUT)

    def body(write):
        gate.wait()
        lock_cycles(mm, "write" if write else "read", pairs)

    with mln.trace.record(mm) as rec:
        ws = [Worker(body, w, name=f"{'writer' if w else 'reader'}").begin()
              for w in (False, True)]
        for w in ws:
            w.finish()
    assert rec.dropped == 0
    assert len(rec.events) == 2 * 3 * pairs
    for w, write in zip(ws, (False, True)):
        mine = [e for e in rec.events if e.task == w.task]
        assert [(e.event, e.write, e.success) for e in mine] == \
            [(S, write, False), (A, write, True), (R, write, False)] * pairs
        ts = [e.ts_ns for e in mine]
        assert ts == sorted(ts)
    assert {e.task for e in rec.events} == {w.task for w in ws}


# -- Chrome trace export ----------------------------------------------------------------------

def _check_chrome(path) -> Tuple[dict, dict]:
    """Parse the file; every B has its E on the same tid in stack order.
    Returns the parsed trace and {tid: [(name, start_us, end_us)]} of the spans."""
    with open(path, encoding="utf-8") as f:
        trace = json.load(f)
    stacks: dict = defaultdict(list)
    spans: dict = defaultdict(list)
    for ev in trace["traceEvents"]:
        if ev["ph"] == "B":
            stacks[(ev["pid"], ev["tid"])].append((ev["name"], ev["ts"], ev.get("args", {})))
        elif ev["ph"] == "E":
            stack = stacks[(ev["pid"], ev["tid"])]
            assert stack, f"E without B: {ev}"
            name, start, args = stack.pop()
            assert name == ev["name"], (name, ev)
            assert ev["ts"] >= start
            spans[ev["tid"]].append((name, start, ev["ts"], args))
    assert all(not s for s in stacks.values()), f"B without E: {dict(stacks)}"
    return trace, spans


def test_chrome_trace_is_valid_json_with_paired_spans(mm, tmp_path):
    """to_chrome_trace writes JSON whose B/E pair up per tid in stack order, with thread_name metadata per task."""
    gate = threading.Barrier(3, timeout=TIMEOUT)

    def body():
        gate.wait()
        for _ in range(20):
            lock_cycles(mm, "read")
            lock_cycles(mm, "downgrade")

    with mln.trace.record(mm) as rec:
        ws = [Worker(body, name=f"t{i}").begin() for i in range(2)]
        gate.wait()
        for _ in range(20):             # no trylocks: they may fail under contention
            mln.mmap_write_lock_nested(mm, 1)
            mln.mmap_write_unlock(mm)
            assert mln.mmap_read_lock_killable(mm) == 0
            mln.mmap_read_unlock(mm)
        for w in ws:
            w.finish()
    path = tmp_path / "t.json"
    rec.to_chrome_trace(path)
    trace, spans = _check_chrome(path)
    tasks = {e.task for e in rec.events}
    assert tasks == {mln.current_task()} | {w.task for w in ws}
    named = {ev["tid"] for ev in trace["traceEvents"]
             if ev["ph"] == "M" and ev["name"] == "thread_name"}
    assert named == tasks            # task ids fit in 31 bits: they are the tids
    for t in tasks:
        assert t in spans, f"no spans for task {t}"
    assert trace["otherData"]["dropped"] == 0
    assert trace["otherData"]["events"] == len(rec.events)
    assert any(ev["ph"] == "M" and ev["name"] == "process_name" for ev in trace["traceEvents"])


def test_contended_acquisition_gives_a_wait_span(mm, tmp_path):
    """A writer waiting behind a reader shows as a "wait write" span of nonzero duration, then a write hold."""
    with mln.trace.record(mm) as rec:
        reader = mm_hold(mm, "read", name="reader")
        writer = mm_queue(mm, "write", (0, 1), name="writer")
        reader.done()
        writer.wait_acquired()
        writer.done()
    ev = [e for e in rec.events if e.task == writer.task]
    assert [e.event for e in ev] == [S, A, R]
    assert ev[1].success and ev[1].ts_ns > ev[0].ts_ns
    # The reader's release precedes the writer's acquire_returned.
    rel = [e for e in rec.events if e.task == reader.task and e.event == R]
    assert len(rel) == 1 and rel[0].ts_ns <= ev[1].ts_ns
    path = tmp_path / "t.json"
    rec.to_chrome_trace(path)
    _, spans = _check_chrome(path)
    waits = [s for s in spans[writer.task] if s[0] == "wait write"]
    holds = [s for s in spans[writer.task] if s[0] == "hold write"]
    assert len(waits) == 1 and len(holds) == 1
    _, start, end, args = waits[0]
    assert end > start
    assert args.get("success") is True
    assert holds[0][1] >= end
    assert_free(mm.mmap_lock)
