/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_stats.c - per-mm lock statistics: the out-of-line half (first
 * use, hold-time samples, contended acquisitions, failures), reading and
 * resetting.  The storage scheme is explained in mmap_lock_stats_impl.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "futex.h"
#include "mmap_lock_internal.h"
#include "mmap_lock_stats.h"
#include "mmap_lock_stats_impl.h"
#include "rwsem.h"
#include "rwsem_internal.h"

_Static_assert(MMAP_LOCK_HIST_BUCKETS == 40, "the cffi declaration spells the bucket count out");

MLN_HOT_TLS _Thread_local struct mln_hold_sample mln_hold_sample;

/* ------------------------------------------------------------------------
 * Allocation on first use.
 */
/*
 * The mm's statistics, allocated on first use.  Never for a process-shared
 * mm (the pointer would be this process's), nor for a destroyed one (nothing
 * would free it again).
 */
static struct mmap_lock_stats *stats_get(struct mm_struct *mm)
{
	struct mmap_lock_stats *st = atomic_load_explicit(&mm->mmap_lock_stats,
							  memory_order_acquire);
	struct mmap_lock_stats *expected = NULL;

	if (st)
		return st;
	if (mm->mmap_lock.flags & RWSEM_SHARED ||
	    atomic_load_explicit(&mm->mmap_lock.count, memory_order_relaxed) & RWSEM_FLAG_DEAD)
		return NULL;
	st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	atomic_store_explicit(&st->hold_shift, MMAP_LOCK_HOLD_SAMPLING_DEFAULT,
			      memory_order_relaxed);
	/* Release: publishes the zeroed block; acq_rel on failure to read the winner's. */
	if (!atomic_compare_exchange_strong_explicit(&mm->mmap_lock_stats, &expected, st,
						     memory_order_acq_rel, memory_order_acquire)) {
		free(st);
		return expected;
	}
	return st;
}

static uint64_t hold_mask(const struct mmap_lock_stat_slot *s, unsigned int shift)
{
	return ((1ull << shift) - 1) | (s->shared ? MLN_STAT_SHARED : 0);
}

struct mmap_lock_stat_slot *mmap_lock_stat_slot_slow(struct mm_struct *mm)
{
	struct mmap_lock_stats *st = stats_get(mm);
	struct mmap_lock_stat_slot *s, *expected;
	unsigned int t;

	if (!st)
		return NULL;
	t = mln_thread_index();
	s = atomic_load_explicit(&st->slot[t], memory_order_acquire);
	if (s)
		return s;
	if (posix_memalign((void **)&s, 64, sizeof(*s)))
		return NULL;
	memset(s, 0, sizeof(*s));
	s->shared = t == MLN_THREAD_OVERFLOW;
	/* Under the lock, so that a concurrent change of sampling reaches this block too. */
	mln_mutex_lock(&st->lock, 0);
	expected = atomic_load_explicit(&st->slot[t], memory_order_relaxed);
	if (!expected) {
		atomic_store_explicit(&s->hold_mask,
				      hold_mask(s, atomic_load_explicit(&st->hold_shift,
									memory_order_relaxed)),
				      memory_order_relaxed);
		atomic_store_explicit(&s->max_wait_epoch,
				      atomic_load_explicit(&st->epoch, memory_order_relaxed),
				      memory_order_relaxed);
		/* Release: the fast path reads the block through this pointer unlocked. */
		atomic_store_explicit(&st->slot[t], s, memory_order_release);
	}
	mln_mutex_unlock(&st->lock, 0);
	if (expected) {		/* only the shared overflow block can be raced for */
		free(s);
		return expected;
	}
	return s;
}

/* ------------------------------------------------------------------------
 * Updates off the fast path.
 */
static void hold_sample_start(struct mm_struct *mm, int write, uint64_t now)
{
	mln_hold_sample.mm = mm;
	mln_hold_sample.mm_id = mm->mmap_lock_id;
	mln_hold_sample.task = mln_current_task();
	mln_hold_sample.write = write;
	mln_hold_sample.start_ns = now;
}

void mmap_lock_stat_hold_begin(struct mm_struct *mm, int write)
{
	hold_sample_start(mm, write, mln_now_ns());
}

static void hold_record(struct mm_struct *mm, int write, uint64_t end_ns)
{
	struct mmap_lock_stat_slot *s = mmap_lock_stat_slot(mm);
	uint64_t ns = end_ns - mln_hold_sample.start_ns;

	mln_hold_sample.mm = NULL;
	if (!s)
		return;
	mmap_lock_stat_add(s, &s->hold_samples[write], 1);
	mmap_lock_stat_add(s, &s->hold_ns_total[write], ns);
	mmap_lock_stat_add(s, &s->hold_hist[write][mmap_lock_hist_bucket(ns)], 1);
}

/* Whether the thread's sample is of this hold of @mm. */
static bool hold_sample_matches(const struct mm_struct *mm, int write)
{
	return mln_hold_sample.mm == mm && mln_hold_sample.mm_id == mm->mmap_lock_id &&
	       mln_hold_sample.task == mln_current_task() && mln_hold_sample.write == write;
}

void mmap_lock_stat_hold_end(struct mm_struct *mm, int write)
{
	/*
	 * Kept: a release in the other mode of the mm this task holds can only
	 * be a misuse the lock refuses.  Dropped, not recorded: a sample of
	 * another task bound to this thread since, of an earlier mm at this
	 * address, or released with statistics off.
	 */
	if (hold_sample_matches(mm, !write))
		return;
	if (!hold_sample_matches(mm, write) ||
	    (atomic_load_explicit(&mm->mmap_lock_instr, memory_order_relaxed) &
	     MMAP_LOCK_INSTR_NOSTATS)) {
		mln_hold_sample.mm = NULL;
		return;
	}
	hold_record(mm, write, mln_now_ns());
}

static void max_wait_update(struct mm_struct *mm, struct mmap_lock_stat_slot *s, uint64_t ns)
{
	struct mmap_lock_stats *st = atomic_load_explicit(&mm->mmap_lock_stats,
							  memory_order_relaxed);
	uint64_t epoch = atomic_load_explicit(&st->epoch, memory_order_relaxed);
	uint64_t cur = atomic_load_explicit(&s->max_wait_ns, memory_order_relaxed);

	if (atomic_load_explicit(&s->max_wait_epoch, memory_order_relaxed) != epoch) {
		/* The first wait since a reset; written before the epoch it belongs to. */
		atomic_store_explicit(&s->max_wait_ns, ns, memory_order_relaxed);
		atomic_store_explicit(&s->max_wait_epoch, epoch, memory_order_release);
		return;
	}
	if (s->shared) {
		while (cur < ns && !atomic_compare_exchange_weak_explicit(
					   &s->max_wait_ns, &cur, ns, memory_order_relaxed,
					   memory_order_relaxed))
			;
	} else if (cur < ns) {
		atomic_store_explicit(&s->max_wait_ns, ns, memory_order_relaxed);
	}
}

void mmap_lock_stat_contended(struct mm_struct *mm, int write, uint64_t wait_ns, bool owned)
{
	struct mmap_lock_stat_slot *s = mmap_lock_stat_slot(mm);

	if (!s)
		return;
	mmap_lock_stat_add(s, &s->contended[write], 1);
	mmap_lock_stat_add(s, &s->wait_ns_total[write], wait_ns);
	mmap_lock_stat_add(s, &s->wait_hist[write][mmap_lock_hist_bucket(wait_ns)], 1);
	max_wait_update(mm, s, wait_ns);
	mmap_lock_stat_acquired(mm, write, owned);
}

void mmap_lock_stat_failed(struct mm_struct *mm, int write, int err, int trylock,
			   uint64_t wait_ns)
{
	struct mmap_lock_stat_slot *s = mmap_lock_stat_slot(mm);

	if (!s)
		return;
	if (trylock)
		mmap_lock_stat_add(s, &s->trylock_failures[write], 1);
	else if (err == -EINTR)
		mmap_lock_stat_add(s, &s->killable_failures[write], 1);
	else if (err == -ETIMEDOUT)
		mmap_lock_stat_add(s, &s->timeouts[write], 1);
	/* The longest wait is the longest, whether it ended in the lock or not. */
	if (!trylock && wait_ns)
		max_wait_update(mm, s, wait_ns);
}

void mmap_lock_stat_downgrade(struct mm_struct *mm)
{
	struct mmap_lock_stat_slot *s = mmap_lock_stat_slot(mm);

	if (!s)
		return;
	mmap_lock_stat_add(s, &s->downgrades, 1);
	/* A sampled write hold ends here, and the read hold it became starts. */
	if (hold_sample_matches(mm, 1)) {
		uint64_t now = mln_now_ns();

		hold_record(mm, 1, now);
		hold_sample_start(mm, 0, now);
	}
}

/* ------------------------------------------------------------------------
 * Reading and resetting.
 */

/* The per-mode counters, slot and snapshot alike (histograms apart). */
#define PER_MODE_COUNTERS(X)						\
	X(acquisitions) X(contended) X(trylock_failures) X(killable_failures)	\
	X(timeouts) X(wait_ns_total) X(hold_ns_total) X(hold_samples)

/* Sum every block, raw (no baseline subtracted); max only within @epoch. */
static void stats_sum(struct mmap_lock_stats *st, struct mmap_lock_stats_snapshot *out,
		      uint64_t epoch)
{
#define SUM(field) out->field += atomic_load_explicit(&s->field, memory_order_relaxed);
	memset(out, 0, sizeof(*out));
	for (unsigned int i = 0; i <= MLN_THREAD_OVERFLOW; i++) {
		struct mmap_lock_stat_slot *s = atomic_load_explicit(&st->slot[i],
								     memory_order_acquire);

		if (!s)
			continue;
		for (int w = 0; w < 2; w++) {
#define SUM_MODE(field) SUM(field[w])
			PER_MODE_COUNTERS(SUM_MODE)
#undef SUM_MODE
			for (int b = 0; b < MMAP_LOCK_HIST_BUCKETS; b++) {
				SUM(wait_hist[w][b]);
				SUM(hold_hist[w][b]);
			}
		}
		SUM(downgrades);
		for (int e = 0; e < 4; e++)
			SUM(vma_lock[e]);
		SUM(bravo_fast_reads);
		SUM(bravo_revocations);
		SUM(bravo_inhibit_ns);
		/* Acquire: the max was stored before the epoch that vouches for it. */
		if (atomic_load_explicit(&s->max_wait_epoch, memory_order_acquire) == epoch) {
			uint64_t m = atomic_load_explicit(&s->max_wait_ns, memory_order_relaxed);

			if (m > out->max_wait_ns)
				out->max_wait_ns = m;
		}
	}
#undef SUM
}

static uint64_t handoffs_of(struct mm_struct *mm)
{
	uint32_t r, w;
	uint64_t h = 0;

	rwsem_queue_info(&mm->mmap_lock, &r, &w, &h);
	return h;
}

/* out -= base, counter by counter (max_wait_ns has its epoch instead). */
static void snapshot_subtract(struct mmap_lock_stats_snapshot *out,
			      const struct mmap_lock_stats_snapshot *base)
{
	for (int w = 0; w < 2; w++) {
#define SUB_MODE(field) out->field[w] -= base->field[w];
		PER_MODE_COUNTERS(SUB_MODE)
#undef SUB_MODE
		for (int b = 0; b < MMAP_LOCK_HIST_BUCKETS; b++) {
			out->wait_hist[w][b] -= base->wait_hist[w][b];
			out->hold_hist[w][b] -= base->hold_hist[w][b];
		}
	}
	out->downgrades -= base->downgrades;
	out->handoffs -= base->handoffs;
	for (int e = 0; e < 4; e++)
		out->vma_lock[e] -= base->vma_lock[e];
	out->bravo_fast_reads -= base->bravo_fast_reads;
	out->bravo_revocations -= base->bravo_revocations;
	out->bravo_inhibit_ns -= base->bravo_inhibit_ns;
}

int mmap_lock_stats_read(struct mm_struct *mm, struct mmap_lock_stats_snapshot *out)
{
	struct mmap_lock_stats *st;
	bool enabled;

	if (!mm || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	enabled = !(atomic_load_explicit(&mm->mmap_lock_instr, memory_order_relaxed) &
		    MMAP_LOCK_INSTR_NOSTATS);
	out->enabled = enabled;
	st = atomic_load_explicit(&mm->mmap_lock_stats, memory_order_acquire);
	if (!st) {
		out->hold_sampling = MMAP_LOCK_HOLD_SAMPLING_DEFAULT;
		out->handoffs = enabled ? handoffs_of(mm) : 0;
		return 0;
	}
	mln_mutex_lock(&st->lock, 0);
	stats_sum(st, out, atomic_load_explicit(&st->epoch, memory_order_relaxed));
	out->handoffs = handoffs_of(mm);
	snapshot_subtract(out, &st->base);
	mln_mutex_unlock(&st->lock, 0);
	out->enabled = enabled;
	if (!enabled)
		out->handoffs = 0;
	out->hold_sampling = atomic_load_explicit(&st->hold_shift, memory_order_relaxed);
	return 0;
}

/* Why stats_get() gave nothing. */
static int stats_unavailable(struct mm_struct *mm)
{
	if (mm->mmap_lock.flags & RWSEM_SHARED)
		return -ENOTSUP;
	if (atomic_load_explicit(&mm->mmap_lock.count, memory_order_relaxed) & RWSEM_FLAG_DEAD)
		return -EINVAL;
	return -ENOMEM;
}

int mmap_lock_stats_reset(struct mm_struct *mm)
{
	struct mmap_lock_stats *st;

	if (!mm)
		return -EINVAL;
	st = stats_get(mm);
	if (!st)
		return stats_unavailable(mm);
	mln_mutex_lock(&st->lock, 0);
	stats_sum(st, &st->base, UINT64_MAX);
	st->base.handoffs = handoffs_of(mm);
	st->base.max_wait_ns = 0;
	atomic_fetch_add_explicit(&st->epoch, 1, memory_order_relaxed);
	mln_mutex_unlock(&st->lock, 0);
	return 0;
}

int mmap_lock_stats_set_enabled(struct mm_struct *mm, int enabled)
{
	if (!mm)
		return -EINVAL;
	if (enabled && (mm->mmap_lock.flags & RWSEM_SHARED))
		return -ENOTSUP;	/* the blocks would be this process's pointers */
	if (enabled)
		atomic_fetch_and_explicit(&mm->mmap_lock_instr, ~MMAP_LOCK_INSTR_NOSTATS,
					  memory_order_relaxed);
	else
		atomic_fetch_or_explicit(&mm->mmap_lock_instr, MMAP_LOCK_INSTR_NOSTATS,
					 memory_order_relaxed);
	return 0;
}

int mmap_lock_stats_set_hold_sampling(struct mm_struct *mm, unsigned int shift)
{
	struct mmap_lock_stats *st;

	if (!mm || shift > 20)
		return -EINVAL;
	st = stats_get(mm);
	if (!st)
		return stats_unavailable(mm);
	mln_mutex_lock(&st->lock, 0);
	atomic_store_explicit(&st->hold_shift, shift, memory_order_relaxed);
	for (unsigned int i = 0; i <= MLN_THREAD_OVERFLOW; i++) {
		struct mmap_lock_stat_slot *s = atomic_load_explicit(&st->slot[i],
								     memory_order_acquire);

		if (s)
			atomic_store_explicit(&s->hold_mask, hold_mask(s, shift),
					      memory_order_relaxed);
	}
	mln_mutex_unlock(&st->lock, 0);
	return 0;
}

void mmap_lock_stats_atfork_child(struct mm_struct *mm)
{
	struct mmap_lock_stats *st = atomic_load_explicit(&mm->mmap_lock_stats,
							  memory_order_relaxed);

	if (st)
		atomic_store_explicit(&st->lock, 0, memory_order_relaxed);
}

void mmap_lock_stats_free(struct mm_struct *mm)
{
	struct mmap_lock_stats *st = atomic_exchange_explicit(&mm->mmap_lock_stats, NULL,
							      memory_order_acquire);

	if (!st)
		return;
	for (unsigned int i = 0; i <= MLN_THREAD_OVERFLOW; i++)
		free(atomic_load_explicit(&st->slot[i], memory_order_relaxed));
	free(st);
}
