"""Hypothesis: single-thread sequences of operations, misuse included, against
a tiny model of the lock (read holds, the write-owning task, destroyed).

One thread runs everything, switching between tasks with set_current_task()
(an embedder's guest tasks).  An acquisition that would block is replaced by
its zero-timeout form, which must fail without queueing.
"""
from __future__ import annotations

import errno
import threading
from typing import Optional

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import mmap_lock_native as mln

TASKS = [None, 1001, 1002]


class RWSemModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        mln.set_current_task(None)
        self.sem = mln.RWSemaphore(name="model")
        self.readers = 0
        self.writer: Optional[int] = None  # task id of the write owner
        self.dead = False
        self.task = threading.get_native_id()

    def teardown(self) -> None:
        mln.set_current_task(None)

    # -- helpers --------------------------------------------------------------

    def misuse(self, call, op, code: int):
        """``call`` raises LockError for operation ``op`` (or one of a tuple)."""
        ops = op if isinstance(op, tuple) else (op,)
        with pytest.raises(mln.LockError) as info:
            call()
        op = info.value.operation
        assert op in ops
        assert info.value.errno == code
        assert str(info.value).startswith(f"{op} on RWSemaphore 'model' at 0x")
        assert "state: " in str(info.value)

    @property
    def locked(self) -> bool:
        return self.readers > 0 or self.writer is not None

    def would_block_read(self) -> bool:
        return self.writer is not None and self.writer != self.task

    def would_block_write(self) -> bool:
        return self.locked and self.writer != self.task

    # -- rules ------------------------------------------------------------------

    @rule(task=st.sampled_from(TASKS))
    def switch_task(self, task):
        mln.set_current_task(task)
        self.task = threading.get_native_id() if task is None else task
        assert mln.current_task() == self.task

    @rule(op=st.sampled_from(["down_read", "down_read_killable", "down_read_non_owner",
                              "acquire_read"]))
    def down_read(self, op):
        call = getattr(self.sem, op)
        if self.dead:
            self.misuse(call, op, errno.EINVAL)
        elif self.writer == self.task:
            self.misuse(call, op, errno.EDEADLK)
        elif self.would_block_read():
            assert self.sem.acquire_read(timeout=0) is False
        else:
            assert call() == {"down_read": None, "down_read_non_owner": None,
                              "down_read_killable": 0, "acquire_read": True}[op]
            self.readers += 1

    @rule(op=st.sampled_from(["down_write", "down_write_killable", "down_write_nested",
                              "acquire_write"]))
    def down_write(self, op):
        call = getattr(self.sem, op)
        names = op
        if op == "down_write_nested":
            call = lambda: self.sem.down_write_nested(mln.SINGLE_DEPTH_NESTING)  # noqa: E731
            # (test_rwsem_misuse checks which name it should be)
            names = ("down_write_nested", "down_write")
        if self.dead:
            self.misuse(call, names, errno.EINVAL)
        elif self.writer == self.task:
            self.misuse(call, names, errno.EDEADLK)
        elif self.would_block_write():
            assert self.sem.acquire_write(timeout=0) is False
        else:
            assert call() == (True if op == "acquire_write" else
                              0 if op == "down_write_killable" else None)
            self.writer = self.task

    @rule()
    def down_read_trylock(self):
        ok = not self.dead and self.writer is None
        assert self.sem.down_read_trylock() is ok
        self.readers += ok

    @rule()
    def down_write_trylock(self):
        ok = not self.dead and not self.locked
        assert self.sem.down_write_trylock() is ok
        if ok:
            self.writer = self.task

    @rule(timeout=st.sampled_from([0, 0.001]))
    def acquire_read_timed(self, timeout):
        if self.dead:
            self.misuse(lambda: self.sem.acquire_read(timeout=timeout), "acquire_read",
                        errno.EINVAL)
        elif self.writer == self.task:
            self.misuse(lambda: self.sem.acquire_read(timeout=timeout), "acquire_read",
                        errno.EDEADLK)
        else:
            ok = self.writer is None
            assert self.sem.acquire_read(timeout=timeout) is ok
            self.readers += ok

    @rule(timeout=st.sampled_from([0, 0.001]))
    def acquire_write_timed(self, timeout):
        if self.dead:
            self.misuse(lambda: self.sem.acquire_write(timeout=timeout), "acquire_write",
                        errno.EINVAL)
        elif self.writer == self.task:
            self.misuse(lambda: self.sem.acquire_write(timeout=timeout), "acquire_write",
                        errno.EDEADLK)
        else:
            ok = not self.locked
            assert self.sem.acquire_write(timeout=timeout) is ok
            if ok:
                self.writer = self.task

    @rule(op=st.sampled_from(["up_read", "up_read_non_owner"]))
    def up_read(self, op):
        if self.readers == 0:  # free, write-held or destroyed
            self.misuse(getattr(self.sem, op), op, errno.EPERM)
        else:
            assert getattr(self.sem, op)() is None
            self.readers -= 1

    @rule()
    def up_write(self):
        if self.writer is not None and self.writer == self.task:
            assert self.sem.up_write() is None
            self.writer = None
        else:
            self.misuse(self.sem.up_write, "up_write", errno.EPERM)

    @rule()
    def downgrade_write(self):
        if self.writer is not None and self.writer == self.task:
            assert self.sem.downgrade_write() is None
            self.writer = None
            self.readers = 1
        else:
            self.misuse(self.sem.downgrade_write, "downgrade_write", errno.EPERM)

    @rule(mode=st.sampled_from(["read", "write"]), timeout=st.sampled_from([None, 0, 0.001]))
    def context_manager(self, mode, timeout):
        blocked = self.would_block_read() if mode == "read" else self.would_block_write()
        if blocked and timeout is None:
            timeout = 0  # the untimed form would wait forever
        guard = getattr(self.sem, mode)(timeout=timeout)
        if self.dead or self.writer == self.task:
            with pytest.raises(mln.LockError):
                with guard:
                    pytest.fail("entered")
        elif blocked:
            with pytest.raises(TimeoutError):
                with guard:
                    pytest.fail("entered")
        else:
            with guard as s:
                assert s is self.sem
                if mode == "read":
                    assert self.sem.readers == self.readers + 1
                else:
                    assert self.sem.owner == self.task
        self.check()

    @rule()
    def destroy(self):
        if self.dead:
            self.misuse(self.sem.destroy, "destroy", errno.EINVAL)
        elif self.locked:
            self.misuse(self.sem.destroy, "destroy", errno.EBUSY)
        else:
            assert self.sem.destroy() is None
            self.dead = True

    # -- the lock agrees with the model after every step -----------------------------

    @invariant()
    def check(self):
        sem = self.sem
        assert sem.is_locked() == self.locked
        assert sem.is_write_locked() == (self.writer is not None)
        assert sem.readers == self.readers
        assert sem.owner == self.writer
        assert sem.queue() == (0, 0)
        assert not sem.is_contended()
        state = sem.state()
        if self.dead:
            assert state == "destroyed"
        elif self.writer is not None:
            assert state == f"write-locked by task {self.writer}"
        elif self.readers:
            assert state.startswith(f"read-locked by {self.readers} reader")
        else:
            assert state == "unlocked"


RWSemModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_rwsem_model = RWSemModel.TestCase
