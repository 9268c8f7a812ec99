/* SPDX-License-Identifier: MIT */
/*
 * wait_lock.c - the slow path of the rw_semaphore's wait-lock (wait_lock.h).
 */
#include <errno.h>

#include "task_internal.h"
#include "wait_lock.h"

/* The wait-lock guards sections of a few dozen instructions: spin a little first. */
#define MLN_WL_SPINS 100

/* A word a holder of this flavour could have written? */
static bool holder_valid(uint32_t holder, bool shared)
{
	return shared ? (holder & MLN_WL_PID_MASK) != 0 : holder == MLN_WL_PRIVATE_ID;
}

/* A shared holder's process is gone (its pid and start-time tag say which). */
static bool holder_dead(uint32_t holder)
{
	return !mln_process_alive(holder & MLN_WL_PID_MASK, holder >> MLN_WL_TAG_SHIFT,
				  MLN_WL_TAG_MASK);
}

int mln_wait_lock_slow(_Atomic uint32_t *m, uint32_t id, bool shared, uint64_t deadline_ns,
		       bool killable)
{
	uint32_t seen = 0;	/* the holder we have been waiting for ... */
	uint64_t seen_at = 0;	/* ... since then */

	for (int i = 0; i < MLN_WL_SPINS; i++) {
		uint32_t c = atomic_load_explicit(m, memory_order_relaxed);

		/* Acquire, as in mln_wait_lock(). */
		if (c == 0 && atomic_compare_exchange_weak_explicit(m, &c, id,
								    memory_order_acquire,
								    memory_order_relaxed))
			return 0;
		mln_cpu_relax();
	}
	for (;;) {
		uint32_t c = atomic_load_explicit(m, memory_order_relaxed);
		uint32_t holder = c & ~MLN_WL_WAITERS;
		uint64_t now, until;

		if (c == 0) {
			/*
			 * Others may sleep here (we cannot tell), so take it with
			 * the waiters bit: the unlock then wakes one of them.
			 */
			if (atomic_compare_exchange_strong_explicit(m, &c, id | MLN_WL_WAITERS,
								    memory_order_acquire,
								    memory_order_relaxed))
				return 0;
			continue;
		}
		if (!holder_valid(holder, shared))
			return -EINVAL;		/* no holder writes that */
		/* Announce a sleeper; the unlocker's exchange then returns the bit. */
		if (!(c & MLN_WL_WAITERS) &&
		    !atomic_compare_exchange_strong_explicit(m, &c, c | MLN_WL_WAITERS,
							     memory_order_relaxed,
							     memory_order_relaxed))
			continue;
		now = mln_now_ns();
		/*
		 * One holder for a whole slice, where sections last microseconds:
		 * if its process is gone, it died inside (another thread of ours
		 * is alive by definition).  Take the lock over from that word
		 * only: a CAS from it fails if anyone else got there first.
		 */
		if (holder != seen) {
			seen = holder;
			seen_at = now;
		} else if (shared && holder != id && now - seen_at >= MLN_WL_SLICE_NS) {
			seen_at = now;
			c |= MLN_WL_WAITERS;
			/* Acquire: the dead holder's writes, seen through its death (docs/design.md). */
			if (holder_dead(holder) &&
			    atomic_compare_exchange_strong_explicit(m, &c, id | MLN_WL_WAITERS,
								    memory_order_acquire,
								    memory_order_relaxed))
				return MLN_WL_TOOK_OVER;
			continue;
		}
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		if (killable && mln_current_task_killed())
			return -EINTR;
		until = now + MLN_WL_SLICE_NS < deadline_ns ? now + MLN_WL_SLICE_NS : deadline_ns;
		mln_futex_wait_until(m, c | MLN_WL_WAITERS, until, FUTEX_BITSET_MATCH_ANY, shared);
	}
}
