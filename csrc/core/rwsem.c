/* SPDX-License-Identifier: MIT */
/*
 * rwsem.c - reader-writer semaphore on futex(2), with the semantics of the
 * Linux kernel's kernel/locking/rwsem.c.
 *
 * Design, in the kernel's terms (docs/design.md has the long form):
 *
 *  - One 32-bit state word, `count` (layout in rwsem.h).  Readers enter with
 *    one fetch_add of RWSEM_READER_BIAS and keep it if none of
 *    RWSEM_READ_FAILED_MASK was set; writers enter with one compare-exchange
 *    0 -> RWSEM_WRITER_LOCKED.  Releases are one atomic each.  Only when
 *    RWSEM_FLAG_WAITERS is set do releases leave the fast path.
 *
 *  - Writer preference: WAITERS is part of READ_FAILED_MASK, so once anyone
 *    waits, new readers queue too, and a queued writer no longer sees new
 *    readers arrive: it waits only for the readers already inside.
 *
 *  - The wait queue is not a list (the structure must stay free of pointers
 *    to be shareable between processes) but two counts and two futex words
 *    guarded by `wait_lock`.  Queued readers are granted as one batch: the
 *    waker adds their biases to `count` itself and bumps read_grant_gen, as
 *    rwsem_mark_wake() does, so they own the lock before they run.  A queued
 *    writer is woken to compete for the lock; a writer still spinning may
 *    steal it first, as in the kernel, because that avoids a convoy.
 *
 *  - Phases alternate: a writer's release grants every queued reader; the
 *    last reader's release wakes a writer.  So a stream of writers cannot
 *    starve queued readers, nor a stream of readers a queued writer.
 *
 *  - Handoff: a waiter that has waited RWSEM_HANDOFF_NS (4 ms) sets
 *    RWSEM_FLAG_HANDOFF and reserves the lock (handoff_to); from then on
 *    nobody may steal it, and the next release hands it to that waiter.
 *    Readers reserve it only against a writer that holds the lock.
 *
 *  - Waits that give up (timeout, kill, a cancelled resumable wait) leave
 *    the queue under wait_lock, drop any reservation they made, and run the
 *    wake decision again, so whoever they were blocking proceeds.
 *
 *  - A process-shared semaphore (rwsem_shared.c) keeps RWSEM_FLAG_SHARED in
 *    count, which fails every fast path: the slow paths below dispatch, and
 *    work on its `state` (state_word()) under the wait-lock only, booking
 *    each hold and queue entry to its process, so that a process's death can
 *    be undone or reclaimed.  Private semaphores never take those branches.
 *
 * Who may change the state word (every other bit is constant zero):
 *
 *   WRITER_LOCKED  set: a writer's CAS (fast path, spin, or under wait_lock),
 *                  or a waker handing the lock to a reserved writer (under
 *                  wait_lock).  Cleared: only the owner (up_write, downgrade).
 *   WAITERS        set and cleared only under wait_lock, so that it mirrors
 *                  nr_readers_waiting + nr_writers_waiting != 0.
 *   HANDOFF        set and cleared only under wait_lock, together with
 *                  handoff_to.
 *   DEAD           set by rwsem_destroy() on a lock nobody holds or awaits.
 *   reader count   +BIAS: the reader fast path (speculative: a reader that
 *                  fails backs out), a batch grant under wait_lock, and
 *                  downgrade.  -BIAS: up_read and the back-out.
 *   READFAIL       only by a reader-count overflow; that reader backs out.
 *
 * Memory ordering, in one rule: acquire on every operation that takes the
 * lock, release on every operation that gives it up; everything else under
 * wait_lock is ordered by wait_lock.  Exceptions are justified in place.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>

#include "futex.h"
#include "process.h"
#include "rwsem.h"
#include "rwsem_internal.h"
#include "rwsem_queue.h"
#include "rwsem_shared.h"
#include "task_internal.h"
#include "wait_lock.h"

/* Longest spin behind a writer (see spin_budget_ns() for readers). */
#define RWSEM_SPIN_NS		20000u

/* How often a waiter looks again while another waiter holds the reservation. */
#define RWSEM_RESERVED_RECHECK_NS (4ull * RWSEM_HANDOFF_NS)

_Static_assert(sizeof(_Atomic uint32_t) == 4, "futex words are 32 bits");
_Static_assert(offsetof(struct rw_semaphore, count) == 0, "count opens the structure");
_Static_assert(RWSEM_MAGIC == (RWSEM_MAGIC_BASE | RWSEM_LAYOUT_VERSION), "magic = base | version");
_Static_assert(RWSEM_SLOTS < 255, "slot indices + 1 fit writer_slot and handoff_slot");

/*
 * A slow path's first look: zeroed memory (RWSEM_INITIALIZER) or what
 * rwsem_init() wrote.  Anything else holds no semaphore, and whatever its
 * words say must not be waited on.
 */
static inline bool magic_ok(const struct rw_semaphore *sem)
{
	return sem->magic == RWSEM_MAGIC || (sem->magic == 0 && sem->flags == 0);
}

/* ------------------------------------------------------------------------
 * The wait queue.  Everything from here to the fast paths runs with
 * wait_lock held unless its comment says otherwise.
 */

static inline uint32_t ticket_bit(uint32_t ticket)
{
	return 1u << (ticket & 31);
}

/*
 * Take wait_lock: 0, or as mln_wait_lock_slow() (-ETIMEDOUT, -EINTR with
 * RWSEM_WAIT_KILLABLE in @flags, -EINVAL for a word no holder writes).  Only
 * a caller not yet queued passes a deadline or killability: one in the
 * queue must get the lock to leave it.  A shared semaphore's is a
 * transaction (rwsem_shared.c).
 */
static int wait_lock_until(struct rw_semaphore *sem, uint64_t deadline_ns, unsigned int flags)
{
	if (is_shared(sem))
		return rwsem_shared_lock(sem, deadline_ns, flags & RWSEM_WAIT_KILLABLE);
	return mln_wait_lock(&sem->wait_lock, MLN_WL_PRIVATE_ID, false, deadline_ns,
			     flags & RWSEM_WAIT_KILLABLE);
}

static int wait_lock(struct rw_semaphore *sem)
{
	return wait_lock_until(sem, MLN_NO_DEADLINE, 0);
}

static void wait_unlock(struct rw_semaphore *sem)
{
	if (is_shared(sem))
		rwsem_shared_unlock(sem);
	else
		mln_wait_unlock(&sem->wait_lock, false);
}

/*
 * Called after wait_unlock(): the woken tasks should not run into wait_lock
 * still held.  The structure may be freed by then if the woken task released
 * it; a futex wake on a dead address wakes nobody or fails, which glibc
 * accepts for the same reason.
 */
void rwsem_wake_plan_run(struct rw_semaphore *sem, const struct wake_plan *plan, bool shared)
{
	if (plan->readers)
		mln_futex_wake(&sem->read_seq, INT_MAX, FUTEX_BITSET_MATCH_ANY, shared);
	if (plan->writer_ticket)
		mln_futex_wake(&sem->write_seq, INT_MAX, ticket_bit(plan->writer_ticket), shared);
	else if (plan->one_writer)
		mln_futex_wake(&sem->write_seq, 1, FUTEX_BITSET_MATCH_ANY, shared);
}

void rwsem_sync_flags(struct rw_semaphore *sem)
{
	_Atomic uint32_t *state = state_word(sem);
	uint32_t set = 0, clear = 0;

	if (sem->q.nr_readers_waiting + sem->q.nr_writers_waiting)
		set |= RWSEM_FLAG_WAITERS;
	else
		clear |= RWSEM_FLAG_WAITERS;
	if (sem->q.handoff_to != HANDOFF_NONE)
		set |= RWSEM_FLAG_HANDOFF;
	else
		clear |= RWSEM_FLAG_HANDOFF;
	/* Relaxed: wait_lock orders these for waiters; fast paths only fail on them. */
	if (set)
		atomic_fetch_or_explicit(state, set, memory_order_relaxed);
	if (clear)
		atomic_fetch_and_explicit(state, ~clear, memory_order_relaxed);
}

/* Grant the lock to every queued reader at once (they may join other readers). */
bool rwsem_grant_readers(struct rw_semaphore *sem, struct wake_plan *plan)
{
	_Atomic uint32_t *state = state_word(sem);
	uint32_t n = sem->q.nr_readers_waiting;
	uint32_t c = atomic_load_explicit(state, memory_order_relaxed);

	do {
		if (c & (RWSEM_WRITER_LOCKED | RWSEM_FLAG_DEAD | RWSEM_FLAG_READFAIL))
			return false;	/* a spinning writer stole it; its release retries */
		if (n > RWSEM_READERS_MAX - ((c & RWSEM_READER_MASK) >> RWSEM_READER_SHIFT))
			return false;	/* no room: the last reader out retries */
	} while (!atomic_compare_exchange_weak_explicit(state, &c, c + n * RWSEM_READER_BIAS,
							memory_order_acquire,
							memory_order_relaxed));
	/*
	 * Acquire above: the readers we grant read what the last writer wrote;
	 * they synchronise with us through wait_lock when they wake.
	 */
	if (is_shared(sem))
		rwsem_shared_granted_readers(sem);
	sem->q.nr_readers_waiting = 0;
	sem->q.read_grant_gen++;
	if (sem->q.handoff_to == HANDOFF_READERS) {
		sem->q.handoff_to = HANDOFF_NONE;
		sem->q.nr_handoffs++;
	}
	rwsem_sync_flags(sem);
	atomic_fetch_add_explicit(&sem->read_seq, 1, memory_order_relaxed);
	plan->readers = true;
	return true;
}

/* Hand the free lock to the writer that reserved it. */
static bool grant_writer(struct rw_semaphore *sem, struct wake_plan *plan)
{
	_Atomic uint32_t *state = state_word(sem);
	uint32_t c = atomic_load_explicit(state, memory_order_relaxed);

	do {
		if (c & (RWSEM_LOCK_MASK | RWSEM_FLAG_DEAD))
			return false;	/* readers inside, or backing out: the last one retries */
	} while (!atomic_compare_exchange_weak_explicit(state, &c, c | RWSEM_WRITER_LOCKED,
							memory_order_acquire,
							memory_order_relaxed));
	if (is_shared(sem))
		rwsem_shared_granted_writer(sem);
	sem->q.write_grant = sem->q.handoff_to;
	sem->q.handoff_to = HANDOFF_NONE;
	sem->q.nr_writers_waiting--;
	sem->q.nr_handoffs++;
	rwsem_sync_flags(sem);
	atomic_fetch_add_explicit(&sem->write_seq, 1, memory_order_relaxed);
	plan->writer_ticket = sem->q.write_grant;
	return true;
}

/*
 * The wake decision (the kernel's rwsem_mark_wake()), run whenever the lock
 * may have become available to a queued task.  @after_writer: a writer has
 * just released, so it is the readers' turn even if writers wait.
 */
void rwsem_mark_wake(struct rw_semaphore *sem, bool after_writer, struct wake_plan *plan)
{
	uint32_t c = atomic_load_explicit(state_word(sem), memory_order_relaxed);
	uint32_t nr_r = sem->q.nr_readers_waiting, nr_w = sem->q.nr_writers_waiting;

	if (c & (RWSEM_WRITER_LOCKED | RWSEM_FLAG_DEAD))
		return;		/* that writer's release calls us again */
	/*
	 * After a writer it is the readers' turn, even against a writer's
	 * reservation (which stays, and is served when they leave): otherwise
	 * writers reserving in turn would starve the readers.
	 */
	if (nr_r && (after_writer || sem->q.handoff_to == HANDOFF_READERS ||
		     (nr_w == 0 && sem->q.handoff_to == HANDOFF_NONE))) {
		rwsem_grant_readers(sem, plan);
		return;
	}
	if (sem->q.handoff_to != HANDOFF_NONE && sem->q.handoff_to != HANDOFF_READERS) {
		grant_writer(sem, plan);
		return;
	}
	if (nr_w && !(c & RWSEM_READER_MASK)) {
		atomic_fetch_add_explicit(&sem->write_seq, 1, memory_order_relaxed);
		plan->one_writer = true;
	}
}

/*
 * Take wait_lock, run the wake decision, drop it, wake: 0, or wait_lock()'s
 * error.  Private semaphores only: a shared one's releases decide inside
 * their own section.
 */
static int rwsem_wake(struct rw_semaphore *sem, bool after_writer)
{
	struct wake_plan plan = {0};
	int rc = wait_lock(sem);

	if (rc)
		return rc;
	rwsem_mark_wake(sem, after_writer, &plan);
	wait_unlock(sem);
	rwsem_wake_plan_run(sem, &plan, false);
	return 0;
}

/* A reader count just dropped to @c: the last reader out wakes the queue. */
static inline int reader_left(struct rw_semaphore *sem, uint32_t c)
{
	if (mln_unlikely((c & (RWSEM_LOCK_MASK | RWSEM_FLAG_WAITERS)) == RWSEM_FLAG_WAITERS))
		return rwsem_wake(sem, false);
	return 0;
}

/* Try to take the lock for a task in (or entering) the queue. */
static bool try_acquire_queued(struct rw_semaphore *sem, const struct rwsem_waiter *w)
{
	_Atomic uint32_t *state = state_word(sem);
	uint32_t c = atomic_load_explicit(state, memory_order_relaxed);
	uint32_t fail, add;

	if (w->write) {
		/* A reserved lock is taken only by its reserving writer. */
		if ((c & RWSEM_FLAG_HANDOFF) && !(w->queued && sem->q.handoff_to == w->ticket))
			return false;
		fail = RWSEM_LOCK_MASK | RWSEM_FLAG_DEAD;
		add = RWSEM_WRITER_LOCKED;
	} else {
		/* Writer preference: readers wait while any writer is queued. */
		if (sem->q.nr_writers_waiting)
			return false;
		fail = RWSEM_WRITER_LOCKED | RWSEM_FLAG_HANDOFF | RWSEM_FLAG_DEAD |
		       RWSEM_FLAG_READFAIL;
		add = RWSEM_READER_BIAS;
	}
	do {
		/* A reader must also not overflow the count into READFAIL. */
		if ((c & fail) || ((c + add) & RWSEM_FLAG_READFAIL))
			return false;
		/* A shared state changes under wait_lock only: no locked instruction. */
		if (is_shared(sem)) {
			atomic_store_explicit(state, c + add, memory_order_relaxed);
			return true;
		}
	} while (!atomic_compare_exchange_weak_explicit(state, &c, c + add,
							memory_order_acquire,
							memory_order_relaxed));
	return true;
}

static void enqueue(struct rw_semaphore *sem, struct rwsem_waiter *w, bool write)
{
	w->write = write;
	w->queued = 1;
	w->handoff_at_ns = mln_now_ns() + RWSEM_HANDOFF_NS;
	if (write) {
		/* Tickets are never 0 (no writer) nor HANDOFF_READERS. */
		do {
			w->ticket = ++sem->q.next_ticket;
		} while (w->ticket == HANDOFF_NONE || w->ticket == HANDOFF_READERS);
		sem->q.nr_writers_waiting++;
	} else {
		w->gen = sem->q.read_grant_gen;
		sem->q.nr_readers_waiting++;
	}
	if (is_shared(sem))
		rwsem_shared_enqueued(sem, w);
	rwsem_sync_flags(sem);
}

/*
 * Leave the queue without the lock; the acquisition path already did.  A
 * shared waiter's slot is kept: the caller books the acquisition in it, or
 * gives it back (rwsem_shared_put).
 */
static void dequeue(struct rw_semaphore *sem, struct rwsem_waiter *w)
{
	if (w->write) {
		sem->q.nr_writers_waiting--;
		if (sem->q.handoff_to == w->ticket)
			sem->q.handoff_to = HANDOFF_NONE;
	} else {
		sem->q.nr_readers_waiting--;
		if (sem->q.nr_readers_waiting == 0 && sem->q.handoff_to == HANDOFF_READERS)
			sem->q.handoff_to = HANDOFF_NONE;
	}
	if (is_shared(sem))
		rwsem_shared_dequeued(sem, w);
	w->queued = 0;
	rwsem_sync_flags(sem);
}

/* Was the lock handed to @w by a waker? */
static bool granted(struct rw_semaphore *sem, const struct rwsem_waiter *w)
{
	if (w->write)
		return sem->q.write_grant == w->ticket;
	return sem->q.read_grant_gen != w->gen;
}

static void take_grant(struct rw_semaphore *sem, struct rwsem_waiter *w)
{
	if (w->write)
		sem->q.write_grant = 0;
	w->queued = 0;
}

/*
 * @w has waited past its handoff time: reserve the lock for it unless
 * someone already has.  A reader reserves it only against a writer holding
 * it (readers kept out by a queued writer are not starved: that writer is
 * served, then they are).  Returns true if the reservation was made.
 */
static bool maybe_reserve(struct rw_semaphore *sem, struct rwsem_waiter *w, uint64_t now)
{
	uint32_t c = atomic_load_explicit(state_word(sem), memory_order_relaxed);

	if (now < w->handoff_at_ns)
		return false;
	if (sem->q.handoff_to != HANDOFF_NONE) {
		/*
		 * Someone else's reservation is served first.  Look again later,
		 * so that no waiter loses its clock, but less often: the other
		 * reserver needs the time, and a sleeper should stay asleep.
		 */
		w->handoff_at_ns = now + RWSEM_RESERVED_RECHECK_NS;
		return false;
	}
	if (!w->write && !(c & RWSEM_WRITER_LOCKED)) {
		w->handoff_at_ns = now + RWSEM_HANDOFF_NS;	/* not starved by a writer */
		return false;
	}
	sem->q.handoff_to = w->write ? w->ticket : HANDOFF_READERS;
	if (is_shared(sem))
		rwsem_shared_reserved(sem, w);
	w->handoff_at_ns = MLN_NO_DEADLINE;
	rwsem_sync_flags(sem);
	return true;
}

/* Does the current task hold it for write?  @c is the state word. */
static bool writer_is_me(struct rw_semaphore *sem, uint32_t c)
{
	if (is_shared(sem))
		return rwsem_shared_writer_is_me(sem);
	return (c & RWSEM_WRITER_LOCKED) && atomic_load_explicit(&sem->owner,
								 memory_order_relaxed) ==
						    owner_word(mln_current_task());
}

/*
 * @w's task has the lock (@granted by a waker, or taken itself): book it and
 * drop wait_lock.  0, or -EOWNERDEAD (shared: a write holder had died; the
 * lock is held all the same).  A private semaphore's owner is stored after
 * the unlock, as its fast paths store it: relaxed, by the holder; a shared
 * one's under the wait-lock, where its sections can undo it.
 */
static int acquired(struct rw_semaphore *sem, struct rwsem_waiter *w, bool granted_to_w)
{
	struct wake_plan plan = {0};
	int rc = 0;

	if (is_shared(sem)) {
		rc = rwsem_shared_acquired(sem, w, granted_to_w, &plan);
		wait_unlock(sem);
		rwsem_wake_plan_run(sem, &plan, true);
	} else {
		wait_unlock(sem);
		if (w->write)
			set_writer_owned(sem);
		else
			set_reader_owned(sem, w->non_owner);
	}
	w->acquired = 1;
	w->owner_died = rc == -EOWNERDEAD;
	return rc;
}

/* Release what @w acquired but its caller never saw (rwsem_down_cancel). */
static int release_unseen(struct rw_semaphore *sem, struct rwsem_waiter *w)
{
	w->acquired = 0;
	if (!is_shared(sem))
		return w->write ? up_write(sem) : up_read_non_owner(sem);
	/* The owner-died indication it got is the next writer's to hear. */
	if (w->write)
		return rwsem_shared_up_write(sem, w->owner_died);
	return rwsem_shared_up_read(sem, w->non_owner);
}

/*
 * Leave the queue having given up (@err).  If the lock was granted to us in
 * the meantime we own it: keep it (return 0, or -EOWNERDEAD) as the kernel
 * ignores a signal that comes after the grant, or, for rwsem_down_cancel(),
 * release it.
 */
static int give_up(struct rw_semaphore *sem, struct rwsem_waiter *w, int err, bool release)
{
	struct wake_plan plan = {0};
	int rc = wait_lock(sem);

	if (rc)
		return rc;
	if (!w->queued) {
		wait_unlock(sem);
		return err;
	}
	if (granted(sem, w)) {
		take_grant(sem, w);
		rc = acquired(sem, w, true);
		if (!release)
			return rc;
		release_unseen(sem, w);
		return err;
	}
	dequeue(sem, w);
	if (is_shared(sem))
		rwsem_shared_put(sem, w->slot, &plan);
	rwsem_mark_wake(sem, false, &plan);
	wait_unlock(sem);
	rwsem_wake_plan_run(sem, &plan, is_shared(sem));
	return err;
}

/*
 * Every slot of a shared semaphore is some other process's: sleep until one
 * is given back (rwsem_shared_put wakes the readers' word), looking for dead
 * processes on the way.  Not queued: 0 to try again, or how the wait ends.
 */
static int wait_for_slot(struct rw_semaphore *sem, uint32_t seq, uint64_t deadline_ns,
			 unsigned int flags, uint64_t *poll_at)
{
	uint64_t now = mln_now_ns(), until = now + RWSEM_SCAN_NS;
	int rc;

	if (now >= deadline_ns)
		return -ETIMEDOUT;
	if ((flags & RWSEM_WAIT_KILLABLE) && mln_current_task_killed())
		return -EINTR;
	if (flags & RWSEM_WAIT_SIGNALS) {
		if (!*poll_at)
			*poll_at = now + RWSEM_SIGNAL_POLL_NS;
		else if (now >= *poll_at)
			return RWSEM_WAIT_INTERRUPTED;
		if (*poll_at < until)
			until = *poll_at;
	}
	if (deadline_ns < until)
		until = deadline_ns;
	rwsem_shared_reap_dead(sem);
	rc = mln_futex_wait_until(&sem->read_seq, seq, until, FUTEX_BITSET_MATCH_ANY, true);
	return rc == -EINTR && (flags & RWSEM_WAIT_SIGNALS) ? RWSEM_WAIT_INTERRUPTED : 0;
}

/*
 * The first look of rwsem_down_wait(), wait_lock held: acquired (returns 0
 * or -EOWNERDEAD, unlocked), a misuse or no slot (an error, unlocked), or
 * queued (1, still locked).
 */
static int enter(struct rw_semaphore *sem, struct rwsem_waiter *w, int write, uint64_t deadline_ns,
		 unsigned int flags, uint64_t *poll_at)
{
	for (;;) {
		uint32_t c = atomic_load_explicit(state_word(sem), memory_order_relaxed);
		int rc;

		if (c & RWSEM_FLAG_DEAD) {
			wait_unlock(sem);
			return -EINVAL;
		}
		if (writer_is_me(sem, c)) {
			wait_unlock(sem);
			return -EDEADLK;	/* we would wait for ourselves */
		}
		w->write = write;
		w->queued = 0;
		w->non_owner = !!(flags & RWSEM_WAIT_NON_OWNER);
		if (is_shared(sem)) {
			rc = rwsem_shared_claim(sem);
			if (rc == -ENOSPC) {
				uint32_t seq = atomic_load_explicit(&sem->read_seq,
								    memory_order_relaxed);

				wait_unlock(sem);
				rc = wait_for_slot(sem, seq, deadline_ns, flags, poll_at);
				if (!rc)
					rc = wait_lock_until(sem, deadline_ns, flags);
				if (rc)
					return rc;
				continue;
			}
			if (rc < 0) {
				wait_unlock(sem);
				return rc;
			}
			w->slot = (uint32_t)rc;
		}
		if (try_acquire_queued(sem, w))
			return acquired(sem, w, false);
		enqueue(sem, w, write);
		return 1;
	}
}

int rwsem_down_wait(struct rw_semaphore *sem, struct rwsem_waiter *w, int write,
		    uint64_t deadline_ns, unsigned int flags)
{
	bool shared = is_shared(sem);
	uint64_t poll_at = 0;
	int rc;

	if (!w->queued && mln_unlikely(!magic_ok(sem)))
		return -EINVAL;
	/* Queued, it must get wait_lock to leave: no deadline nor kill then. */
	rc = w->queued ? wait_lock(sem) : wait_lock_until(sem, deadline_ns, flags);
	if (rc)
		return rc;
	if (!w->queued) {
		rc = enter(sem, w, write, deadline_ns, flags, &poll_at);
		if (rc != 1)
			return rc;
	}

	for (;;) {
		_Atomic uint32_t *word = w->write ? &sem->write_seq : &sem->read_seq;
		uint64_t now, sleep_until;
		uint32_t seq;
		bool polling;
		int killed;

		if (granted(sem, w)) {
			take_grant(sem, w);
			return acquired(sem, w, true);
		}
		if (try_acquire_queued(sem, w)) {
			dequeue(sem, w);
			return acquired(sem, w, false);
		}
		now = mln_now_ns();
		if (maybe_reserve(sem, w, now)) {
			struct wake_plan plan = {0};

			/* A reserved free lock is granted now (readers: to the batch). */
			rwsem_mark_wake(sem, false, &plan);
			if (plan.readers || plan.one_writer || plan.writer_ticket) {
				wait_unlock(sem);
				rwsem_wake_plan_run(sem, &plan, shared);
				rc = wait_lock(sem);
				if (rc)
					return rc;
			}
			continue;
		}
		/* Shared: whoever we wait for may have died; someone looks every RWSEM_SCAN_NS. */
		if (shared && rwsem_shared_scan_due(sem, now)) {
			wait_unlock(sem);
			rwsem_shared_reap_dead(sem);
			rc = wait_lock(sem);
			if (rc)
				return rc;
			continue;
		}
		/* Read under wait_lock: any later grant or wake bumps it first. */
		seq = atomic_load_explicit(word, memory_order_relaxed);
		wait_unlock(sem);

		if (now >= deadline_ns)
			return give_up(sem, w, -ETIMEDOUT, false);
		sleep_until = deadline_ns;
		if (w->handoff_at_ns < sleep_until)
			sleep_until = w->handoff_at_ns;	/* wake up to reserve the lock */
		if (shared && now + RWSEM_SCAN_NS < sleep_until)
			sleep_until = now + RWSEM_SCAN_NS;	/* and to look for the dead */
		/*
		 * A signal that lands while we are on our way into the futex
		 * interrupts no system call: the binding's handler would not run
		 * until we wake.  So a signal-aware wait also returns every
		 * RWSEM_SIGNAL_POLL_NS, still queued, to let the handler run.
		 */
		if (flags & RWSEM_WAIT_SIGNALS) {
			if (!poll_at)
				poll_at = now + RWSEM_SIGNAL_POLL_NS;	/* per call, not per sleep */
			else if (now >= poll_at)
				return RWSEM_WAIT_INTERRUPTED;
		}
		polling = poll_at && poll_at < sleep_until;
		if (polling)
			sleep_until = poll_at;

		killed = mln_task_wait_begin(word, shared);
		if (killed && (flags & RWSEM_WAIT_KILLABLE)) {
			mln_task_wait_end();
			return give_up(sem, w, -EINTR, false);
		}
		rc = mln_futex_wait_until(word, seq, sleep_until,
					  w->write ? ticket_bit(w->ticket) : FUTEX_BITSET_MATCH_ANY,
					  shared);
		mln_task_wait_end();
		if ((rc == -EINTR && (flags & RWSEM_WAIT_SIGNALS)) || (rc == -ETIMEDOUT && polling))
			return RWSEM_WAIT_INTERRUPTED;
		rc = wait_lock(sem);
		if (rc)
			return rc;
	}
}

int rwsem_down_cancel(struct rw_semaphore *sem, struct rwsem_waiter *w)
{
	if (w->acquired)	/* the wait succeeded; its caller never saw it */
		return release_unseen(sem, w);
	return give_up(sem, w, 0, true);
}

/* Sleep until acquired, ignoring signals; @flags may add killability. */
static int down_slowpath(struct rw_semaphore *sem, bool write, uint64_t deadline_ns,
			 unsigned int flags)
{
	struct rwsem_waiter w = {0};

	return rwsem_down_wait(sem, &w, write, deadline_ns, flags);
}

/* ------------------------------------------------------------------------
 * Spinning.
 */

/*
 * Bounded optimistic spinning before queueing (the kernel's, within what
 * userspace can know): a sleep and a wake-up cost tens of microseconds of
 * latency and two context switches, while a critical section of the mmap
 * lock is usually far shorter.  Nobody spins on one CPU (the holder could
 * not run), on a reserved lock, or past a deadline: RWSEM_SPIN_NS behind a
 * writer, and behind readers the kernel's rwsem_rspin_threshold(), 10 us
 * plus 0.5 us per reader, at most 25 us.  The kernel also stops when the
 * holder is preempted; userspace cannot see that, so the time bound is the
 * guarantee, and the CPU count comes from the thread's affinity mask (a
 * process pinned to one CPU must not spin).
 */
#define RWSEM_RSPIN_BASE_NS	10000u
#define RWSEM_RSPIN_PER_READER_NS 500u
#define RWSEM_RSPIN_MAX_NS	25000u

static MLN_HOT_TLS _Thread_local int spin_cpus;	/* 0: not looked up yet */

/* How many CPUs the calling thread may run on, looked up once per thread. */
static int allowed_cpus(void)
{
	if (mln_unlikely(!spin_cpus)) {
		cpu_set_t set;

		if (sched_getaffinity(0, sizeof(set), &set) == 0)
			spin_cpus = CPU_COUNT(&set);
		else	/* more CPUs than a cpu_set_t holds: there are plenty */
			spin_cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
		if (spin_cpus < 1)
			spin_cpus = 1;
	}
	return spin_cpus;
}

int rwsem_spin_cpus(void)
{
	return allowed_cpus();
}

/* The spin budget while @c's holders keep it; 0: do not spin on them. */
static uint64_t spin_budget_ns(uint32_t c)
{
	uint32_t readers = (c & RWSEM_READER_MASK) >> RWSEM_READER_SHIFT;
	uint64_t ns;

	if (c & RWSEM_WRITER_LOCKED)
		return RWSEM_SPIN_NS;
	ns = RWSEM_RSPIN_BASE_NS + (uint64_t)readers * RWSEM_RSPIN_PER_READER_NS;
	return ns < RWSEM_RSPIN_MAX_NS ? ns : RWSEM_RSPIN_MAX_NS;
}

/*
 * Spin while @keep_spinning(count) holds, for at most the budget of the
 * holders first seen (the clock is read every 64 turns).  Returns the last
 * count seen, or UINT32_MAX... never: the caller re-tests the count.
 */
static uint32_t spin_while(struct rw_semaphore *sem, bool (*keep_spinning)(uint32_t))
{
	uint64_t start = 0, budget = 0;

	for (unsigned int i = 0;; i++) {
		uint32_t c = atomic_load_explicit(&sem->count, memory_order_relaxed);

		if (!keep_spinning(c))
			return c;
		if ((i & 63) == 0) {
			uint64_t now = mln_now_ns();

			if (!start) {
				start = now;
				budget = spin_budget_ns(c);
			} else if (now - start > budget) {
				return c;
			}
		}
		mln_cpu_relax();
	}
}

/* A writer spins while someone holds the lock and nobody reserved it. */
static bool writer_should_spin(uint32_t c)
{
	return (c & RWSEM_LOCK_MASK) && !(c & (RWSEM_FLAG_HANDOFF | RWSEM_FLAG_DEAD));
}

/* Spin, then take the lock if it came free: true if acquired. */
static bool write_spin(struct rw_semaphore *sem)
{
	if (allowed_cpus() < 2)
		return false;
	for (int tries = 0; tries < 2; tries++) {
		uint32_t c = spin_while(sem, writer_should_spin);

		if (c & (RWSEM_LOCK_MASK | RWSEM_FLAG_HANDOFF | RWSEM_FLAG_DEAD))
			return false;	/* budget spent, or reserved for someone */
		if (atomic_compare_exchange_strong_explicit(&sem->count, &c,
							    c | RWSEM_WRITER_LOCKED,
							    memory_order_acquire,
							    memory_order_relaxed))
			return true;
		/* Lost the race to another acquirer: one more (bounded) round. */
	}
	return false;
}

/*
 * A reader spins only behind a writer that holds the lock while nobody is
 * queued: once a task waits, writer preference makes new readers queue.
 */
static bool reader_should_spin(uint32_t c)
{
	return (c & RWSEM_WRITER_LOCKED) &&
	       !(c & (RWSEM_FLAG_WAITERS | RWSEM_FLAG_HANDOFF | RWSEM_FLAG_DEAD));
}

/* Spin behind a writer, then try once to enter as a reader: true if acquired. */
static bool read_spin(struct rw_semaphore *sem)
{
	uint32_t c;

	if (allowed_cpus() < 2 ||
	    !reader_should_spin(atomic_load_explicit(&sem->count, memory_order_relaxed)))
		return false;
	c = spin_while(sem, reader_should_spin);
	if ((c | (c + RWSEM_READER_BIAS)) & RWSEM_READ_FAILED_MASK)
		return false;
	return atomic_compare_exchange_strong_explicit(&sem->count, &c, c + RWSEM_READER_BIAS,
						       memory_order_acquire, memory_order_relaxed);
}

/* ------------------------------------------------------------------------
 * Readers.
 */

/*
 * The fast path failed: take our speculative bias back out, then queue.
 * Backing out may make us the last "reader" of a lock that a writer waits
 * for, so it is a release like up_read().
 */
int rwsem_down_read_slowpath(struct rw_semaphore *sem, uint64_t deadline_ns, unsigned int flags)
{
	/* Release: pairs like up_read(); we touched no protected data, it is free here. */
	uint32_t c = atomic_fetch_sub_explicit(&sem->count, RWSEM_READER_BIAS,
					       memory_order_release);
	int rc;

	if (mln_unlikely(c & RWSEM_FLAG_SHARED))	/* no holds on count: all in the queue */
		return down_slowpath(sem, false, deadline_ns, flags);
	rc = reader_left(sem, c - RWSEM_READER_BIAS);
	if (mln_unlikely(rc))
		return rc;
	if (read_spin(sem)) {
		set_reader_owned(sem, flags & RWSEM_WAIT_NON_OWNER);
		return 0;
	}
	return down_slowpath(sem, false, deadline_ns, flags);
}

static inline int __down_read(struct rw_semaphore *sem, uint64_t deadline_ns, unsigned int flags)
{
	if (mln_likely(read_fast(sem))) {
		set_reader_owned(sem, flags & RWSEM_WAIT_NON_OWNER);
		return 0;
	}
	return rwsem_down_read_slowpath(sem, deadline_ns, flags);
}

int down_read(struct rw_semaphore *sem)
{
	return __down_read(sem, MLN_NO_DEADLINE, 0);
}

int down_read_killable(struct rw_semaphore *sem)
{
	return __down_read(sem, MLN_NO_DEADLINE, RWSEM_WAIT_KILLABLE);
}

int down_read_timed(struct rw_semaphore *sem, uint64_t deadline_ns)
{
	return __down_read(sem, deadline_ns, 0);
}

int down_read_non_owner(struct rw_semaphore *sem)
{
	return __down_read(sem, MLN_NO_DEADLINE, RWSEM_WAIT_NON_OWNER);
}

/*
 * Never adds a bias it would have to back out, so it never disturbs waiters.
 * A shared semaphore's (SHARED is in the mask) returns 1, 0 or, if @report,
 * -EOWNERDEAD.
 */
static inline int __down_read_trylock(struct rw_semaphore *sem, bool anonymous, bool report)
{
	uint32_t c = atomic_load_explicit(&sem->count, memory_order_relaxed);

	do {
		if ((c | (c + RWSEM_READER_BIAS)) & RWSEM_READ_FAILED_MASK)
			return mln_unlikely(c & RWSEM_FLAG_SHARED)
				       ? rwsem_shared_trylock(sem, false, anonymous, report)
				       : 0;
	} while (!atomic_compare_exchange_weak_explicit(&sem->count, &c, c + RWSEM_READER_BIAS,
							memory_order_acquire,
							memory_order_relaxed));
	set_reader_owned(sem, anonymous);
	return 1;
}

int down_read_trylock(struct rw_semaphore *sem)
{
	return __down_read_trylock(sem, false, true);
}

int down_read_trylock_non_owner(struct rw_semaphore *sem)
{
	return __down_read_trylock(sem, true, true);
}

int rwsem_try_read(struct rw_semaphore *sem)
{
	return __down_read_trylock(sem, false, false);
}

/*
 * A compare-exchange rather than a blind fetch_sub, so that releasing a lock
 * that is not read-held is refused instead of corrupting the count.  With the
 * writer bit set, any reader bias is a transient one of a reader backing out,
 * not a holder's; so it is in a shared semaphore's count, whose holds are
 * all in its queue.
 */
static inline int __up_read(struct rw_semaphore *sem, bool anonymous)
{
	uint32_t c = atomic_load_explicit(&sem->count, memory_order_relaxed);

	do {
		if (mln_unlikely(!(c & RWSEM_READER_MASK) ||
				 (c & (RWSEM_WRITER_LOCKED | RWSEM_FLAG_SHARED))))
			return (c & RWSEM_FLAG_SHARED) ? rwsem_shared_up_read(sem, anonymous)
						       : -EPERM;
	} while (!atomic_compare_exchange_weak_explicit(&sem->count, &c, c - RWSEM_READER_BIAS,
							memory_order_release,
							memory_order_relaxed));
	return reader_left(sem, c - RWSEM_READER_BIAS);
}

int up_read(struct rw_semaphore *sem)
{
	return __up_read(sem, false);
}

int up_read_non_owner(struct rw_semaphore *sem)
{
	return __up_read(sem, true);
}

/* ------------------------------------------------------------------------
 * Writers.
 */

int rwsem_down_write_slowpath(struct rw_semaphore *sem, uint64_t deadline_ns, unsigned int flags)
{
	uint32_t c = atomic_load_explicit(&sem->count, memory_order_relaxed);

	if (mln_unlikely(c & RWSEM_FLAG_SHARED))	/* all in the queue: no spinning */
		return down_slowpath(sem, true, deadline_ns, flags);
	if (mln_unlikely(is_write_owner(sem, c)))
		return -EDEADLK;
	if (write_spin(sem)) {
		set_writer_owned(sem);
		return 0;
	}
	return down_slowpath(sem, true, deadline_ns, flags);
}

static inline int __down_write(struct rw_semaphore *sem, uint64_t deadline_ns, unsigned int flags)
{
	if (mln_likely(write_fast(sem))) {
		set_writer_owned(sem);
		return 0;
	}
	return rwsem_down_write_slowpath(sem, deadline_ns, flags);
}

int down_write(struct rw_semaphore *sem)
{
	return __down_write(sem, MLN_NO_DEADLINE, 0);
}

int down_write_killable(struct rw_semaphore *sem)
{
	return __down_write(sem, MLN_NO_DEADLINE, RWSEM_WAIT_KILLABLE);
}

int down_write_timed(struct rw_semaphore *sem, uint64_t deadline_ns)
{
	return __down_write(sem, deadline_ns, 0);
}

int down_write_nested(struct rw_semaphore *sem, int subclass)
{
	if (subclass < 0 || subclass >= RWSEM_MAX_SUBCLASSES)
		return -EINVAL;
	return __down_write(sem, MLN_NO_DEADLINE, 0);
}

/*
 * Like the kernel's: fails whenever anyone waits, never queues.  A shared
 * semaphore's returns 1, 0 or, if @report, -EOWNERDEAD (acquired all the same).
 */
static inline int __down_write_trylock(struct rw_semaphore *sem, bool report)
{
	if (write_fast(sem)) {
		set_writer_owned(sem);
		return 1;
	}
	if (mln_unlikely(atomic_load_explicit(&sem->count, memory_order_relaxed) &
			 RWSEM_FLAG_SHARED))
		return rwsem_shared_trylock(sem, true, false, report);
	return 0;
}

int down_write_trylock(struct rw_semaphore *sem)
{
	return __down_write_trylock(sem, true);
}

int rwsem_try_write(struct rw_semaphore *sem)
{
	return __down_write_trylock(sem, false);
}

/* The release itself, for a private semaphore's owner. */
static inline int up_write_private(struct rw_semaphore *sem)
{
	uint32_t c;

	/* Cleared before the releasing RMW, so the next writer's store wins. */
	atomic_store_explicit(&sem->owner, 0, memory_order_relaxed);
	c = atomic_fetch_sub_explicit(&sem->count, RWSEM_WRITER_LOCKED, memory_order_release);
	if (mln_unlikely(c & RWSEM_FLAG_WAITERS))
		return rwsem_wake(sem, true);
	return 0;
}

int up_write(struct rw_semaphore *sem)
{
	uint32_t c = atomic_load_explicit(&sem->count, memory_order_relaxed);

	/* is_write_owner()'s private case, which a shared count (SHARED set) fails. */
	if (mln_likely((c & (RWSEM_WRITER_LOCKED | RWSEM_FLAG_SHARED)) == RWSEM_WRITER_LOCKED &&
		       atomic_load_explicit(&sem->owner, memory_order_relaxed) ==
			       owner_word(mln_current_task())))
		return up_write_private(sem);
	return (c & RWSEM_FLAG_SHARED) ? rwsem_shared_up_write(sem, false) : -EPERM;
}

int rwsem_up_write_owned(struct rw_semaphore *sem)
{
	if (mln_unlikely(is_shared(sem)))
		return rwsem_shared_up_write(sem, false);
	return up_write_private(sem);
}

/*
 * Write -> read in one atomic, so no writer can slip in between; then every
 * queued reader is granted (writers stay queued, reserved or not).
 */
int downgrade_write(struct rw_semaphore *sem)
{
	uint32_t c = atomic_load_explicit(&sem->count, memory_order_relaxed);

	if (mln_unlikely((c & (RWSEM_WRITER_LOCKED | RWSEM_FLAG_SHARED)) != RWSEM_WRITER_LOCKED ||
			 atomic_load_explicit(&sem->owner, memory_order_relaxed) !=
				 owner_word(mln_current_task())))
		return (c & RWSEM_FLAG_SHARED) ? rwsem_shared_downgrade(sem) : -EPERM;
	set_reader_owned(sem, false);
	/* Release: the write section happens-before every reader that follows. */
	c = atomic_fetch_add_explicit(&sem->count, RWSEM_READER_BIAS - RWSEM_WRITER_LOCKED,
				      memory_order_release);
	if (c & RWSEM_FLAG_WAITERS) {
		struct wake_plan plan = {0};
		int rc = wait_lock(sem);

		if (rc)
			return rc;
		if (sem->q.nr_readers_waiting)
			rwsem_grant_readers(sem, &plan);
		wait_unlock(sem);
		rwsem_wake_plan_run(sem, &plan, false);
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Life cycle and queries.
 */

int rwsem_init(struct rw_semaphore *sem, unsigned int flags)
{
	if (flags & ~(unsigned int)RWSEM_SHARED)
		return -EINVAL;
	*sem = (struct rw_semaphore)RWSEM_INITIALIZER;
	sem->flags = flags;
	sem->magic = RWSEM_MAGIC;
	if (flags & RWSEM_SHARED) {
		/* Not yet in use: a plain initialisation, as the zeroes above. */
		atomic_init(&sem->count, RWSEM_FLAG_SHARED);
		sem->pid_ns = mln_self()->pid_ns;
	}
	return 0;
}

int init_rwsem(struct rw_semaphore *sem)
{
	return rwsem_init(sem, 0);
}

int rwsem_destroy(struct rw_semaphore *sem)
{
	_Atomic uint32_t *state = state_word(sem);
	int ret = wait_lock(sem);
	uint32_t c;

	if (ret)
		return ret;
	/* Free: 0, or (shared) an owner-died indication that nobody will hear now. */
	c = atomic_load_explicit(state, memory_order_relaxed) & RWSEM_FLAG_OWNER_DIED;
	if (sem->q.nr_readers_waiting || sem->q.nr_writers_waiting ||
	    !atomic_compare_exchange_strong_explicit(state, &c, RWSEM_FLAG_DEAD,
						     memory_order_acquire, memory_order_relaxed))
		ret = (c & RWSEM_FLAG_DEAD) ? -EINVAL : -EBUSY;
	wait_unlock(sem);
	return ret;
}

int rwsem_validate(const struct rw_semaphore *sem, unsigned int flags)
{
	uint32_t wl = atomic_load_explicit(&sem->wait_lock, memory_order_relaxed) & ~MLN_WL_WAITERS;
	uint32_t c = atomic_load_explicit(&sem->count, memory_order_relaxed);
	uint32_t st = atomic_load_explicit(&sem->state, memory_order_relaxed);

	if (sem->magic != RWSEM_MAGIC)
		return (sem->magic & ~0xffu) == RWSEM_MAGIC_BASE ? -EPROTO : -EINVAL;
	if (sem->flags != flags)
		return -ENOTSUP;
	/* Looks only at words whose every legal value is known, racy or not. */
	if (!(flags & RWSEM_SHARED)) {
		if ((c & (RWSEM_FLAG_SHARED | RWSEM_FLAG_OWNER_DIED | RWSEM_RESERVED_MASK)) ||
		    (wl != 0 && wl != MLN_WL_PRIVATE_ID))
			return -EUCLEAN;
		return 0;
	}
	/* Shared: count is SHARED and readers' passing biases; a holder's id names a pid. */
	if (!(c & RWSEM_FLAG_SHARED) ||
	    (c & (RWSEM_LOCK_MASK & ~RWSEM_READER_MASK & ~RWSEM_FLAG_READFAIL)) ||
	    (c & (RWSEM_FLAG_WAITERS | RWSEM_FLAG_HANDOFF | RWSEM_FLAG_DEAD |
		  RWSEM_FLAG_OWNER_DIED | RWSEM_RESERVED_MASK)) ||
	    (st & (RWSEM_FLAG_SHARED | RWSEM_RESERVED_MASK)) ||
	    (wl != 0 && !(wl & MLN_WL_PID_MASK)) ||
	    atomic_load_explicit(&sem->journal_valid, memory_order_relaxed) > 1)
		return -EUCLEAN;
	return 0;
}

/* The state word, whichever mode: a snapshot. */
static uint32_t state_snapshot(struct rw_semaphore *sem)
{
	uint32_t c = atomic_load_explicit(&sem->count, memory_order_relaxed);

	if (mln_unlikely(c & RWSEM_FLAG_SHARED))
		return atomic_load_explicit(&sem->state, memory_order_relaxed);
	return c;
}

int rwsem_is_locked(struct rw_semaphore *sem)
{
	return (state_snapshot(sem) & RWSEM_LOCK_MASK) != 0;
}

int rwsem_is_write_locked(struct rw_semaphore *sem)
{
	return (state_snapshot(sem) & RWSEM_WRITER_LOCKED) != 0;
}

/* As the kernel's: a heuristic for a holder wondering whether to back off. */
int rwsem_is_contended(struct rw_semaphore *sem)
{
	return (state_snapshot(sem) & RWSEM_FLAG_WAITERS) != 0;
}

uint64_t rwsem_write_owner(struct rw_semaphore *sem)
{
	uint64_t o = atomic_load_explicit(&sem->owner, memory_order_relaxed);

	if (!rwsem_is_write_locked(sem) || (o & RWSEM_OWNER_READER))
		return 0;
	return owner_task(o);
}

/* A shared semaphore's is `state`, the word its queue works on (count is only SHARED). */
uint32_t rwsem_count(struct rw_semaphore *sem)
{
	return state_snapshot(sem);
}

uint64_t rwsem_owner_word(struct rw_semaphore *sem)
{
	return atomic_load_explicit(&sem->owner, memory_order_relaxed);
}

uint32_t rwsem_magic_word(const struct rw_semaphore *sem)
{
	return sem->magic;
}

int rwsem_queue_info(struct rw_semaphore *sem, uint32_t *readers, uint32_t *writers,
		     uint64_t *handoffs)
{
	int rc = wait_lock_until(sem, mln_now_ns() + RWSEM_QUERY_WAIT_NS, 0);

	if (rc)
		return rc;
	*readers = sem->q.nr_readers_waiting;
	*writers = sem->q.nr_writers_waiting;
	*handoffs = sem->q.nr_handoffs;
	wait_unlock(sem);
	return 0;
}

uint64_t rwsem_now_ns(void)
{
	return mln_now_ns();
}
