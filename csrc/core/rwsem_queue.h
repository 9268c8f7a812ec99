/* SPDX-License-Identifier: MIT */
/*
 * rwsem_queue.h - the wait-queue decisions of rwsem.c, for the operations of
 * a process-shared semaphore (rwsem_shared.c), which make them inside their
 * own wait-lock sections.  Every function here runs with wait_lock held.
 */
#ifndef MLN_RWSEM_QUEUE_H
#define MLN_RWSEM_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "rwsem.h"

/* handoff_to: nobody, all queued readers, or a writer's ticket. */
#define HANDOFF_NONE		0u
#define HANDOFF_READERS		UINT32_MAX

/* What a waker must do once it has dropped wait_lock (rwsem_wake_plan_run). */
struct wake_plan {
	bool readers;		/* FUTEX_WAKE every queued reader */
	bool one_writer;	/* FUTEX_WAKE one queued writer, any */
	uint32_t writer_ticket;	/* FUTEX_WAKE the writers of this ticket's bit */
};

/* Make WAITERS mirror the queue, and HANDOFF mirror handoff_to. */
void rwsem_sync_flags(struct rw_semaphore *sem);
/* Grant the lock to every queued reader at once; false if it cannot be now. */
bool rwsem_grant_readers(struct rw_semaphore *sem, struct wake_plan *plan);
/* The wake decision (the kernel's rwsem_mark_wake()); see rwsem.c. */
void rwsem_mark_wake(struct rw_semaphore *sem, bool after_writer, struct wake_plan *plan);
/* After wait_lock is dropped: the futex wakes @plan asks for. */
void rwsem_wake_plan_run(struct rw_semaphore *sem, const struct wake_plan *plan, bool shared);

#endif /* MLN_RWSEM_QUEUE_H */
