"""The current task, and task_kill() / task_revive().

A *task* is what owns a lock: by default the calling OS thread (its thread
id), but an embedder running several emulated tasks on one thread (guest
threads as greenlets, say) binds the task it is about to run with
:func:`set_current_task`.  Killing a task makes its killable waits, those in
progress and later ones, return ``-errno.EINTR`` until it is revived.
"""
from __future__ import annotations

import errno
from typing import Optional

from ._ffi import lib, strerror

__all__ = ["current_task", "set_current_task", "task_kill", "task_revive", "task_is_killed"]

#: Largest task id that :func:`set_current_task` accepts.
TASK_ID_MAX = lib.MLN_TASK_ID_MAX


def _check_id(task: int, what: str) -> int:
    if not isinstance(task, int) or isinstance(task, bool):
        raise TypeError(f"{what}: task id must be an int, not {type(task).__name__}")
    if not 1 <= task <= TASK_ID_MAX:
        raise ValueError(f"{what}: task id {task} is outside 1..{TASK_ID_MAX}")
    return task


def current_task() -> int:
    """The task the calling thread runs: the bound id, else its OS thread id."""
    return int(lib.task_current())


def set_current_task(task: Optional[int]) -> None:
    """Bind ``task`` to the calling thread; ``None`` restores the thread id."""
    lib.task_set_current(0 if task is None else _check_id(task, "set_current_task"))


def task_kill(task: int) -> None:
    """Make ``task``'s killable waits return ``-errno.EINTR`` until revived.

    Waits already in progress end at once; killable acquisitions that would
    block fail until :func:`task_revive`.  As in the kernel, a killable
    acquisition of a free lock still succeeds.
    """
    rc = lib.task_kill(_check_id(task, "task_kill"))
    if rc:
        raise OSError(-rc, f"task_kill({task}): {strerror(rc)}")


def task_revive(task: int) -> None:
    """Undo :func:`task_kill`; ``ProcessLookupError`` if ``task`` was not killed."""
    rc = lib.task_revive(_check_id(task, "task_revive"))
    if rc == -errno.ESRCH:
        raise ProcessLookupError(errno.ESRCH, f"task_revive({task}): task {task} is not killed")
    if rc:
        raise OSError(-rc, f"task_revive({task}): {strerror(rc)}")


def task_is_killed(task: int) -> bool:
    """True while ``task`` is killed."""
    return bool(lib.task_is_killed(_check_id(task, "task_is_killed")))
