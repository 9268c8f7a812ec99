/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_stats_impl.h - the statistics' storage and the inline updates
 * the lock fast paths make.  Not a public header (mmap_lock_stats.h is).
 *
 * Each thread that uses an mm gets its own block of counters in that mm
 * (struct mmap_lock_stat_slot), found through its thread number
 * (thread_index.h), and
 * is the only writer of that block: an update is a relaxed load and a
 * relaxed store, no read-modify-write, and no cache line written by two
 * threads.  Readers (mmap_lock_stats_read) sum the blocks with relaxed
 * loads; a value read while its thread updates it is the old or the new one.
 * A thread number outlives nothing: it returns to the pool when its thread
 * exits and the next thread to take it keeps adding to the same blocks,
 * which is right for cumulative counters.  Threads beyond MLN_THREAD_SLOTS
 * share one overflow block, updated with atomic read-modify-writes.
 *
 * Reset does not write the blocks (their owners do, without RMW, so a
 * concurrent zeroing could be lost): it records a baseline to subtract.
 * Only max_wait_ns cannot be subtracted; it carries the epoch of the reset
 * it belongs to and its owner restarts it when the epoch moved.
 */
#ifndef MLN_MMAP_LOCK_STATS_IMPL_H
#define MLN_MMAP_LOCK_STATS_IMPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "futex.h"
#include "mm_types.h"
#include "mmap_lock_internal.h"
#include "mmap_lock_stats.h"
#include "thread_index.h"

#define MLN_STAT_SHARED (1ull << 63)

struct mmap_lock_stat_slot {
	/* First cache line: all the fast path touches. */
	_Atomic uint64_t acquisitions[2];
	/*
	 * Sample a hold when (acquisitions & hold_mask) == 0.  Bit 63 is
	 * MLN_STAT_SHARED, set in the overflow block, whose updates are RMWs:
	 * one load tells the fast path both.
	 */
	_Atomic uint64_t hold_mask;
	bool shared;			/* == (hold_mask & MLN_STAT_SHARED), for the slow paths */

	_Atomic uint64_t contended[2];
	_Atomic uint64_t trylock_failures[2];
	_Atomic uint64_t killable_failures[2];
	_Atomic uint64_t timeouts[2];
	_Atomic uint64_t downgrades;
	_Atomic uint64_t wait_ns_total[2];
	_Atomic uint64_t hold_ns_total[2];
	_Atomic uint64_t hold_samples[2];
	_Atomic uint64_t max_wait_ns;
	_Atomic uint64_t max_wait_epoch;
	_Atomic uint64_t wait_hist[2][MMAP_LOCK_HIST_BUCKETS];
	_Atomic uint64_t hold_hist[2][MMAP_LOCK_HIST_BUCKETS];
	/*
	 * The thread's own read holds, for refusing a write acquisition that
	 * would wait for itself (mmap_lock_stat_holds_read): holds are
	 * acquisitions[0] + downgrades - nonowner_reads - read_releases.
	 */
	_Atomic uint64_t nonowner_reads;	/* read acquisitions another task may release */
	_Atomic uint64_t read_releases;		/* releases of owned read holds */
	/* The designs' own counters (see mmap_lock_stats_snapshot). */
	_Atomic uint64_t vma_lock[4];
	_Atomic uint64_t bravo_fast_reads;
	_Atomic uint64_t bravo_revocations;
	_Atomic uint64_t bravo_inhibit_ns;
} __attribute__((aligned(64)));

struct mmap_lock_stats {
	_Atomic uint64_t epoch;		/* bumped by each reset */
	_Atomic uint32_t hold_shift;	/* log2 of the hold sampling period */
	_Atomic uint32_t lock;		/* futex mutex: base, slot creation */
	struct mmap_lock_stats_snapshot base;	/* raw sums at the last reset */
	/* By thread number: [0] stays NULL (no number yet), then the private blocks, then the overflow. */
	struct mmap_lock_stat_slot *_Atomic slot[MLN_THREAD_OVERFLOW + 1];
};

/* The calling thread's one hold-time sample in progress. */
struct mln_hold_sample {
	const struct mm_struct *mm;	/* NULL: none */
	uint64_t mm_id;			/* mm->mmap_lock_id: not a later mm at that address */
	uint64_t task;			/* the task that holds it (an embedder may switch) */
	uint64_t start_ns;
	int write;
};
extern MLN_HOT_TLS _Thread_local struct mln_hold_sample mln_hold_sample;

/* Out of line: first use by this thread or of this mm; NULL if out of memory. */
struct mmap_lock_stat_slot *mmap_lock_stat_slot_slow(struct mm_struct *mm);
void mmap_lock_stat_hold_begin(struct mm_struct *mm, int write);
void mmap_lock_stat_hold_end(struct mm_struct *mm, int write);
void mmap_lock_stat_contended(struct mm_struct *mm, int write, uint64_t wait_ns, bool owned);
void mmap_lock_stat_failed(struct mm_struct *mm, int write, int err, int trylock,
			   uint64_t wait_ns);
void mmap_lock_stat_downgrade(struct mm_struct *mm);
void mmap_lock_stats_free(struct mm_struct *mm);
void mmap_lock_stats_atfork_child(struct mm_struct *mm);

static inline struct mmap_lock_stat_slot *mmap_lock_stat_slot(struct mm_struct *mm)
{
	unsigned int t = mln_thread_index_tls;	/* 0 (no number yet) finds NULL */
	/* Acquire: the block was zeroed before its pointer was published. */
	struct mmap_lock_stats *st = atomic_load_explicit(&mm->mmap_lock_stats,
							  memory_order_acquire);

	if (mln_likely(st)) {
		struct mmap_lock_stat_slot *s =
			atomic_load_explicit(&st->slot[t], memory_order_acquire);

		if (mln_likely(s))
			return s;
	}
	return mmap_lock_stat_slot_slow(mm);
}

/* Add @n to a counter of @s, whose only writer is the calling thread. */
static inline uint64_t mmap_lock_stat_add(struct mmap_lock_stat_slot *s, _Atomic uint64_t *c,
					  uint64_t n)
{
	uint64_t v;

	if (mln_unlikely(s->shared))
		return atomic_fetch_add_explicit(c, n, memory_order_relaxed) + n;
	v = atomic_load_explicit(c, memory_order_relaxed) + n;
	atomic_store_explicit(c, v, memory_order_relaxed);
	return v;
}

/*
 * An acquisition succeeded (its wait, if any, is already counted); @s is the
 * calling thread's block, looked up before the acquiring atomic so that its
 * dependent loads overlap with it instead of following it.
 */
static inline void mmap_lock_stat_acquired_in(struct mm_struct *mm,
					      struct mmap_lock_stat_slot *s, int write, bool owned)
{
	uint64_t n, mask;

	if (mln_unlikely(!s))
		return;
	mask = atomic_load_explicit(&s->hold_mask, memory_order_relaxed);
	if (mln_unlikely(mask & MLN_STAT_SHARED)) {
		n = atomic_fetch_add_explicit(&s->acquisitions[write], 1, memory_order_relaxed) + 1;
	} else {
		n = atomic_load_explicit(&s->acquisitions[write], memory_order_relaxed) + 1;
		atomic_store_explicit(&s->acquisitions[write], n, memory_order_relaxed);
	}
	/* A non-owner hold ends on another thread: it cannot be timed from here. */
	if (mln_unlikely(!(n & mask)) && owned)
		mmap_lock_stat_hold_begin(mm, write);
	if (mln_unlikely(!owned))
		mmap_lock_stat_add(s, &s->nonowner_reads, 1);
}

/* @owned: false for a non-owner acquisition, whose hold another thread ends. */
static inline void mmap_lock_stat_acquired(struct mm_struct *mm, int write, bool owned)
{
	mmap_lock_stat_acquired_in(mm, mmap_lock_stat_slot(mm), write, owned);
}

/* Called on every release of @mm, statistics on or off, so no sample goes stale. */
static inline void mmap_lock_stat_released(struct mm_struct *mm, int write)
{
	if (mln_unlikely(mln_hold_sample.mm == mm))
		mmap_lock_stat_hold_end(mm, write);
}

/* The calling thread's block of @mm if it has one of its own (no allocation). */
static inline struct mmap_lock_stat_slot *mmap_lock_stat_own_slot(struct mm_struct *mm)
{
	unsigned int t = mln_thread_index_tls;
	struct mmap_lock_stats *st = atomic_load_explicit(&mm->mmap_lock_stats,
							  memory_order_acquire);
	struct mmap_lock_stat_slot *s;

	if (!st)
		return NULL;
	s = atomic_load_explicit(&st->slot[t], memory_order_acquire);
	return s && !s->shared ? s : NULL;
}

/*
 * An owned read hold was released (successfully).  Counted whether the
 * statistics are on or not, so that holds taken while they were on are
 * not taken for still held once they go off.
 */
static inline void mmap_lock_stat_read_released(struct mm_struct *mm)
{
	struct mmap_lock_stat_slot *s = mmap_lock_stat_own_slot(mm);

	if (s)
		atomic_store_explicit(&s->read_releases,
				      atomic_load_explicit(&s->read_releases, memory_order_relaxed) + 1,
				      memory_order_relaxed);
}

/*
 * Whether the calling thread holds @mm for read (through the mmap API, as
 * its statistics counted it): a write acquisition would wait for itself.
 * False when it cannot tell: statistics off at the acquisition, or a
 * thread sharing the overflow block.
 */
static inline bool mmap_lock_stat_holds_read(struct mm_struct *mm)
{
	struct mmap_lock_stat_slot *s = mmap_lock_stat_own_slot(mm);

	if (!s)
		return false;
	return atomic_load_explicit(&s->acquisitions[0], memory_order_relaxed) +
		       atomic_load_explicit(&s->downgrades, memory_order_relaxed) >
	       atomic_load_explicit(&s->nonowner_reads, memory_order_relaxed) +
		       atomic_load_explicit(&s->read_releases, memory_order_relaxed);
}

/* The calling thread's block when @mm's statistics are on, else NULL. */
static inline struct mmap_lock_stat_slot *mmap_lock_stat_slot_if_on(struct mm_struct *mm)
{
	if (atomic_load_explicit(&mm->mmap_lock_instr, memory_order_relaxed) &
	    MMAP_LOCK_INSTR_NOSTATS)
		return NULL;
	return mmap_lock_stat_slot(mm);
}

static inline unsigned int mmap_lock_hist_bucket(uint64_t ns)
{
	unsigned int b;

	if (ns < 2)
		return 0;
	b = 63u - (unsigned int)__builtin_clzll(ns);
	return b < MMAP_LOCK_HIST_BUCKETS ? b : MMAP_LOCK_HIST_BUCKETS - 1;
}

#endif /* MLN_MMAP_LOCK_STATS_IMPL_H */
