/* SPDX-License-Identifier: MIT */
/*
 * mm_types.h - struct mm_struct, the emulated address space.
 *
 * As in the kernel, the mm owns its mmap_lock.  This header holds what the
 * locking layer needs (the semaphore, the write-section sequence count and
 * the instrumentation state); the mm emulation adds the VMA tree and the
 * page table here.
 *
 * MMAP_LOCK_INITIALIZER(name) gives an unlocked mm lock with statistics on
 * and no instrumentation attached; mmap_init_lock() does the same at run
 * time and also picks up debug mode.
 */
#ifndef MLN_MM_TYPES_H
#define MLN_MM_TYPES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "pgtable.h"
#include "rwsem.h"
#include "vma.h"

struct mmap_lock_stats;		/* mmap_lock_stats.c: per-thread counters */
struct mmu_notifier;		/* mm.c: registered notifiers */
struct mmap_lock_backend;	/* mmap_lock_backend.h: a lock other than the rwsem */
struct mmap_lock_recorder;	/* mmap_lock_recorder.c: event buffer */
struct mmap_lock_alt_reads;	/* mmap_lock.c: per-thread read holds of a glibc design */
struct mm_inval;		/* mm_inval.c: invalidation records for secondary MMUs */

/*
 * The state of the lock designs other than the rwsem (mmap_lock_backend.h),
 * on cache lines of their own: what every call of the mm's lock reads
 * (the read-mostly line before it) is not written with it.
 */
struct mmap_lock_alt_state {
	/* glibc designs: the layer tracks their holders itself. */
	_Atomic uint64_t writer;		/* task holding it for write, or 0 */
	struct mmap_lock_alt_reads *reads;	/* read holds by thread number, summed */
	union {
		pthread_rwlock_t rw;
		pthread_mutex_t mutex;
	} lock;
} __attribute__((aligned(64)));

/* bravo: the reader bias (mmap_lock_bravo.c). */
struct mmap_lock_bravo_state {
	_Atomic uint32_t rbias;		/* readers may take the fast path */
	_Atomic uint32_t revoking;	/* a writer waits for fast readers to leave */
	_Atomic uint32_t wake_seq;	/* the futex word it sleeps on */
	uint32_t slot;			/* where readers publish this mm (reader_slots.h) */
	_Atomic uint64_t inhibit_until;	/* no re-biasing before this time (ns) */
} __attribute__((aligned(64)));

struct mm_struct {
	struct rw_semaphore mmap_lock;

	/*
	 * Odd while a writer holds mmap_lock (bumped after down_write, and
	 * before up_write / downgrade_write), so a reader can speculate
	 * without the lock: mmap_lock_speculate_try_begin/retry.  Written only
	 * by the write holder.  A VMA write-locked during a write section
	 * carries the section's count (vma_lock.h): moving it on ends every
	 * VMA write lock at once.
	 */
	_Atomic uint32_t mm_lock_seq;

	/* MMAP_LOCK_INSTR_* bits (mmap_lock.h): what the slow paths must do. */
	_Atomic uint32_t mmap_lock_instr;

	/* Lock-order checker class (lockdep.h); 0 is "mm->mmap_lock". */
	_Atomic uint32_t mmap_lock_class;

	/* Recorder events in flight: the recorder is detached, then drained. */
	_Atomic uint32_t mmap_lock_rec_inflight;

	/*
	 * Every initialised mm is on one list, so that setting trace hooks can
	 * flip a bit in each mm's mmap_lock_instr: the fast path then tests a
	 * word it loads anyway instead of loading a global too.  Under the
	 * list's mutex (mmap_lock_trace.c).
	 */
	struct mm_struct *mmap_lock_reg_next, *mmap_lock_reg_prev;
	/* Unique per registration: tells this mm from a later one at the same address. */
	uint64_t mmap_lock_id;

	/* Another lock than the rwsem behind the same API, or NULL. */
	const struct mmap_lock_backend *mmap_lock_alt;

	/* Allocated on first use; freed by mmap_lock_destroy(). */
	struct mmap_lock_stats *_Atomic mmap_lock_stats;
	struct mmap_lock_recorder *_Atomic mmap_lock_recorder;

	/* The design's own state (only that of the mm's design is used). */
	union {
		struct mmap_lock_alt_state mmap_lock_alt_state;
		struct mmap_lock_bravo_state mmap_lock_bravo;
	};

	/*
	 * The address space (mm.c, mm_mmap.c, mm_fault.c).  The VMA tree and
	 * the fields below it change only under mmap_lock in write mode; the
	 * page table's PTEs under their leaf locks, with mmap_lock held in
	 * either mode.
	 */
	struct vma_tree mm_vmas;
	uint64_t mmap_base;		/* top-down mmap allocation starts below this */
	uint64_t start_brk, brk;	/* the heap: [start_brk, brk) */
	uint32_t max_map_count;		/* like vm.max_map_count; 0 = the default */
	uint32_t mm_closed;		/* exit_mmap() ran: every operation fails */
	struct mmu_notifier *notifiers;	/* registered under the write lock */
	struct mm_inval *inval;		/* the invalidation queue (mm_inval.c), or NULL */
	_Atomic uint64_t vma_seq;	/* layout changes (mm_vma_seq), by the write holder */
	uint32_t host_backing;		/* MM_HOST_BACKING: private anonymous memory in windows */
	uint32_t backing_gen;		/* host_backing: frames_generation() it was made in */
	_Atomic uint32_t backing_lock;	/* futex mutex: window creation (host_backing.c) */
	struct pgtable pgt;
};

/*
 * A designated-initializer fragment, as the kernel's: { MMAP_LOCK_INITIALIZER(init_mm) }.
 * The mm is not on the hooks' list yet: its first call takes the slow path,
 * which puts it there.
 */
#define MMAP_LOCK_INSTR_UNREGISTERED 16u
#define MMAP_LOCK_INITIALIZER(name) .mmap_lock = RWSEM_INITIALIZER, .mm_lock_seq = 0, \
	.mmap_lock_instr = MMAP_LOCK_INSTR_UNREGISTERED,

#endif /* MLN_MM_TYPES_H */
