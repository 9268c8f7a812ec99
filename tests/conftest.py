"""Shared helpers for the RWSemaphore test suite.

Every wait in this suite is bounded: a bug makes a test fail, never hang.
Threads are started through :class:`Worker` (or a :class:`Holder`: a
:class:`LockHolder` on a semaphore, an :class:`MMHolder` through the mmap
API), which records the result or exception of the thread's function and
offers a bounded join (:meth:`Worker.finish`).  States that cannot be
signalled with an event (a thread asleep in the lock's wait queue) are
awaited by polling ``sem.queue()`` with a deadline (:func:`wait_queued`).

Test modules import these helpers with ``from conftest import ...``.
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from typing import Any, Callable, List, Optional

import pytest

import mmap_lock_native as mln

#: Generous bound for anything that should happen "soon" (a noisy 2-core box).
TIMEOUT = 10.0


#: Every lock design (MM(lock=...)), and those whose mmap lock is our rwsem
#: (its queue can be watched: sem.queue()); the glibc ones expose nothing.
DESIGNS = list(mln.LOCK_BACKENDS)
RWSEM_DESIGNS = ["rwsem", "per_vma", "bravo"]


@pytest.fixture(params=DESIGNS)
def every_design(request, monkeypatch):
    """Run the test once per lock design: every MM() it makes without a
    ``lock`` argument gets that design.  A module opts in with
    ``pytestmark = pytest.mark.usefixtures("every_design")``."""
    import mmap_lock_native.mm as mm_module
    monkeypatch.setattr(mm_module, "DEFAULT_LOCK", request.param)
    return request.param


def wait_blocked(mm: mln.MM, worker: "Worker", readers: int, writers: int,
                 timeout: float = TIMEOUT) -> None:
    """Wait until ``worker`` is blocked on ``mm``'s lock: queued as
    (``readers``, ``writers``) on the rwsem where the design has one, else
    (glibc designs, which show no queue) still running after a short look."""
    if mm.lock_backend in RWSEM_DESIGNS:
        wait_queued(mm.mmap_lock, readers, writers, timeout, workers=(worker,))
    else:
        assert not worker.finished.wait(0.1), f"{worker.name} was not blocked: {worker.outcome()}"


@pytest.fixture
def lockdep_clean():
    """A clean lock-order checker in raise mode, debug mode off, before and after."""
    mln.lockdep_reset()
    mln.set_lockdep_mode("raise")
    mln.set_debug(False)
    try:
        yield
    finally:
        mln.set_debug(False)
        mln.lockdep_reset()
        mln.set_lockdep_mode("raise")


def wait_until(pred: Callable[[], bool], what: str, timeout: float = TIMEOUT,
               describe: Optional[Callable[[], str]] = None) -> None:
    """Poll ``pred`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            extra = f" ({describe()})" if describe else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(0.0005)


def wait_queued(sem: mln.RWSemaphore, readers: int, writers: int,
                timeout: float = TIMEOUT, workers: "tuple[Worker, ...]" = ()) -> None:
    """Wait until exactly ``readers`` readers and ``writers`` writers are queued.

    If one of ``workers`` ends (it should be blocked), fail at once with its
    outcome rather than waiting out the bound.
    """
    deadline = time.monotonic() + timeout
    while sem.queue() != (readers, writers):
        for w in workers:
            if w.finished.is_set():
                pytest.fail(f"{w.name} finished ({w.outcome()}) instead of queueing; "
                            f"state: {sem.state()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for queue == "
                        f"({readers}, {writers}); state: {sem.state()}")
        time.sleep(0.0005)


def join_processes(procs: List[Any], timeout: float) -> List[Any]:
    """Bounded join of multiprocessing processes; one still running after
    ``timeout`` is killed and the test fails.  Returns their exit codes."""
    deadline = time.monotonic() + timeout
    late = []
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            late.append(p.name)
            p.kill()
            p.join(5)
    if late:
        pytest.fail(f"child processes still running after {timeout} s: {late}")
    return [p.exitcode for p in procs]


def wait_child(pid: int, timeout: float = TIMEOUT) -> int:
    """Bounded waitpid of a forked child: its wait status; the test fails if
    it is still running after ``timeout`` (reap_child then kills it)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"child {pid} did not exit within {timeout} s")
        time.sleep(0.005)


def reap_child(pid: int) -> None:
    """Kill and reap a forked child if it is still there (a test's cleanup)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def wait_handoff_pending(sem: mln.RWSemaphore, timeout: float = TIMEOUT) -> None:
    """Wait until a starved waiter has reserved the lock (after ~4 ms of waiting)."""
    wait_until(lambda: "handoff pending" in sem.state(), "a handoff reservation",
               timeout, describe=sem.state)


def assert_free(sem: mln.RWSemaphore) -> None:
    """The lock is neither held nor waited on, and works."""
    assert sem.queue() == (0, 0), sem.state()
    assert not sem.is_locked(), sem.state()
    assert not sem.is_write_locked(), sem.state()
    assert not sem.is_contended(), sem.state()
    assert sem.readers == 0
    assert sem.owner is None
    assert sem.state() == "unlocked"
    assert_usable(sem)


def assert_usable(sem: mln.RWSemaphore) -> None:
    """A free lock goes through a normal write and read cycle and ends free."""
    assert sem.down_write_trylock(), sem.state()
    assert sem.owner == mln.current_task()
    sem.up_write()
    sem.down_write()
    sem.up_write()
    sem.down_read()
    sem.down_read()
    assert sem.readers == 2
    sem.up_read()
    sem.up_read()
    assert not sem.is_locked(), sem.state()


# -- threads ---------------------------------------------------------------

_LIVE: "List[Worker]" = []


class Worker(threading.Thread):
    """A daemon thread running ``fn(*args)``, recording its result or exception.

    ``task`` is the thread's :func:`mln.current_task` (set before ``fn`` runs);
    ``started`` is set just before ``fn`` is called, ``finished`` after.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, name: Optional[str] = None) -> None:
        super().__init__(daemon=True, name=name or getattr(fn, "__name__", "worker"))
        self._fn = fn
        self._fn_args = args
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.task: Optional[int] = None
        self.ready = threading.Event()
        self.finished = threading.Event()
        self.on_cleanup: List[Callable[[], None]] = []
        _LIVE.append(self)

    def run(self) -> None:
        try:
            self.task = mln.current_task()
            self.ready.set()
            self.result = self._fn(*self._fn_args)
        except BaseException as exc:  # recorded, re-raised by finish()
            self.error = exc
        finally:
            self.finished.set()

    def begin(self) -> "Worker":
        self.start()
        if not self.ready.wait(TIMEOUT):
            pytest.fail(f"{self.name} did not start within {TIMEOUT} s")
        return self

    def outcome(self) -> str:
        if not self.finished.is_set():
            return "still running"
        return f"raised {self.error!r}" if self.error else f"returned {self.result!r}"

    def finish(self, timeout: float = TIMEOUT) -> Any:
        """Bounded join: fail if the thread is still running after ``timeout``;
        re-raise its exception; return its result."""
        self.join(timeout)
        if self.is_alive():
            pytest.fail(f"thread {self.name} did not finish within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


class Holder(Worker):
    """A thread that calls ``acquire()``, keeps what it got until :meth:`unlock`
    (or :meth:`done`), then calls ``release()``.

    ``sem`` is the RWSemaphore behind the lock (its state goes into failure
    messages).  With ``hold=False`` it releases at once after acquiring.
    ``log`` (a list) gets ``name`` appended the moment the lock is acquired,
    which records the order of acquisition.  ``seen`` records ``(readers,
    write_locked, owner)`` observed while held; ``while_held()``, if given, is
    called then too and its result kept in ``held_result``.  ``task`` binds the
    thread to that task first.  ``rc`` is what ``acquire()`` returned: an
    acquisition that returns neither None nor 0 (a killed killable wait) holds
    nothing, and the thread ends returning it.
    """

    def __init__(self, sem: mln.RWSemaphore, acquire: Callable[[], Any],
                 release: Callable[[], Any], *, hold: bool = True,
                 log: Optional[list] = None, name: str = "holder",
                 task: Optional[int] = None,
                 while_held: Optional[Callable[[], Any]] = None) -> None:
        self.sem = sem
        self.hold = hold
        self.log = log
        self.bound_task = task
        self._acquire = acquire
        self._release = release
        self._while_held = while_held
        self.rc: Any = "not returned"
        self.acquired = threading.Event()
        self.release = threading.Event()
        self.seen: Optional[tuple] = None
        self.held_result: Any = None
        super().__init__(self._body, name=name)
        self.on_cleanup.append(self.release.set)

    def _body(self) -> Any:
        sem = self.sem
        if self.bound_task is not None:
            mln.set_current_task(self.bound_task)
        self.rc = self._acquire()
        if self.rc not in (None, 0):
            return self.rc
        try:
            self.seen = (sem.readers, sem.is_write_locked(), sem.owner)
            if self._while_held is not None:
                self.held_result = self._while_held()
            if self.log is not None:
                self.log.append(self.name)
            self.acquired.set()
            if self.hold and not self.release.wait(3 * TIMEOUT):
                raise AssertionError(f"{self.name}: never told to release")
        finally:
            self._release()
        return self.rc

    def wait_acquired(self, timeout: float = TIMEOUT) -> "Holder":
        if not self.acquired.wait(timeout):
            pytest.fail(f"{self.name} did not acquire within {timeout} s "
                        f"({self.outcome()}); state: {self.sem.state()}")
        return self

    def start_holding(self) -> "Holder":
        """Start the thread and wait until it holds the lock."""
        return self.begin().wait_acquired()

    def start_queued(self, expect: "tuple[int, int]") -> "Holder":
        """Start the thread, which must block, and wait until the queue reads ``expect``."""
        self.begin()
        wait_queued(self.sem, *expect, workers=(self,))
        return self

    def unlock(self) -> None:
        self.release.set()

    def done(self) -> Any:
        """Release and join (bounded); return what the thread returned."""
        self.unlock()
        return self.finish()


class LockHolder(Holder):
    """A :class:`Holder` that takes ``sem`` in ``mode``: "read", "write" or
    "read_non_owner"."""

    def __init__(self, sem: mln.RWSemaphore, mode: str, *, name: Optional[str] = None,
                 **kw: Any) -> None:
        self.mode = mode
        acquire, release = {
            "read": (sem.down_read, sem.up_read),
            "write": (sem.down_write, sem.up_write),
            "read_non_owner": (sem.down_read_non_owner, sem.up_read_non_owner),
        }[mode]
        super().__init__(sem, acquire, release, name=name or f"{mode}-holder", **kw)


#: mode -> (acquire, release) of an MM's lock through the mmap API.
MM_MODES = {
    "read": (mln.mmap_read_lock, mln.mmap_read_unlock),
    "write": (mln.mmap_write_lock, mln.mmap_write_unlock),
    "read_killable": (mln.mmap_read_lock_killable, mln.mmap_read_unlock),
    "write_killable": (mln.mmap_write_lock_killable, mln.mmap_write_unlock),
    "write_nested": (lambda mm: mln.mmap_write_lock_nested(mm, mln.SINGLE_DEPTH_NESTING),
                     mln.mmap_write_unlock),
}


class MMHolder(Holder):
    """A :class:`Holder` that takes ``mm``'s lock through the mmap API in
    ``mode`` (a key of :data:`MM_MODES`), so the mm's statistics, tracepoints
    and lock-order checker see it."""

    def __init__(self, mm: mln.MM, mode: str, *, name: Optional[str] = None,
                 **kw: Any) -> None:
        self.mm = mm
        self.mode = mode
        acquire, release = MM_MODES[mode]
        super().__init__(mm.mmap_lock, lambda: acquire(mm), lambda: release(mm),
                         name=name or f"mm-{mode}-holder", **kw)


def hold(sem: mln.RWSemaphore, mode: str, **kw: Any) -> LockHolder:
    """Start a LockHolder and wait until it holds the lock."""
    return LockHolder(sem, mode, **kw).start_holding()


def queue_up(sem: mln.RWSemaphore, mode: str, expect: "tuple[int, int]", **kw: Any) -> LockHolder:
    """Start a LockHolder that must block, and wait until the queue reads ``expect``."""
    return LockHolder(sem, mode, **kw).start_queued(expect)


def mm_hold(mm: mln.MM, mode: str, **kw: Any) -> MMHolder:
    """Start an MMHolder and wait until it holds the lock."""
    return MMHolder(mm, mode, **kw).start_holding()


def mm_queue(mm: mln.MM, mode: str, expect: "tuple[int, int]", **kw: Any) -> MMHolder:
    """Start an MMHolder that must block; wait until the queue reads ``expect``."""
    return MMHolder(mm, mode, **kw).start_queued(expect)


def lock_cycles(mm: mln.MM, mode: str, n: int = 1) -> None:
    """Take and release ``mm``'s lock ``n`` times through the mmap API: "read"
    and "write" are lock/unlock pairs, "downgrade" is mmap_write_lock,
    mmap_write_downgrade, mmap_read_unlock."""
    assert mode in ("read", "write", "downgrade"), mode
    for _ in range(n):
        if mode == "downgrade":
            mln.mmap_write_lock(mm)
            mln.mmap_write_downgrade(mm)
            mln.mmap_read_unlock(mm)
        else:
            acquire, release = MM_MODES[mode]
            acquire(mm)
            release(mm)


def kill_waiter(victim: Worker) -> Any:
    """Kill ``victim``'s task (it waits in a killable acquisition) and return
    what its function returned (bounded join); its task is revived whatever
    happens."""
    try:
        mln.task_kill(victim.task)
        return victim.finish()
    finally:
        if mln.task_is_killed(victim.task):
            mln.task_revive(victim.task)


def call_while_signalled(signum: int, handler: Callable[..., Any], signaller: Callable[[], Any],
                         call: Callable[[], Any],
                         returned: threading.Event) -> Optional[BaseException]:
    """Run ``call()`` on this (the main) thread while ``signaller`` runs in a
    Worker, with ``handler`` installed for ``signum`` (the old handler is put
    back after).  ``returned`` is set once ``call()`` has returned or raised;
    then the signaller is joined (bounded; its failure is re-raised).
    Returns what ``call()`` raised (KeyboardInterrupt included), or None."""
    old = signal.signal(signum, handler)
    caught: Optional[BaseException] = None
    try:
        helper = Worker(signaller, name="signaller").begin()
        try:
            call()
        except BaseException as exc:  # noqa: B902 - KeyboardInterrupt included
            caught = exc
        finally:
            returned.set()
    finally:
        signal.signal(signum, old)
    helper.finish()
    return caught


@pytest.fixture(autouse=True)
def _reap_threads():
    """After each test, release every holder still waiting and join every
    thread the test started, so that a failed test does not leak blocked
    threads into the next one; restore the main thread's task binding."""
    yield
    live = list(_LIVE)
    _LIVE.clear()
    for w in live:
        for cb in w.on_cleanup:
            cb()
    deadline = time.monotonic() + TIMEOUT
    stuck = []
    for w in live:
        if w.is_alive():
            w.join(max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                stuck.append(w.name)
    mln.set_current_task(None)
    if stuck:
        pytest.fail(f"threads still running after the test: {stuck}")


# -- is a thread asleep in the lock? ---------------------------------------------------

_FUTEX_NR = {"x86_64": 202, "aarch64": 98, "i686": 240, "armv7l": 240, "ppc64le": 221,
             "s390x": 238, "riscv64": 98}.get(__import__("platform").machine())


def lock_address(sem: mln.RWSemaphore) -> int:
    """The address of the C structure (it appears in the repr)."""
    return int(re.search(r" at (0x[0-9a-f]+)", repr(sem)).group(1), 16)


def asleep_on_lock(sem: mln.RWSemaphore, native_id: int) -> Optional[bool]:
    """True if thread ``native_id`` of this process sleeps in futex(2) on a
    word of ``sem``; None if /proc does not tell."""
    try:
        with open(f"/proc/self/task/{native_id}/syscall") as f:
            fields = f.read().split()
        with open(f"/proc/self/task/{native_id}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    if _FUTEX_NR is None or len(fields) < 2 or fields[0] == "running":
        return False if fields and fields[0] == "running" else None
    base = lock_address(sem)
    return (int(fields[0]) == _FUTEX_NR and base <= int(fields[1], 16) < base + sem.SIZE
            and state == "S")


def _run_count(native_id: int) -> Optional[int]:
    """How many times the thread has been scheduled in (schedstat), or None."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[2])
    except (OSError, IndexError, ValueError):
        return None


def wait_asleep_on_lock(sem: mln.RWSemaphore, native_id: int, timeout: float = TIMEOUT) -> None:
    """Wait until thread ``native_id`` sleeps in the kernel on ``sem``'s futex
    words (not merely queued: a signal that lands while a waiter is on its way
    to sleep interrupts no system call).  A waiter may wake up periodically
    (its timers); if it does within a few tens of milliseconds, return just
    after it has gone back to sleep, so that a signal sent now finds it asleep.
    Without /proc's help, wait a while."""
    if asleep_on_lock(sem, native_id) is None:
        time.sleep(0.1)
        return
    wait_until(lambda: asleep_on_lock(sem, native_id), f"thread {native_id} asleep on the lock",
               timeout, describe=sem.state)
    runs = _run_count(native_id)
    if runs is None:
        return
    deadline = time.monotonic() + 0.06
    while time.monotonic() < deadline:
        now_runs = _run_count(native_id)
        if now_runs != runs and asleep_on_lock(sem, native_id):
            return  # it woke up and went back to sleep just now
        time.sleep(0)
