/* SPDX-License-Identifier: MIT */
/*
 * workload.h - fault-like workloads on the emulated mm, run by native threads
 * in the manner of will-it-scale: each thread counts its operations in its own
 * cache line, the threads start together, and the main thread samples the
 * counters once per interval after a warm-up.  All threads share one mm, so
 * they contend on its mmap_lock the way a multithreaded process does.
 *
 *   WL_PAGE_FAULT1  each thread maps its own anonymous region, writes one byte
 *                   per page, unmaps it; one operation per page
 *   WL_MMAP1        map and unmap an anonymous region; one operation per pair
 *   WL_FAULT_MIX    threads fault random pages of a shared set of VMAs (reads
 *                   and writes); a share of the operations instead re-maps one
 *                   VMA (munmap + mmap MAP_FIXED); one operation per step
 *   WL_MAPS_READER  page_fault1 on the counted threads, plus one more thread
 *                   that reads the maps in a loop (its reads are counted apart)
 *   WL_FAULT_PRIVATE fault_mix, but each thread faults and re-maps VMAs of its
 *                   own (mix_vmas each), as will-it-scale's threads do
 *   WL_FAULT_READ   fault_mix without re-maps (mix_remap_per_million ignored)
 *   WL_COMPUTE      no mm at all: each thread computes in registers, one op per
 *                   WL_COMPUTE_STEPS steps of a PRNG; the control that tells
 *                   how many cores the threads really got
 *
 * The result also carries what the whole process spent meanwhile (all its
 * threads, getrusage(RUSAGE_SELF)): context switches and CPU time.
 */
#ifndef MLN_WORKLOAD_H
#define MLN_WORKLOAD_H

#include <stdint.h>

#include "mm_types.h"

/* cffi:begin */
#define WL_PAGE_FAULT1 0
#define WL_MMAP1 1
#define WL_FAULT_MIX 2
#define WL_MAPS_READER 3
#define WL_FAULT_PRIVATE 4
#define WL_FAULT_READ 5
#define WL_COMPUTE 6
#define WL_COMPUTE_STEPS 256
#define WL_MAX_THREADS 256
#define WL_MAX_SAMPLES 1024

struct wl_config {
	int workload;			/* WL_* */
	int threads;			/* 1..WL_MAX_THREADS */
	uint64_t region_bytes;		/* page_fault1/mmap1: bytes per mapping */
	uint32_t mix_vmas;		/* fault_mix: VMAs in the shared set */
	uint32_t mix_pages;		/* fault_mix: pages per VMA */
	uint32_t mix_remap_per_million;	/* fault_mix: re-map share, per million operations */
	uint32_t mix_write_percent;	/* fault_mix: writes among faults */
	uint64_t warmup_ns;		/* before the first sample */
	uint64_t interval_ns;		/* sample period */
	uint32_t samples;		/* samples to take (<= WL_MAX_SAMPLES) */
	uint32_t seed;
};

struct wl_result {
	uint64_t ops_total;		/* counted during the samples (successful ones only) */
	uint64_t ops_all;		/* counted from start to stop (warm-up included) */
	uint64_t side_ops_total;	/* maps_reader: maps reads */
	uint32_t samples;		/* taken */
	uint64_t sample_ns[1024];	/* each sample's measured length */
	uint64_t sample_ops[1024];	/* operations in each sample, all threads */
	uint64_t segv;			/* fault_mix: faults that found the page unmapped */
	uint64_t errors;		/* operations that failed otherwise (must be 0) */
	uint64_t wall_ns;		/* from start to stop, warm-up included */
	uint64_t ctx_switches;		/* voluntary + involuntary, whole process, same span */
	uint64_t cpu_ns;		/* user + system CPU time, whole process, same span */
};

/*
 * Run @cfg on @mm (empty, not shared with other users while it runs) and fill
 * @out.  0, or -EINVAL for a bad configuration, -ENOMEM, or -EAGAIN when a
 * thread could not be started.  Blocks for warm-up + samples * interval.
 */
int wl_run(struct mm_struct *mm, const struct wl_config *cfg, struct wl_result *out);
/* cffi:end */

#endif /* MLN_WORKLOAD_H */
