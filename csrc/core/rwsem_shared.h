/* SPDX-License-Identifier: MIT */
/*
 * rwsem_shared.h - process-shared semaphores that outlive the processes
 * using them (rwsem_shared.c): the wait-lock section, the per-process slots,
 * reclaiming what a dead process left, and the operations that take the
 * fast paths' place.  Internal to the core.
 */
#ifndef MLN_RWSEM_SHARED_H
#define MLN_RWSEM_SHARED_H

#include <stdbool.h>
#include <stdint.h>

#include "rwsem.h"
#include "rwsem_queue.h"

/*
 * How often a waiter looks for dead processes (and at most how long it
 * sleeps): a death is noticed within about twice this.
 */
#define RWSEM_SCAN_NS 20000000ull

/*
 * The wait-lock of a shared semaphore, and a section: 0, or as
 * mln_wait_lock() (-ETIMEDOUT, -EINTR, -EINVAL).  Taken over from a holder
 * that died inside, the dead holder's section is rolled back first.
 */
int rwsem_shared_lock(struct rw_semaphore *sem, uint64_t deadline_ns, bool killable);
void rwsem_shared_unlock(struct rw_semaphore *sem);

/* Under the wait-lock (rwsem.c's queue, for a shared semaphore): */

/*
 * The caller's process slot, claimed if it has none: its index, -ENOSPC
 * when every slot is taken (a slot waiter is noted: the next free slot
 * wakes the readers' futex), -EXDEV from another pid namespace.
 */
int rwsem_shared_claim(struct rw_semaphore *sem);
/* @w queued, or leaving the queue without the lock (slot kept: see put). */
void rwsem_shared_enqueued(struct rw_semaphore *sem, const struct rwsem_waiter *w);
void rwsem_shared_dequeued(struct rw_semaphore *sem, const struct rwsem_waiter *w);
/* Free slot @slot if it holds and awaits nothing any more. */
void rwsem_shared_put(struct rw_semaphore *sem, uint32_t slot, struct wake_plan *plan);
/* @w (a writer) reserved the lock. */
void rwsem_shared_reserved(struct rw_semaphore *sem, const struct rwsem_waiter *w);
/* The queued readers were granted the lock; the reserving writer was. */
void rwsem_shared_granted_readers(struct rw_semaphore *sem);
void rwsem_shared_granted_writer(struct rw_semaphore *sem);
/*
 * @w's task holds the lock now: @granted by a waker, or taken itself (the
 * state word already says so).  Books the hold and the owner; 0, or
 * -EOWNERDEAD when a write holder had died holding it.
 */
int rwsem_shared_acquired(struct rw_semaphore *sem, const struct rwsem_waiter *w, bool granted,
			  struct wake_plan *plan);
/* Does the current task hold it for write? */
bool rwsem_shared_writer_is_me(struct rw_semaphore *sem);
/* Time to look for dead processes? */
bool rwsem_shared_scan_due(const struct rw_semaphore *sem, uint64_t now);

/* Without the wait-lock: */

/*
 * Look for processes that died holding or awaiting @sem (at most once per
 * RWSEM_SCAN_NS for all its users), and reclaim what they left.
 */
void rwsem_shared_reap_dead(struct rw_semaphore *sem);

/* The operations whose private forms are fast paths (rwsem.c dispatches). */
int rwsem_shared_up_read(struct rw_semaphore *sem, bool anonymous);
/* @rearm: give the owner-died indication back (a wait cancelled after it got it). */
int rwsem_shared_up_write(struct rw_semaphore *sem, bool rearm);
int rwsem_shared_downgrade(struct rw_semaphore *sem);
/*
 * 1, 0, or -EOWNERDEAD (acquired; a write holder had died).  Not @report:
 * 0 instead of -EOWNERDEAD, without acquiring (rwsem_try_read/write).
 */
int rwsem_shared_trylock(struct rw_semaphore *sem, bool write, bool anonymous, bool report);

#endif /* MLN_RWSEM_SHARED_H */
