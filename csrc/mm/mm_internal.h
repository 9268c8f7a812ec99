/* SPDX-License-Identifier: MIT */
/*
 * mm_internal.h - what mm.c, mm_mmap.c and mm_fault.c share: VMA life
 * cycle, the shared-anonymous backing object, and the notifier calls.
 */
#ifndef MLN_MM_INTERNAL_H
#define MLN_MM_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "futex.h"
#include "mm.h"
#include "pgtable.h"
#include "vma.h"

static inline uint64_t mm_max_map_count(const struct mm_struct *mm)
{
	return mm->max_map_count ? mm->max_map_count : MM_DEFAULT_MAX_MAP_COUNT;
}

/*
 * The backing of a MAP_SHARED anonymous mapping (the kernel's shmem file):
 * its pages by index, shared by every VMA cut from it, in this mm and in
 * forked ones, so that a page faulted in through one is seen through all.
 */
struct anon_shared {
	_Atomic uint32_t refs;		/* VMAs pointing here */
	_Atomic uint32_t lock;		/* futex mutex: pages[] */
	uint64_t nr_pages;
	struct page **pages;		/* NULL until first faulted */
};

struct anon_shared *anon_shared_new(uint64_t nr_pages);
void anon_shared_get(struct anon_shared *s);
void anon_shared_put(struct anon_shared *s);
/* The page at @index with a reference for the caller, created if absent; NULL on ENOMEM. */
struct page *anon_shared_page(struct anon_shared *s, uint64_t index);

/* A zeroed, detached VMA; its copy for a split or a fork (shared backing
 * referenced); back to the pool (mm_vma.c: VMA memory is type-stable). */
struct vm_area_struct *vma_alloc(void);
struct vm_area_struct *vma_dup(const struct vm_area_struct *v);
void vma_free(struct vm_area_struct *v);

/*
 * Every change of an mm's VMAs goes through these, with the mm write-locked
 * (mm_vma.c): write-lock @v before changing any of its fields; link a new
 * VMA into @mm's tree (0, or -EEXIST if it overlaps); unlink one from it.
 */
void mm_vma_lock(struct mm_struct *mm, struct vm_area_struct *v);
int mm_vma_link(struct mm_struct *mm, struct vm_area_struct *v);
void mm_vma_unlink(struct mm_struct *mm, struct vm_area_struct *v);

/* Notifier calls; the caller holds the mmap_lock in either mode. */
void mm_notify_start(struct mm_struct *mm, uint64_t start, uint64_t end);
void mm_notify_end(struct mm_struct *mm, uint64_t start, uint64_t end);

/*
 * Take @mm's lock for an operation (mm_lock.c): killable (-EINTR once the
 * task is killed), and with mm_signal_aware set on this thread, also
 * -ERESTART when a signal interrupts the wait (nothing done: call again).
 * 0, or the refusal of the lock (-EDEADLK).
 */
extern MLN_HOT_TLS _Thread_local int mm_signal_aware;
int mm_lock(struct mm_struct *mm, bool write);

/*
 * The mms whose MMU notifiers the calling thread is running now, innermost
 * first (frames on the notifying code's stack).  A notifier runs under its
 * mm's lock, so a call into that same mm from it would deadlock, or free
 * what the operation in progress still walks: every entry point refuses it
 * with -EDEADLK (mm_reentered).
 */
struct mm_notify_frame {
	struct mm_struct *mm;
	struct mm_notify_frame *up;
};
extern MLN_HOT_TLS _Thread_local struct mm_notify_frame *mm_notifying;

static inline bool mm_reentered(const struct mm_struct *mm)
{
	for (const struct mm_notify_frame *f = mm_notifying; mln_unlikely(f); f = f->up)
		if (f->mm == mm)
			return true;
	return false;
}

/* Remove every mapping (exit_mmap's work); write lock held. */
void mm_unmap_all(struct mm_struct *mm);

/*
 * The fault handler proper, with the mmap lock held (either mode), or with
 * only @vma read-locked (@vma_locked): then a fault that needs more than the
 * VMA (a copy-on-write copy, which calls the MMU notifiers) returns
 * MM_FAULT_RETRY, to be retried under the mmap lock.
 */
#define MM_FAULT_RETRY 0x1000

/*
 * The kernel's lock_vma_under_rcu(): the VMA of @mm containing @addr, found
 * without the mmap lock and read-locked (vma_end_read() when done), or NULL
 * (the outcome is counted in the statistics: MISS or ABORT).  Per_vma only.
 */
struct vm_area_struct *mm_lock_vma_under_rcu(struct mm_struct *mm, uint64_t addr);
int mm_handle_fault(struct mm_struct *mm, struct vm_area_struct *vma, uint64_t addr,
		    bool write, bool vma_locked);
/* Whether @vma permits the access (read: any protection but PROT_NONE). */
static inline bool vma_permits(const struct vm_area_struct *vma, bool write)
{
	return write ? (vma->vm_prot & PROT_WRITE) : vma->vm_prot != PROT_NONE;
}

#endif /* MLN_MM_INTERNAL_H */
