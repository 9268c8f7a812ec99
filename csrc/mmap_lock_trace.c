/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_trace.c - the settable tracepoint hooks.
 *
 * Two copies of the hook set alternate: a setter fills the one not in use,
 * publishes it, and waits until no thread still runs a hook of the old one,
 * as the kernel's tracepoint_synchronize_unregister() does.  The wait is a
 * small sleepable-RCU: a caller counts itself in the reader count of the
 * current generation's parity, so a setter waits only for callers that may
 * have seen the old set, and a stream of new callers cannot starve it.
 */
#include <errno.h>
#include <sched.h>
#include <stddef.h>

#include "futex.h"
#include "mmap_lock_internal.h"
#include "mmap_lock_trace.h"

_Atomic uint32_t mmap_lock_hooks_on;

static struct mmap_lock_trace_hooks hook_sets[2];
static const struct mmap_lock_trace_hooks *_Atomic hooks_cur;
static _Atomic uint32_t hooks_gen;
static _Atomic uint32_t hooks_readers[2];
static _Atomic uint32_t hooks_set_lock;

void mmap_lock_hooks_fire(struct mm_struct *mm, int event, bool write, bool success)
{
	uint32_t g = atomic_load_explicit(&hooks_gen, memory_order_relaxed) & 1;
	const struct mmap_lock_trace_hooks *h;

	/*
	 * Sequentially consistent, pairing with the setter's exchange and
	 * counter read: either the setter sees this count, or this load
	 * sees the new set.
	 */
	atomic_fetch_add_explicit(&hooks_readers[g], 1, memory_order_seq_cst);
	h = atomic_load_explicit(&hooks_cur, memory_order_seq_cst);
	if (h) {
		switch (event) {
		case MMAP_LOCK_EV_START_LOCKING:
			if (h->start_locking)
				h->start_locking(mm, write, h->arg);
			break;
		case MMAP_LOCK_EV_ACQUIRE_RETURNED:
			if (h->acquire_returned)
				h->acquire_returned(mm, write, success, h->arg);
			break;
		default:
			if (h->released)
				h->released(mm, write, h->arg);
			break;
		}
	}
	/* Release: our reads of the set happen before the setter reuses it. */
	atomic_fetch_sub_explicit(&hooks_readers[g], 1, memory_order_release);
}

static void wait_readers(uint32_t parity)
{
	for (unsigned int i = 0; atomic_load_explicit(&hooks_readers[parity],
						      memory_order_seq_cst); i++) {
		if (i < 100)
			mln_cpu_relax();
		else
			sched_yield();
	}
}

int mmap_lock_set_trace_hooks(const struct mmap_lock_trace_hooks *hooks)
{
#ifdef MMAP_LOCK_NO_TRACE
	(void)hooks;
	return -ENOTSUP;
#else
	const struct mmap_lock_trace_hooks *next = NULL;
	uint32_t g;

	mln_mutex_lock(&hooks_set_lock, 0);
	if (hooks && (hooks->start_locking || hooks->acquire_returned || hooks->released)) {
		const struct mmap_lock_trace_hooks *cur =
			atomic_load_explicit(&hooks_cur, memory_order_relaxed);
		struct mmap_lock_trace_hooks *slot = cur == &hook_sets[0] ? &hook_sets[1]
									  : &hook_sets[0];

		*slot = *hooks;		/* unused: the last set waited out its readers */
		next = slot;
	}
	atomic_store_explicit(&hooks_cur, next, memory_order_seq_cst);
	atomic_store_explicit(&mmap_lock_hooks_on, next != NULL, memory_order_relaxed);
	/*
	 * Flip the parity and wait out the old one's callers: any that saw the
	 * old set counted itself there before loading it (both SC); callers
	 * arriving from now on count in the new parity and see the new set.
	 */
	g = atomic_fetch_add_explicit(&hooks_gen, 1, memory_order_seq_cst);
	wait_readers(g & 1);
	mln_mutex_unlock(&hooks_set_lock, 0);
	return 0;
#endif
}

int mmap_lock_trace_enabled(void)
{
	return atomic_load_explicit(&mmap_lock_hooks_on, memory_order_relaxed) != 0;
}
