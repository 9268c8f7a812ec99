"""Debug mode and the lock-order checker (csrc/mmap_lock/lockdep.c) through the mmap API:
recursion, inversion and bad-unlock reports with their call sites, the
raise / warn / off modes, debug-mode assertions, trylocks and non-owner
locks, and how debug mode is switched on (MMAP_LOCK_DEBUG, set_debug)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import warnings
from typing import Any, List

import pytest

import mmap_lock_native as mln
from mmap_lock_native._ffi import lib
from conftest import MM_MODES, TIMEOUT, Worker, assert_free, kill_waiter, mm_hold, wait_queued

FILE = os.path.basename(__file__)


def here() -> int:
    """The caller's line number (put the lock call on the same line)."""
    return sys._getframe(1).f_lineno


def site(line: int) -> str:
    return f"{FILE}:{line}"


def depth() -> int:
    """How many locks the checker thinks the calling task holds."""
    return lib.mln_lockdep_depth()


@pytest.fixture(autouse=True)
def _lockdep_clean(lockdep_clean):
    """Each test starts and ends with a clean checker (conftest's lockdep_clean)."""
    yield


@pytest.fixture
def mm():
    return mln.MM(debug=True, name="dbg")


def two_classes() -> "tuple[mln.MM, mln.MM]":
    """Two tracked mms of different lock classes: A (mm->mmap_lock) and B ("other")."""
    return mln.MM(debug=True, name="A"), mln.MM(debug=True, lock_class="other", name="B")


def lock_in_order(x: mln.MM, y: mln.MM, mode: str) -> None:
    """Take ``x`` then ``y`` in ``mode``, release ``y`` then ``x``: records x -> y."""
    acquire, release = MM_MODES[mode]
    acquire(x)
    acquire(y)
    release(y)
    release(x)


def no_lockorder_warnings(caught: List[warnings.WarningMessage]) -> None:
    bad = [w for w in caught if issubclass(w.category, mln.LockOrderWarning)]
    assert not bad, [str(w.message) for w in bad]


# -- configuration ----------------------------------------------------------------------------

def test_modes_and_debug_switch():
    """set_lockdep_mode / lockdep_mode round-trip, a bad mode is a ValueError; set_debug / get_debug round-trip."""
    assert mln.lockdep_mode() == "raise"
    for mode in ("warn", "off", "raise"):
        mln.set_lockdep_mode(mode)
        assert mln.lockdep_mode() == mode
    with pytest.raises(ValueError):
        mln.set_lockdep_mode("loud")
    assert mln.lockdep_mode() == "raise"
    assert mln.get_debug() is False
    mln.set_debug(True)
    assert mln.get_debug() is True
    mln.set_debug(False)
    assert mln.get_debug() is False


# -- recursion -----------------------------------------------------------------------------------

def test_read_recursion_is_refused_with_both_sites(mm):
    """mmap_read_lock twice in one thread raises LockOrderError(kind='recursion') naming both call sites; the second call did not touch the lock."""
    first = here(); mln.mmap_read_lock(mm)  # noqa: E702
    with mln.trace.record(mm) as rec:
        with pytest.raises(mln.LockOrderError) as ei:
            second = here(); mln.mmap_read_lock(mm)  # noqa: E702
    err = ei.value
    msg = str(err)
    assert err.kind == "recursion"
    assert isinstance(err, mln.LockError) and err.errno == errno.EDEADLK
    assert err.operation == "mmap_read_lock"
    assert "MM 'dbg'" in msg
    assert site(first) in msg, msg
    assert site(second) in msg, msg
    assert "mm->mmap_lock" in msg
    # Refused before it touched the lock: one reader, one held entry, no tracepoint.
    assert mm.mmap_lock.readers == 1
    assert mm.mmap_lock.queue() == (0, 0)
    assert depth() == 1
    assert rec.events == []
    mln.mmap_read_unlock(mm)
    assert depth() == 0
    assert_free(mm.mmap_lock)


def test_write_recursion_is_refused(mm):
    """mmap_write_lock while write-holding the same mm is refused as recursion; the hold stays."""
    mln.mmap_write_lock(mm)
    with pytest.raises(mln.LockOrderError) as ei:
        mln.mmap_write_lock(mm)
    assert ei.value.kind == "recursion"
    with pytest.raises(mln.LockOrderError) as ei:
        mln.mmap_read_lock(mm)
    assert ei.value.kind == "recursion"
    assert mm.mmap_lock.owner == mln.current_task()
    mln.mmap_write_unlock(mm)
    assert depth() == 0
    assert_free(mm.mmap_lock)


def test_recursion_through_context_managers(mm):
    """Nesting mmap_read_locked(mm) inside itself is refused too, and the outer block still releases."""
    with pytest.raises(mln.LockOrderError):
        with mln.mmap_read_locked(mm):
            with mln.mmap_read_locked(mm):
                pass
    assert depth() == 0
    assert_free(mm.mmap_lock)


def test_nested_fork_like_locking_is_clean(mm):
    """mmap_write_lock(parent) then mmap_write_lock_nested(child, SINGLE_DEPTH_NESTING) reports nothing, repeatedly, in either release order."""
    child = mln.MM(debug=True, name="child")
    mln.set_lockdep_mode("warn")            # a report would be a warning here, not an error
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(5):
            mln.mmap_write_lock(mm)
            mln.mmap_write_lock_nested(child, mln.SINGLE_DEPTH_NESTING)
            assert depth() == 2
            if i % 2:
                mln.mmap_write_unlock(child)
                mln.mmap_write_unlock(mm)
            else:
                mln.mmap_write_unlock(mm)
                mln.mmap_write_unlock(child)
            assert depth() == 0
    no_lockorder_warnings(caught)
    mln.set_lockdep_mode("raise")
    mln.mmap_write_lock(mm)
    mln.mmap_write_lock_nested(child, mln.SINGLE_DEPTH_NESTING)
    mln.mmap_write_unlock(child)
    mln.mmap_write_unlock(mm)
    assert_free(mm.mmap_lock)
    assert_free(child.mmap_lock)


def test_second_mm_of_the_class_without_nesting_is_recursion(mm):
    """Write-locking a second mm of the same class without the nesting annotation is reported as recursion, with a hint."""
    child = mln.MM(debug=True, name="child")
    first = here(); mln.mmap_write_lock(mm)  # noqa: E702
    with pytest.raises(mln.LockOrderError) as ei:
        second = here(); mln.mmap_write_lock(child)  # noqa: E702
    msg = str(ei.value)
    assert ei.value.kind == "recursion"
    assert "MM 'child'" in msg
    assert site(first) in msg and site(second) in msg
    assert "mmap_write_lock_nested" in msg         # the hint
    assert not child.mmap_lock.is_locked()
    mln.mmap_write_unlock(mm)
    assert depth() == 0


# -- inversion -------------------------------------------------------------------------------

def test_inversion_across_threads_names_all_sites():
    """Class A then B in one thread (released), later B then A in another thread: LockOrderError(kind='inversion') naming both orders' sites."""
    a, b = two_classes()
    lines = {}

    def first_order():
        lines["a1"] = here(); mln.mmap_write_lock(a)  # noqa: E702
        lines["b1"] = here(); mln.mmap_read_lock(b)  # noqa: E702
        mln.mmap_read_unlock(b)
        mln.mmap_write_unlock(a)

    Worker(first_order, name="A-then-B").begin().finish()

    def second_order():
        lines["b2"] = here(); mln.mmap_write_lock(b)  # noqa: E702
        try:
            lines["a2"] = here(); mln.mmap_read_lock(a)  # noqa: E702
        except mln.LockOrderError as exc:
            held = (a.mmap_lock.is_locked(), b.mmap_lock.owner == mln.current_task(), depth())
            return exc, held
        finally:
            mln.mmap_write_unlock(b)
        mln.mmap_read_unlock(a)
        return None, None

    err, held = Worker(second_order, name="B-then-A").begin().finish()
    assert isinstance(err, mln.LockOrderError), "the inversion was not reported"
    assert err.kind == "inversion"
    assert err.operation == "mmap_read_lock"
    msg = str(err)
    assert "MM 'A'" in msg
    assert "mm->mmap_lock" in msg and "other" in msg
    for key in ("a1", "b1", "b2", "a2"):
        assert site(lines[key]) in msg, (key, msg)
    # The refused call did not touch A; the thread still held B (until its finally).
    assert held == (False, True, 1)
    assert_free(a.mmap_lock)
    assert_free(b.mmap_lock)


def test_inversion_in_one_thread_is_reported():
    """A then B, released, then B then A in the same thread is an inversion too."""
    a, b = two_classes()
    lock_in_order(a, b, "read")
    mln.mmap_read_lock(b)
    with pytest.raises(mln.LockOrderError) as ei:
        mln.mmap_read_lock(a)
    assert ei.value.kind == "inversion"
    assert not a.mmap_lock.is_locked()
    mln.mmap_read_unlock(b)
    assert depth() == 0


def test_same_order_everywhere_reports_nothing():
    """A then B in two threads, repeatedly, reports nothing."""
    a, b = two_classes()

    def same_order():
        for _ in range(3):
            lock_in_order(a, b, "write")
            mln.mmap_read_lock(a)
            mln.mmap_read_lock(b)
            mln.mmap_read_unlock(a)             # out-of-order release is fine
            mln.mmap_read_unlock(b)

    for i in range(2):
        Worker(same_order, name=f"same-order-{i}").begin().finish()
    same_order()
    assert depth() == 0
    assert_free(a.mmap_lock)
    assert_free(b.mmap_lock)


def test_inversion_through_a_chain_of_classes():
    """A->B and B->C seen earlier make C then A an inversion (a transitive cycle)."""
    a, b = two_classes()
    c = mln.MM(debug=True, lock_class="third", name="C")
    for x, y in ((a, b), (b, c)):
        lock_in_order(x, y, "read")
    mln.mmap_read_lock(c)
    with pytest.raises(mln.LockOrderError) as ei:
        mln.mmap_read_lock(a)
    assert ei.value.kind == "inversion"
    msg = str(ei.value)
    assert "other" in msg and "third" in msg
    mln.mmap_read_unlock(c)
    assert depth() == 0


# -- bad unlock -----------------------------------------------------------------------------

def test_bad_unlock_by_a_thread_not_holding_it(mm):
    """mmap_read_unlock by a thread that does not hold it, while another thread does, is refused as bad_unlock; the holder's lock is intact."""
    holder = mm_hold(mm, "read")
    with pytest.raises(mln.LockOrderError) as ei:
        line = here(); mln.mmap_read_unlock(mm)  # noqa: E702
    err = ei.value
    assert err.kind == "bad_unlock"
    assert err.operation == "mmap_read_unlock"
    assert "MM 'dbg'" in str(err) and site(line) in str(err)
    assert mm.mmap_lock.readers == 1
    with pytest.raises(mln.LockOrderError) as ei:
        mln.mmap_write_unlock(mm)
    assert ei.value.kind == "bad_unlock"
    assert mm.mmap_lock.readers == 1
    holder.done()                       # the holder's own release is fine
    assert_free(mm.mmap_lock)


def test_bad_unlock_of_a_free_lock(mm):
    """mmap_read_unlock of a lock nobody holds is refused as bad_unlock before it touches the lock."""
    with pytest.raises(mln.LockOrderError) as ei:
        mln.mmap_read_unlock(mm)
    assert ei.value.kind == "bad_unlock"
    assert_free(mm.mmap_lock)


# -- warn and off modes ------------------------------------------------------------------------

def test_warn_mode_warns_and_proceeds(mm):
    """In warn mode the recursion issues a LockOrderWarning and the second read lock proceeds."""
    mln.set_lockdep_mode("warn")
    first = here(); mln.mmap_read_lock(mm)  # noqa: E702
    with pytest.warns(mln.LockOrderWarning) as rec:
        second = here(); mln.mmap_read_lock(mm)  # noqa: E702
    assert issubclass(mln.LockOrderWarning, RuntimeWarning)
    text = "\n".join(str(w.message) for w in rec)
    assert "recursive" in text
    assert site(first) in text and site(second) in text
    assert mm.mmap_lock.readers == 2
    assert depth() == 2
    mln.mmap_read_unlock(mm)
    mln.mmap_read_unlock(mm)
    assert depth() == 0
    assert_free(mm.mmap_lock)


def test_warn_mode_inversion_warns_and_proceeds():
    """In warn mode an inversion warns and both locks are taken."""
    mln.set_lockdep_mode("warn")
    a, b = two_classes()
    lock_in_order(a, b, "write")
    mln.mmap_write_lock(b)
    with pytest.warns(mln.LockOrderWarning, match="circular"):
        mln.mmap_write_lock(a)
    assert a.mmap_lock.owner == mln.current_task()
    mln.mmap_write_unlock(a)
    mln.mmap_write_unlock(b)
    assert_free(a.mmap_lock)
    assert_free(b.mmap_lock)


def test_off_mode_reports_nothing(mm):
    """In off mode neither recursion nor inversion is reported; the calls proceed."""
    mln.set_lockdep_mode("off")
    a, b = two_classes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mln.mmap_read_lock(mm)
        mln.mmap_read_lock(mm)
        assert mm.mmap_lock.readers == 2
        mln.mmap_read_unlock(mm)
        mln.mmap_read_unlock(mm)
        for x, y in ((a, b), (b, a)):
            lock_in_order(x, y, "write")
    no_lockorder_warnings(caught)
    assert depth() == 0
    assert_free(mm.mmap_lock)
    # Back to raise mode: off mode recorded no dependency, so B then A is fine now.
    mln.set_lockdep_mode("raise")
    lock_in_order(b, a, "write")


# -- debug-mode assertions -------------------------------------------------------------------

def test_assert_locked_checks_the_current_task(mm):
    """In debug mode mmap_assert_locked fails in a thread that does not hold the lock while another does, naming 'current task'."""
    holder = mm_hold(mm, "read", while_held=lambda: _assert_outcomes(mm))
    with pytest.raises(AssertionError) as ei:
        mln.mmap_assert_locked(mm)
    msg = str(ei.value)
    assert "current task" in msg and "MM 'dbg'" in msg and "read-locked" in msg
    with pytest.raises(AssertionError):
        mln.mmap_assert_write_locked(mm)
    # In the holder: assert_locked passes, assert_write_locked fails (read hold only).
    locked, write_locked = holder.held_result
    assert locked is None
    assert "held by the current task for read, not for write" in write_locked
    holder.done()
    with pytest.raises(AssertionError) as ei:
        mln.mmap_assert_locked(mm)
    assert "not locked" in str(ei.value)


def _assert_outcomes(mm: mln.MM) -> "tuple[Any, Any]":
    out = []
    for fn in (mln.mmap_assert_locked, mln.mmap_assert_write_locked):
        try:
            out.append(fn(mm))
        except AssertionError as exc:
            out.append(str(exc))
    return out[0], out[1]


def test_assertions_pass_for_the_write_holder(mm):
    """Both assertions pass for the write holder and fail elsewhere; after a downgrade only assert_locked passes."""
    holder = mm_hold(mm, "write", while_held=lambda: _assert_outcomes(mm))
    assert holder.held_result == (None, None)
    for fn in (mln.mmap_assert_locked, mln.mmap_assert_write_locked):
        with pytest.raises(AssertionError) as ei:
            fn(mm)
        assert "current task" in str(ei.value)
    holder.done()
    mln.mmap_write_lock(mm)
    mln.mmap_assert_write_locked(mm)
    mln.mmap_write_downgrade(mm)
    mln.mmap_assert_locked(mm)
    with pytest.raises(AssertionError) as ei:
        mln.mmap_assert_write_locked(mm)
    assert "for read, not for write" in str(ei.value)
    mln.mmap_read_unlock(mm)


# -- trylocks and non-owner locks ---------------------------------------------------------------

def test_trylocks_are_never_reported(mm):
    """A read trylock of a lock the task already holds, and trylocks in the inverse order, are not reported."""
    mln.mmap_read_lock(mm)
    assert mln.mmap_read_trylock(mm) is True        # recursion, but a trylock cannot deadlock
    assert depth() == 2
    mln.mmap_read_unlock(mm)
    mln.mmap_read_unlock(mm)
    a, b = two_classes()
    lock_in_order(a, b, "write")
    mln.mmap_write_lock(b)
    assert mln.mmap_write_trylock(a) is True        # inverse order, but a trylock
    assert mln.mmap_read_trylock(b) is False        # write-held by us: fails, no report
    mln.mmap_write_unlock(a)
    mln.mmap_write_unlock(b)
    assert depth() == 0


def test_trylocks_add_no_dependency():
    """A trylock taken while holding A records no A->B edge: B then A later is not an inversion."""
    a, b = two_classes()
    mln.mmap_read_lock(a)
    assert mln.mmap_read_trylock(b)
    mln.mmap_read_unlock(b)
    mln.mmap_read_unlock(a)
    lock_in_order(b, a, "read")                     # no report


def test_blocking_lock_over_a_held_trylock_is_recursion(mm):
    """A blocking read lock of a lock the task holds through a trylock is still recursion (it would wait for itself behind a writer)."""
    assert mln.mmap_read_trylock(mm)
    with pytest.raises(mln.LockOrderError) as ei:
        mln.mmap_read_lock(mm)
    assert ei.value.kind == "recursion"
    mln.mmap_read_unlock(mm)
    assert depth() == 0


def test_non_owner_trylock_is_not_attributed(mm):
    """A non-owner read trylock is not on the task's held stack, and its release by another thread is no bad unlock."""
    assert mln.mmap_read_trylock_non_owner(mm) is True
    assert depth() == 0
    mln.mmap_read_lock(mm)                          # not seen as recursion
    assert depth() == 1
    mln.mmap_read_unlock(mm)
    assert mm.mmap_lock.readers == 1
    released = Worker(mln.mmap_read_unlock_non_owner, mm, name="releaser").begin()
    assert released.finish() is None
    assert_free(mm.mmap_lock)


def test_killed_wait_leaves_nothing_on_the_held_stack(mm):
    """A killable wait ended by task_kill pops its checker entry: the task holds nothing afterwards."""
    holder = mm_hold(mm, "write")

    def victim():
        rc = mln.mmap_read_lock_killable(mm)
        return rc, depth()

    v = Worker(victim, name="victim").begin()
    wait_queued(mm.mmap_lock, 1, 0, workers=(v,))
    rc, d = kill_waiter(v)
    assert rc == -errno.EINTR and d == 0
    holder.done()
    assert_free(mm.mmap_lock)


# -- a stale report must not leak into later errors ---------------------------------------------

def test_refused_call_report_does_not_leak_into_a_later_plain_error(mm):
    """After a refused call, a later self-deadlock on an untracked mm raises a plain LockError about that mm, not the old report."""
    mln.mmap_read_lock(mm)
    with pytest.raises(mln.LockOrderError):
        mln.mmap_read_lock(mm)
    mln.mmap_read_unlock(mm)
    plain = mln.MM(debug=False, name="plain")
    mln.mmap_write_lock(plain)
    try:
        with pytest.raises(mln.LockError) as ei:
            mln.mmap_write_lock(plain)          # EDEADLK from the rwsem, no checker involved
        err = ei.value
        assert not isinstance(err, mln.LockOrderError), str(err)
        assert "MM 'plain'" in str(err)
        assert "already holds it for write" in str(err), str(err)
        assert "recursive locking" not in str(err)
    finally:
        mln.mmap_write_unlock(plain)


def test_off_mode_self_deadlock_is_a_plain_lock_error(mm):
    """In off mode a tracked mm's recursive write lock fails as the rwsem's plain LockError (EDEADLK), and the checker's stack stays right."""
    mln.set_lockdep_mode("off")
    mln.mmap_write_lock(mm)
    with pytest.raises(mln.LockError) as ei:
        mln.mmap_write_lock(mm)
    assert not isinstance(ei.value, mln.LockOrderError), str(ei.value)
    assert ei.value.errno == errno.EDEADLK
    assert "already holds it for write" in str(ei.value)
    assert depth() == 1                         # the failed call's entry was popped
    mln.mmap_write_unlock(mm)
    assert depth() == 0
    assert_free(mm.mmap_lock)


# -- switching debug mode on ----------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import mmap_lock_native as mln
    print("debug", mln.get_debug())
    mm = mln.MM()
    mln.mmap_read_lock(mm)
    try:
        mln.mmap_read_lock(mm)
    except mln.LockOrderError as exc:
        print("reported", exc.kind)
    else:
        print("not reported")
        mln.mmap_read_unlock(mm)
    mln.mmap_read_unlock(mm)
""")


@pytest.mark.parametrize("value,expect", [("1", ["debug True", "reported recursion"]),
                                          ("0", ["debug False", "not reported"]),
                                          (None, ["debug False", "not reported"])])
def test_mmap_lock_debug_environment_variable(value, expect):
    """MMAP_LOCK_DEBUG=1 in a fresh interpreter's environment makes MM() tracked (recursion reported); 0 or unset does not."""
    env = dict(os.environ)
    env.pop("MMAP_LOCK_DEBUG", None)
    if value is not None:
        env["MMAP_LOCK_DEBUG"] = value
    try:
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                             text=True, timeout=3 * TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child did not finish within {3 * TIMEOUT} s")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == expect, (out.stdout, out.stderr)


def test_set_debug_applies_to_mms_created_afterwards():
    """set_debug(True) makes MMs created afterwards tracked; earlier ones and MM(debug=False) stay untracked."""
    before = mln.MM(name="before")
    try:
        mln.set_debug(True)
        tracked = mln.MM(name="tracked")
        opted_out = mln.MM(debug=False, name="opted-out")
    finally:
        mln.set_debug(False)
    after = mln.MM(name="after")
    mln.mmap_read_lock(tracked)
    with pytest.raises(mln.LockOrderError) as ei:
        mln.mmap_read_lock(tracked)
    assert ei.value.kind == "recursion" and "MM 'tracked'" in str(ei.value)
    mln.mmap_read_unlock(tracked)
    for untracked in (before, opted_out, after):
        mln.mmap_read_lock(untracked)
        mln.mmap_read_lock(untracked)           # not checked
        assert untracked.mmap_lock.readers == 2
        mln.mmap_read_unlock(untracked)
        mln.mmap_read_unlock(untracked)
    assert depth() == 0
