/* SPDX-License-Identifier: MIT */
/*
 * wait_lock.h - the rw_semaphore's wait-lock: a futex mutex whose waits are
 * all bounded.
 *
 * The word is 0 when free, otherwise the holder's id, with MLN_WL_WAITERS set
 * once a task sleeps on it, so that the unlocker knows to wake one
 * (Drepper's "held with sleepers", as a bit beside the id).  The id is 1 for
 * any holder of a process-private semaphore; in a process-shared one it
 * names the holder's process (mln_wl_shared_id), so that a waiter can take
 * the lock over from a holder that died inside it: mln_wait_lock() then
 * returns MLN_WL_TOOK_OVER, and the caller repairs what the dead holder left
 * half done (rwsem_shared.c rolls its section back).
 *
 * Unlike the registry mutex of futex.h, this one lives in a caller's memory,
 * possibly mapped by other processes, so it may hold anything: a word that no
 * holder can have written is reported (-EINVAL) rather than waited on, every
 * sleep has a timeout after which the waiter looks again, and a waiter with a
 * deadline or a killable one gives up when the deadline passes or the task is
 * killed.  A caller without either waits as long as a holder holds the lock,
 * which a holder does only inside the rwsem's code.
 */
#ifndef MLN_WAIT_LOCK_H
#define MLN_WAIT_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "futex.h"
#include "process.h"

#define MLN_WL_WAITERS		(1u << 31)
/* The id of every holder of a process-private wait-lock. */
#define MLN_WL_PRIVATE_ID	1u
/*
 * A shared holder's id: its pid (below 2^22, the kernel's PID_MAX_LIMIT) and
 * the low 9 bits of its start time, so that a pid reused by a new process
 * within the time a dead holder goes unnoticed is told from the dead one
 * (unless both started a multiple of 512 ticks apart: docs/design.md).
 */
#define MLN_WL_PID_MASK		((1u << 22) - 1)
#define MLN_WL_TAG_SHIFT	22
#define MLN_WL_TAG_MASK		0x1ffu
/*
 * Longest single sleep: a waiter looks at its deadline and its kill this
 * often, and (shared) whether the holder it waits for is still alive.
 */
#define MLN_WL_SLICE_NS		20000000ull
/* mln_wait_lock(): held, taken over from a holder that died holding it. */
#define MLN_WL_TOOK_OVER	1

static inline uint32_t mln_wl_shared_id(const struct mln_process *p)
{
	return (p->pid & MLN_WL_PID_MASK) | ((p->start & MLN_WL_TAG_MASK) << MLN_WL_TAG_SHIFT);
}

/*
 * The slow path of mln_wait_lock(): 0 once held, MLN_WL_TOOK_OVER once held
 * after its holder died in it (@shared only), -ETIMEDOUT when @deadline_ns
 * passes first, -EINTR when @killable and the current task is killed first,
 * -EINVAL when the word holds no id a holder could have written (the memory
 * holds no semaphore, or a corrupted one).
 */
int mln_wait_lock_slow(_Atomic uint32_t *m, uint32_t id, bool shared, uint64_t deadline_ns,
		       bool killable);

static inline int mln_wait_lock(_Atomic uint32_t *m, uint32_t id, bool shared,
				uint64_t deadline_ns, bool killable)
{
	uint32_t c = 0;

	/* Acquire: the section's data were released by the last unlock. */
	if (mln_likely(atomic_compare_exchange_strong_explicit(m, &c, id, memory_order_acquire,
							      memory_order_relaxed)))
		return 0;
	return mln_wait_lock_slow(m, id, shared, deadline_ns, killable);
}

static inline void mln_wait_unlock(_Atomic uint32_t *m, bool shared)
{
	/* Release: publishes the section's writes to the next holder. */
	if (atomic_exchange_explicit(m, 0, memory_order_release) & MLN_WL_WAITERS)
		mln_futex_wake(m, 1, FUTEX_BITSET_MATCH_ANY, shared);
}

#endif /* MLN_WAIT_LOCK_H */
