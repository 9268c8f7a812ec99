/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_stats.h - per-mm lock statistics, cheap enough to leave on.
 *
 * Counters live in per-thread blocks (one per thread that touched the mm),
 * written only by their thread, so the read-lock path writes no cache line
 * another thread writes; reading the statistics sums the blocks.  Wait times
 * are measured on contended acquisitions only (an uncontended one waited
 * 0 ns and costs no clock read); hold times are sampled, one acquisition in
 * 2^shift per thread (mmap_lock_stats_set_hold_sampling(); 1 in 64 by
 * default), because two clock reads would cost more than the lock itself.
 *
 * Histograms are log2: bucket 0 counts [0, 2) ns, bucket k >= 1 counts
 * [2^k, 2^(k+1)) ns, the last bucket everything above.
 */
#ifndef MLN_MMAP_LOCK_STATS_H
#define MLN_MMAP_LOCK_STATS_H

#include <stdint.h>

#include "mm_types.h"

/* cffi:begin */
#define MMAP_LOCK_HIST_BUCKETS 40
#define MMAP_LOCK_HOLD_SAMPLING_DEFAULT 6

/* Outcomes of a fault's try of the per-VMA lock (the kernel's vmstat names):
 * handled under it; it could not be taken (write-locked, detached, moved);
 * the fault needed the mmap lock after all; no VMA found without the lock.
 * Every outcome but SUCCESS falls back to mmap_read_lock. */
#define MMAP_VMA_LOCK_SUCCESS 0
#define MMAP_VMA_LOCK_ABORT 1
#define MMAP_VMA_LOCK_RETRY 2
#define MMAP_VMA_LOCK_MISS 3

/* Index 0 = read, 1 = write, for every [2] below. */
struct mmap_lock_stats_snapshot {
	uint64_t acquisitions[2];	/* successful acquisitions */
	uint64_t contended[2];		/* ... that had to wait */
	uint64_t trylock_failures[2];
	uint64_t killable_failures[2];	/* killable waits ended by task_kill */
	uint64_t timeouts[2];		/* timed waits that expired */
	uint64_t downgrades;
	uint64_t handoffs;		/* lock handed to a starved waiter: the semaphore's
					 * own count, so it includes handoffs while the
					 * statistics were off (0 while they are off) */
	uint64_t max_wait_ns;		/* longest wait, also of those that timed out or
					 * were killed (the histograms count acquisitions) */
	uint64_t wait_ns_total[2];	/* over contended acquisitions */
	uint64_t hold_ns_total[2];	/* over hold samples */
	uint64_t hold_samples[2];
	uint64_t wait_hist[2][40];	/* contended acquisitions by wait time */
	uint64_t hold_hist[2][40];	/* hold samples by hold time */
	uint64_t vma_lock[4];		/* per_vma: faults by MMAP_VMA_LOCK_* outcome */
	uint64_t bravo_fast_reads;	/* bravo: read acquisitions on the biased fast path
					 * (also counted in acquisitions[0]) */
	uint64_t bravo_revocations;	/* bravo: writers that revoked the bias */
	uint64_t bravo_inhibit_ns;	/* bravo: time re-biasing was inhibited after them */
	uint32_t hold_sampling;		/* log2 of the sampling period */
	uint32_t enabled;
};

/* Sum every thread's counters since the last reset.  0 or -EINVAL. */
int mmap_lock_stats_read(struct mm_struct *mm, struct mmap_lock_stats_snapshot *out);
int mmap_lock_stats_reset(struct mm_struct *mm);
int mmap_lock_stats_set_enabled(struct mm_struct *mm, int enabled);
/* Sample one hold in 2^@shift per thread (0: every hold; at most 20). */
int mmap_lock_stats_set_hold_sampling(struct mm_struct *mm, unsigned int shift);
/* cffi:end */

#endif /* MLN_MMAP_LOCK_STATS_H */
