/* SPDX-License-Identifier: MIT */
/*
 * task_internal.h - what the lock code needs from task.c: the current task id
 * on the fast path, and the registration that lets task_kill() reach a task
 * sleeping in a futex.
 */
#ifndef MLN_TASK_INTERNAL_H
#define MLN_TASK_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "futex.h"
#include "task.h"

/* The calling thread's task id; 0 until first asked for. */
extern MLN_HOT_TLS _Thread_local uint64_t mln_tls_task;
uint64_t mln_task_init_current(void);

static inline uint64_t mln_current_task(void)
{
	uint64_t id = mln_tls_task;

	return mln_likely(id) ? id : mln_task_init_current();
}

/*
 * Announce that the calling thread is about to sleep on @word, so that
 * task_kill() can wake it; returns 1 if the current task is already killed
 * (the caller must then not sleep).  Every call is paired with
 * mln_task_wait_end(), after which task_kill() no longer touches @word.
 */
int mln_task_wait_begin(_Atomic uint32_t *word, int shared);
void mln_task_wait_end(void);

/* 1 if the current task is killed. */
int mln_current_task_killed(void);

#endif /* MLN_TASK_INTERNAL_H */
