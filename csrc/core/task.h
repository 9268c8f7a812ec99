/* SPDX-License-Identifier: MIT */
/*
 * task.h - the "current task" of the calling thread, and task kill/revive.
 *
 * The kernel's rwsem records `current` as its write owner and lets a fatal
 * signal end a killable wait.  Here a task is a 64-bit id: by default the OS
 * thread id (gettid), but an embedder that runs several emulated tasks on one
 * thread (greenlets, a guest scheduler) binds the id of the task it is about
 * to run with task_set_current().  Ids are process-local.
 */
#ifndef MLN_TASK_H
#define MLN_TASK_H

#include <stdint.h>

/* cffi:begin */
/* Largest task id an embedder may bind (the owner word keeps two flag bits). */
#define MLN_TASK_ID_MAX 0x3fffffffffffffff

/* The task the calling thread runs now: the bound id, else the OS thread id. */
uint64_t task_current(void);
/* Bind @id (1..MLN_TASK_ID_MAX) to the calling thread; 0 restores the OS
 * thread id.  Returns 0 or -EINVAL. */
int task_set_current(uint64_t id);
/* Make @id's killable waits, those in progress and later ones, return -EINTR
 * until task_revive(@id).  Returns 0, -EINVAL for id 0, -ENOMEM when the
 * table of killed tasks is full. */
int task_kill(uint64_t id);
/* Undo task_kill(@id).  Returns 0, or -ESRCH if @id was not killed. */
int task_revive(uint64_t id);
/* 1 if @id is killed, else 0. */
int task_is_killed(uint64_t id);
/* cffi:end */

#endif /* MLN_TASK_H */
