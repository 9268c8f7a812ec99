/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_trace.c - the settable tracepoint hooks.
 *
 * Two copies of the hook set alternate: a setter fills the one not in use,
 * publishes it, and waits until no thread still runs a hook of the old one,
 * as the kernel's tracepoint_synchronize_unregister() does.  The wait is a
 * small sleepable-RCU: a caller counts itself in the reader count of the
 * current generation's parity before it loads the set; a setter publishes
 * the new set, then drains both counts, one before and one after flipping
 * the parity, so a stream of new callers cannot starve it.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>

#include "futex.h"
#include "mmap_lock_internal.h"
#include "mmap_lock_stats_impl.h"
#include "rwsem_internal.h"
#include "mmap_lock_trace.h"

_Atomic uint32_t mmap_lock_hooks_on;

/*
 * The list of initialised mms, and its lock, also taken to publish a hook
 * change: a hook change and an mm's registration are ordered by it, so every
 * mm ends with TRACE set exactly when hooks are set.  Setters are serialised
 * by a lock of their own, held while they wait out the old set's callers;
 * the list lock is not held then, so a hook may make or free an mm (a
 * binding's garbage collector may, in any hook) while a setter waits.
 */
static struct mm_struct *mm_list;
static uint64_t mm_ids;
static _Atomic uint32_t hooks_set_lock;
static _Atomic uint32_t hooks_setter_lock;

/* Hooks the calling thread is running now: a setter there would wait for itself. */
static MLN_HOT_TLS _Thread_local unsigned int in_hook;

static struct mmap_lock_trace_hooks hook_sets[2];
static const struct mmap_lock_trace_hooks *_Atomic hooks_cur;
static _Atomic uint32_t hooks_gen;
static _Atomic uint32_t hooks_readers[2];

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
	in_hook++;
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
	in_hook--;
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

/* Relaxed: the bit only routes calls to the hooked path, which reads hooks_cur itself. */
static void set_trace_bit(struct mm_struct *mm, bool on)
{
	if (on)
		atomic_fetch_or_explicit(&mm->mmap_lock_instr, MMAP_LOCK_INSTR_TRACE,
					 memory_order_relaxed);
	else
		atomic_fetch_and_explicit(&mm->mmap_lock_instr, ~MMAP_LOCK_INSTR_TRACE,
					  memory_order_relaxed);
}

/*
 * A process-shared mm is never listed: its links would be this process's
 * pointers in memory other processes see.  Trace hooks and the recorder do
 * not see such mms (their calls take the plain path).  A destroyed mm is not
 * listed again: it may be freed at any time.
 */
static bool listable(const struct mm_struct *mm)
{
	return !(mm->mmap_lock.flags & RWSEM_SHARED) &&
	       !(atomic_load_explicit(&mm->mmap_lock.count, memory_order_relaxed) &
		 RWSEM_FLAG_DEAD);
}

void mmap_lock_register(struct mm_struct *mm)
{
	mln_mutex_lock(&hooks_set_lock, 0);
	if (mm->mmap_lock.flags & RWSEM_SHARED) {
		atomic_fetch_and_explicit(&mm->mmap_lock_instr, ~MMAP_LOCK_INSTR_UNREGISTERED,
					  memory_order_relaxed);
	} else if (listable(mm) &&
		   (atomic_load_explicit(&mm->mmap_lock_instr, memory_order_relaxed) &
		    MMAP_LOCK_INSTR_UNREGISTERED)) {
		mm->mmap_lock_reg_prev = NULL;
		mm->mmap_lock_reg_next = mm_list;
		if (mm_list)
			mm_list->mmap_lock_reg_prev = mm;
		mm_list = mm;
		mm->mmap_lock_id = ++mm_ids;
		set_trace_bit(mm, atomic_load_explicit(&mmap_lock_hooks_on,
						       memory_order_relaxed));
		atomic_fetch_and_explicit(&mm->mmap_lock_instr, ~MMAP_LOCK_INSTR_UNREGISTERED,
					  memory_order_relaxed);
	}
	mln_mutex_unlock(&hooks_set_lock, 0);
}

void mmap_lock_unregister(struct mm_struct *mm)
{
	mln_mutex_lock(&hooks_set_lock, 0);
	if (!(mm->mmap_lock.flags & RWSEM_SHARED) &&
	    !(atomic_load_explicit(&mm->mmap_lock_instr, memory_order_relaxed) &
	      MMAP_LOCK_INSTR_UNREGISTERED)) {
		if (mm->mmap_lock_reg_prev)
			mm->mmap_lock_reg_prev->mmap_lock_reg_next = mm->mmap_lock_reg_next;
		else
			mm_list = mm->mmap_lock_reg_next;
		if (mm->mmap_lock_reg_next)
			mm->mmap_lock_reg_next->mmap_lock_reg_prev = mm->mmap_lock_reg_prev;
		atomic_fetch_or_explicit(&mm->mmap_lock_instr, MMAP_LOCK_INSTR_UNREGISTERED,
					 memory_order_relaxed);
	}
	mln_mutex_unlock(&hooks_set_lock, 0);
}

/*
 * fork(): the list must not be mid-update, so the forking thread holds its
 * lock across the fork.  In the child only the forking thread exists: the
 * counts of calls in flight on other threads (hook callers, recorder
 * emitters) and the statistics' locks they held are void there.  (fork()
 * from inside a trace hook is not supported: its own count would be lost.)
 */
static void hooks_atfork_prepare(void)
{
	mln_mutex_lock(&hooks_setter_lock, 0);
	mln_mutex_lock(&hooks_set_lock, 0);
}

static void hooks_atfork_parent(void)
{
	mln_mutex_unlock(&hooks_set_lock, 0);
	mln_mutex_unlock(&hooks_setter_lock, 0);
}

static void hooks_atfork_child(void)
{
	atomic_store_explicit(&hooks_readers[0], 0, memory_order_relaxed);
	atomic_store_explicit(&hooks_readers[1], 0, memory_order_relaxed);
	for (struct mm_struct *mm = mm_list; mm; mm = mm->mmap_lock_reg_next) {
		atomic_store_explicit(&mm->mmap_lock_rec_inflight, 0, memory_order_relaxed);
		mmap_lock_stats_atfork_child(mm);
	}
	atomic_store_explicit(&hooks_set_lock, 0, memory_order_relaxed);
	atomic_store_explicit(&hooks_setter_lock, 0, memory_order_relaxed);
	in_hook = 0;
}

__attribute__((constructor)) static void hooks_module_init(void)
{
	pthread_atfork(hooks_atfork_prepare, hooks_atfork_parent, hooks_atfork_child);
}

int mmap_lock_set_trace_hooks(const struct mmap_lock_trace_hooks *hooks)
{
#ifdef MMAP_LOCK_NO_TRACE
	(void)hooks;
	return -ENOTSUP;
#else
	const struct mmap_lock_trace_hooks *next = NULL;
	uint32_t g;

	if (in_hook)
		return -EDEADLK;	/* a hook changing the hooks would wait for itself */
	mln_mutex_lock(&hooks_setter_lock, 0);
	mln_mutex_lock(&hooks_set_lock, 0);
	if (hooks && (hooks->start_locking || hooks->acquire_returned || hooks->released)) {
		const struct mmap_lock_trace_hooks *cur =
			atomic_load_explicit(&hooks_cur, memory_order_relaxed);
		struct mmap_lock_trace_hooks *slot = cur == &hook_sets[0] ? &hook_sets[1]
									  : &hook_sets[0];

		*slot = *hooks;		/* unused: the last set waited out its readers */
		next = slot;
	}
	mln_store_before_load(&hooks_cur, next);
	atomic_store_explicit(&mmap_lock_hooks_on, next != NULL, memory_order_relaxed);
	for (struct mm_struct *mm = mm_list; mm; mm = mm->mmap_lock_reg_next)
		set_trace_bit(mm, next != NULL);
	mln_mutex_unlock(&hooks_set_lock, 0);
	/*
	 * Wait out every caller that may still use an older set.  Such a caller
	 * counted itself (SC) before loading the set pointer, hence before the
	 * store above, so the reads below see its count, in whichever parity
	 * it chose (a caller that read the generation long ago may count in
	 * either).  To bound the waits under a stream of new callers: first
	 * drain the idle parity, which only such stale callers use, then flip,
	 * so that new callers move to the drained one, and drain the other.
	 */
	g = atomic_load_explicit(&hooks_gen, memory_order_seq_cst);
	wait_readers((g + 1) & 1);
	mln_store_before_load(&hooks_gen, g + 1);
	wait_readers(g & 1);
	mln_mutex_unlock(&hooks_setter_lock, 0);
	return 0;
#endif
}

int mmap_lock_trace_enabled(void)
{
	return atomic_load_explicit(&mmap_lock_hooks_on, memory_order_relaxed) != 0;
}
