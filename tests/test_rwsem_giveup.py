"""Every way a waiter gives up, tried under contention.

Exits: task_kill() of a killable waiter, a timeout (acquire_*(timeout) and
the timed context managers), and a signal delivered to the blocked main
thread (KeyboardInterrupt, a custom handler raising a custom exception, and
a handler that returns, after which the wait resumes in place).

In each scenario the waiter that gives up (the victim) is queued with other
readers and writers queued behind it and has waited long enough to reserve
the lock (a pending handoff, that it must drop).  Afterwards the victim holds
nothing and is no longer queued, every other waiter gets the lock, and the
lock ends free.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from typing import Callable, List, Optional

import pytest

import mmap_lock_native as mln
from conftest import (TIMEOUT, LockHolder, Worker, assert_free, call_while_signalled, hold,
                      queue_up, wait_asleep_on_lock, wait_handoff_pending, wait_queued)

HOLDER_MODES = ["read", "write"]
MODES = ["read", "write"]
#: Long enough that the other waiters are queued before it expires.
VICTIM_TIMEOUT = 0.6


class Scene:
    """The lock, its holder, the waiters queued in front of the victim and behind it."""

    def __init__(self, holder_mode: str, victim_mode: str, behind=(("r1", "read"),
                 ("w1", "write"), ("r2", "read")), behind_hold: bool = False) -> None:
        self.sem = mln.RWSemaphore(name="giveup")
        self.log: List[str] = []
        self.holder_mode = holder_mode
        self.victim_mode = victim_mode
        self.behind_spec = behind
        self.behind_hold = behind_hold
        self.behind: List[LockHolder] = []
        self.front: List[LockHolder] = []
        self.r = self.w = 0
        self.holder = hold(self.sem, holder_mode, name="holder")
        if holder_mode == "read" and victim_mode == "read":
            # A reader queues behind a read-held lock only when a writer waits.
            self.w += 1
            self.front.append(queue_up(self.sem, "write", (self.r, self.w), hold=False,
                                       log=self.log, name="w0"))

    def victim_queued(self, workers=()) -> None:
        """Wait for the victim to queue, then to reserve the lock, then queue the rest."""
        if self.victim_mode == "read":
            self.r += 1
        else:
            self.w += 1
        wait_queued(self.sem, self.r, self.w, workers=workers)
        wait_handoff_pending(self.sem)
        for name, mode in self.behind_spec:
            if mode == "read":
                self.r += 1
            else:
                self.w += 1
            self.behind.append(queue_up(self.sem, mode, (self.r, self.w), hold=self.behind_hold,
                                        log=self.log, name=name))

    def victim_left(self) -> None:
        """The victim is out of the queue and holds nothing; the holder still holds."""
        if self.victim_mode == "read":
            self.r -= 1
        else:
            self.w -= 1
        sem = self.sem
        assert sem.queue() == (self.r, self.w), sem.state()
        if self.holder_mode == "write":
            assert sem.owner == self.holder.task, sem.state()
            assert sem.readers == 0
        else:
            assert not sem.is_write_locked(), sem.state()
            assert sem.readers == 1, sem.state()
        assert not any(h.acquired.is_set() for h in self.front + self.behind)

    def drain(self) -> None:
        """Release the holder: every other waiter gets the lock, which ends free."""
        self.holder.unlock()
        self.holder.finish()
        for h in self.front + self.behind:
            h.unlock()
            h.finish()
        assert sorted(self.log) == sorted(h.name for h in self.front + self.behind)
        assert_free(self.sem)


# -- exits of a worker thread: kill and timeout ---------------------------------------

def _victim_call(sem: mln.RWSemaphore, mode: str, exit_kind: str) -> Callable[[], object]:
    if exit_kind == "kill":
        return getattr(sem, f"down_{mode}_killable")
    if exit_kind == "acquire_timeout":
        return lambda: getattr(sem, f"acquire_{mode}")(timeout=VICTIM_TIMEOUT)

    def with_timeout():
        try:
            with getattr(sem, mode)(timeout=VICTIM_TIMEOUT):
                return "entered"
        except TimeoutError as exc:
            return exc
    return with_timeout


def _expect(exit_kind: str, result: object) -> None:
    if exit_kind == "kill":
        assert result == -errno.EINTR
    elif exit_kind == "acquire_timeout":
        assert result is False
    else:
        assert isinstance(result, TimeoutError), result


def _give_up(exit_kind: str, victim: Worker) -> object:
    if exit_kind == "kill":
        assert not mln.task_is_killed(victim.task)
        mln.task_kill(victim.task)
        try:
            return victim.finish()
        finally:
            mln.task_revive(victim.task)
    return victim.finish(VICTIM_TIMEOUT + TIMEOUT)


WORKER_EXITS = ["kill", "acquire_timeout", "context_manager_timeout"]


@pytest.mark.parametrize("exit_kind", WORKER_EXITS)
@pytest.mark.parametrize("victim_mode", MODES)
@pytest.mark.parametrize("holder_mode", HOLDER_MODES)
def test_worker_gives_up_under_contention(holder_mode, victim_mode, exit_kind):
    scene = Scene(holder_mode, victim_mode)
    victim = Worker(_victim_call(scene.sem, victim_mode, exit_kind), name="victim").begin()
    scene.victim_queued(workers=(victim,))
    _expect(exit_kind, _give_up(exit_kind, victim))
    scene.victim_left()
    scene.drain()


@pytest.mark.parametrize("exit_kind", WORKER_EXITS)
def test_writer_giving_up_admits_the_readers_it_blocked(exit_kind):
    """Read-held lock, one writer queued, readers queued behind it (writer
    preference).  When the writer gives up, the readers must get in at once,
    alongside the reader that still holds the lock (the .NET bug: a timed-out
    writer left them asleep)."""
    scene = Scene("read", "write", behind=(("r1", "read"), ("r2", "read")), behind_hold=True)
    victim = Worker(_victim_call(scene.sem, "write", exit_kind), name="victim").begin()
    scene.victim_queued(workers=(victim,))
    _expect(exit_kind, _give_up(exit_kind, victim))
    for r in scene.behind:
        r.wait_acquired()
    assert scene.sem.readers == 3
    assert scene.sem.queue() == (0, 0)
    assert not scene.holder.release.is_set()
    scene.drain()


@pytest.mark.parametrize("exit_kind", WORKER_EXITS)
def test_reserving_writer_giving_up_lets_next_writer_in(exit_kind):
    """Write-held lock; writer w0 reserves it (handoff), writer w1 queues
    behind.  w0 gives up: at the release w1 must get the lock (a reservation
    left behind would keep it out forever: the aiorwlock wedge)."""
    scene = Scene("write", "write", behind=(("w1", "write"),), behind_hold=True)
    victim = Worker(_victim_call(scene.sem, "write", exit_kind), name="w0").begin()
    scene.victim_queued(workers=(victim,))
    _expect(exit_kind, _give_up(exit_kind, victim))
    scene.victim_left()
    scene.holder.unlock()
    scene.behind[0].wait_acquired()
    assert scene.sem.owner == scene.behind[0].task
    scene.drain()


@pytest.mark.parametrize("exit_kind", WORKER_EXITS)
def test_several_waiters_give_up_at_once(exit_kind):
    """Three killable/timed waiters (two writers, one reader) give up
    together; the two plain waiters behind them still get the lock."""
    sem = mln.RWSemaphore(name="many")
    holder = hold(sem, "write")
    victims = []
    r = w = 0
    for i, mode in enumerate(["write", "read", "write"]):
        v = Worker(_victim_call(sem, mode, exit_kind), name=f"v{i}-{mode}").begin()
        r += mode == "read"
        w += mode == "write"
        wait_queued(sem, r, w, workers=(v,))
        victims.append(v)
    log: List[str] = []
    others = [queue_up(sem, "read", (r + 1, w), hold=False, log=log, name="r"),
              queue_up(sem, "write", (r + 1, w + 1), hold=False, log=log, name="w")]
    if exit_kind == "kill":
        for v in victims:
            mln.task_kill(v.task)
    try:
        for v in victims:
            _expect(exit_kind, v.finish(VICTIM_TIMEOUT + TIMEOUT))
    finally:
        if exit_kind == "kill":
            for v in victims:
                mln.task_revive(v.task)
    assert sem.queue() == (1, 1)
    assert sem.owner == holder.task
    holder.unlock()
    for o in others:
        o.finish()
    holder.finish()
    assert sorted(log) == ["r", "w"]
    assert_free(sem)


# -- exits of the blocked main thread: signals ----------------------------------------------

class Custom(Exception):
    """Raised by a custom signal handler."""


MAIN_CALLS = ["down", "down_killable", "acquire", "context_manager"]


def _main_acquire(sem: mln.RWSemaphore, mode: str, call: str,
                  inside: Callable[[], None]) -> None:
    """Acquire in ``mode`` the way ``call`` says, run ``inside`` holding it, release."""
    if call == "context_manager":
        with getattr(sem, mode)():
            inside()
        return
    if call == "down":
        assert getattr(sem, f"down_{mode}")() is None
    elif call == "down_killable":
        assert getattr(sem, f"down_{mode}_killable")() == 0
    else:
        assert getattr(sem, f"acquire_{mode}")(timeout=60.0) is True
    try:
        inside()
    finally:
        getattr(sem, f"up_{mode}")()


def _run_main_victim(scene: Scene, call: str, signum: int,
                     handler, expected: Optional[type], n_signals: int = 1,
                     handler_ran: Optional[threading.Event] = None) -> Optional[BaseException]:
    """Block the main thread as the victim; a helper thread waits until the
    scene is set up, then signals the main thread ``n_signals`` times.

    With ``expected`` None the handler returns and the helper, once it has
    seen the handler run and the main thread still queued, releases the
    holder so that the main thread's acquisition completes.  If the helper
    fails, it releases the holder so that the main thread does not hang.
    """
    sem = scene.sem
    main = threading.main_thread().ident
    main_native = threading.main_thread().native_id
    returned = threading.Event()
    inside_seen = {}

    def helper():
        try:
            scene.victim_queued()
            for _ in range(n_signals):
                if handler_ran is not None:
                    handler_ran.clear()
                assert not returned.is_set(), "main thread not blocked"
                # Signal it once it sleeps (not on its way back to sleep after
                # a previous handler: see test_signal_soon_after_a_handler_returned).
                wait_asleep_on_lock(sem, main_native)
                signal.pthread_kill(main, signum)
                if expected is None:
                    assert handler_ran.wait(TIMEOUT), "the signal handler did not run"
                    # The handler ran and returned: the main thread is still queued.
                    assert sem.queue() == (scene.r, scene.w), sem.state()
                    assert not returned.is_set()
            if expected is None:
                scene.holder.unlock()
            assert returned.wait(TIMEOUT), "the main thread did not return from its acquire"
        except BaseException:
            scene.holder.unlock()  # so that the main thread does not hang
            raise

    def inside():
        inside_seen.update(readers=sem.readers, owner=sem.owner, log=list(scene.log),
                           queue=sem.queue())

    caught = call_while_signalled(signum, handler, helper,
                                  lambda: _main_acquire(sem, scene.victim_mode, call, inside),
                                  returned)
    if expected is None:
        assert caught is None, caught
        # It resumed in place and got the lock before the writer queued behind it.
        assert "w1" not in inside_seen["log"]
        if scene.victim_mode == "write":
            assert inside_seen["owner"] == mln.current_task()
        else:
            assert inside_seen["owner"] is None and inside_seen["readers"] >= 1
        assert inside_seen["queue"][1] >= 1  # w1 still queued while we held it
    else:
        assert isinstance(caught, expected), caught
        assert not inside_seen, "the acquire completed despite the exception"
    return caught


def _signal_setup(exit_kind: str):
    ran = threading.Event()
    if exit_kind == "keyboard_interrupt":
        return signal.SIGINT, signal.default_int_handler, KeyboardInterrupt, ran

    if exit_kind == "custom_exception":
        def raising(signum, frame):
            ran.set()
            raise Custom(f"signal {signum}")
        return signal.SIGUSR1, raising, Custom, ran

    def returning(signum, frame):
        ran.set()
    return signal.SIGUSR1, returning, None, ran


SIGNAL_EXITS = ["keyboard_interrupt", "custom_exception", "handler_returns"]


@pytest.mark.parametrize("exit_kind", SIGNAL_EXITS)
@pytest.mark.parametrize("call", MAIN_CALLS)
@pytest.mark.parametrize("victim_mode", MODES)
@pytest.mark.parametrize("holder_mode", HOLDER_MODES)
def test_main_thread_signal_under_contention(holder_mode, victim_mode, call, exit_kind):
    scene = Scene(holder_mode, victim_mode)
    signum, handler, expected, ran = _signal_setup(exit_kind)
    n = 3 if expected is None else 1
    _run_main_victim(scene, call, signum, handler, expected, n_signals=n, handler_ran=ran)
    if expected is not None:
        scene.victim_left()
    scene.drain()


@pytest.mark.parametrize("exit_kind", ["keyboard_interrupt", "custom_exception"])
def test_main_writer_interrupted_admits_the_readers_it_blocked(exit_kind):
    scene = Scene("read", "write", behind=(("r1", "read"), ("r2", "read")), behind_hold=True)
    signum, handler, expected, ran = _signal_setup(exit_kind)
    _run_main_victim(scene, "down", signum, handler, expected, handler_ran=ran)
    for r in scene.behind:
        r.wait_acquired()
    assert scene.sem.readers == 3
    assert scene.sem.queue() == (0, 0)
    scene.drain()


def test_handler_returning_keeps_the_reservation():
    """A writer that reserved the lock and is interrupted by a signal whose
    handler returns keeps its reservation: at the release it gets the lock
    ahead of a writer queued later, and no reader slips in."""
    scene = Scene("read", "write", behind=(("w1", "write"), ("r1", "read")))
    signum, handler, expected, ran = _signal_setup("handler_returns")
    _run_main_victim(scene, "down", signum, handler, None, n_signals=2, handler_ran=ran)
    assert scene.sem.handoffs >= 1
    scene.drain()


SOON_SETUPS = {
    # main thread's wait, and what keeps it waiting
    "writer-behind-reader": ("write", "read", ()),
    "reader-behind-reserving-writer": ("read", "read", ("write",)),
    "writer-behind-reserving-writer": ("write", "write", ("write",)),
    "reader-behind-writer": ("read", "write", ()),
}


@pytest.mark.parametrize("setup", sorted(SOON_SETUPS))
def test_signal_soon_after_a_handler_returned_is_not_lost(setup):
    """The main thread waits for the lock; signals arrive one after another,
    each as soon as the previous handler (which returns) has run.  Each one
    must be handled promptly: a blocking acquire returns to the interpreter
    whenever a signal arrives, including one that lands while the waiter is
    on its way back to sleep after handling the previous one, and whatever
    the waiter's position (behind a waiter that has reserved the lock, it
    wakes every ~4 ms to look again, and must still notice signals)."""
    mode, holder_mode, front_modes = SOON_SETUPS[setup]
    sem = mln.RWSemaphore(name="signals")
    holder = hold(sem, holder_mode)
    r = w = 0
    for m in front_modes:
        w += 1
        queue_up(sem, m, (r, w), hold=False, name="front")
    if front_modes:
        wait_handoff_pending(sem)
    ran = threading.Event()
    handled: List[int] = []

    def handler(signum, frame):
        handled.append(signum)
        ran.set()

    main = threading.main_thread().ident
    rounds = 200

    def helper():
        try:
            wait_queued(sem, r + (mode == "read"), w + (mode == "write"))
            wait_asleep_on_lock(sem, threading.main_thread().native_id)
            for i in range(rounds):
                ran.clear()
                signal.pthread_kill(main, signal.SIGUSR1)
                if not ran.wait(2.0):
                    return f"signal {i + 1} of {rounds} not handled within 2 s; " \
                           f"state: {sem.state()}"
            return None
        finally:
            holder.unlock()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        h = Worker(helper, name="signaller").begin()
        getattr(sem, f"down_{mode}")()
        getattr(sem, f"up_{mode}")()
    finally:
        signal.signal(signal.SIGUSR1, old)
    lost = h.finish()
    holder.finish()
    assert lost is None, lost
    assert len(handled) == rounds
    assert_free(sem)


#: Run in a separate process (so that it needs no GIL of ours): each round,
#: wait for the main thread to wake up (a waiter wakes on its timers), send it
#: SIGUSR1 at once, then wait for the handler to report through the pipe.
SENDER = r"""
import os, select, sys, signal, time
pid, tid, report_fd, rounds = map(int, sys.argv[1:5])
stat = os.open(f"/proc/{pid}/task/{tid}/stat", os.O_RDONLY)
def state():
    return os.pread(stat, 512, 0).rsplit(b")", 1)[1][1:2]
for i in range(rounds):
    deadline = time.monotonic() + 0.3
    while state() != b"S" and time.monotonic() < deadline:
        pass
    while state() == b"S" and time.monotonic() < deadline:
        pass  # asleep; no timer fired within 0.3 s: send anyway
    os.kill(pid, signal.SIGUSR1)
    ready, _, _ = select.select([report_fd], [], [], 1.0)
    if not ready:
        print(f"signal {i + 1} of {rounds} not handled within 1 s", flush=True)
        sys.exit(0)
    os.read(report_fd, 1)
print("ok", flush=True)
"""


@pytest.mark.parametrize("setup", sorted(SOON_SETUPS))
def test_signal_landing_as_the_waiter_wakes_is_not_lost(setup):
    """A signal may land while the waiter is awake in C between two sleeps
    (it wakes on timers: to reserve the lock, to look at someone else's
    reservation again, to poll): no system call is interrupted then, yet the
    handler must still run soon.  Another process sends SIGUSR1 to the main
    thread right as it wakes, round after round; each must be handled within
    1 s while the main thread stays blocked on the lock."""
    mode, holder_mode, front_modes = SOON_SETUPS[setup]
    sem = mln.RWSemaphore(name="wake-signals")
    holder = hold(sem, holder_mode)
    r = w = 0
    for m in front_modes:
        w += 1
        queue_up(sem, m, (r, w), hold=False, name="front")
    if front_modes:
        wait_handoff_pending(sem)
    report_r, report_w = os.pipe()
    handled: List[int] = []

    def handler(signum, frame):
        handled.append(signum)
        os.write(report_w, b"x")

    main_native = threading.main_thread().native_id
    rounds = 25

    def helper():
        try:
            wait_queued(sem, r + (mode == "read"), w + (mode == "write"))
            wait_asleep_on_lock(sem, main_native)
            sender = subprocess.Popen(
                [sys.executable, "-c", SENDER, str(os.getpid()), str(main_native),
                 str(report_r), str(rounds)], stdout=subprocess.PIPE, pass_fds=(report_r,))
            try:
                out, _ = sender.communicate(timeout=60)
            finally:
                if sender.poll() is None:
                    sender.kill()
                    sender.communicate()
            return out.decode().strip()
        finally:
            holder.unlock()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        h = Worker(helper, name="signaller").begin()
        getattr(sem, f"down_{mode}")()
        getattr(sem, f"up_{mode}")()
    finally:
        signal.signal(signal.SIGUSR1, old)
        os.close(report_r)
        os.close(report_w)
    outcome = h.finish(90)
    holder.finish()
    assert outcome == "ok", f"{outcome}; handled {len(handled)}"
    assert_free(sem)
