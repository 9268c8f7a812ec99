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

#include "frames.h"
#include "futex.h"
#include "mm.h"
#include "mm_guest.h"
#include "mm_inval.h"
#include "mmap_lock_trace.h"
#include "pgtable.h"
#include "vma.h"

/*
 * MM_OP(MM_OP_X) at the top of an mm entry point: the lock events of the
 * call are tagged with MM_OP_X, and the caller's tag is back when it returns
 * (a cleanup attribute, so that every return path restores it).
 */
static inline void mm_op_end(const uint16_t *prev)
{
	mmap_lock_set_caller(*prev);
}
#define MM_OP(op) \
	const uint16_t mm_op_prev __attribute__((cleanup(mm_op_end), unused)) = \
		mmap_lock_set_caller(op)

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

/*
 * Notifier calls; the caller holds the mmap_lock in either mode.  @reason
 * (MM_INVAL_*, mm_inval.h) and @new_prot (the range's protection after it,
 * 0 when it goes) are for the invalidation queue; MMU notifiers get the range.
 */
void mm_notify_start(struct mm_struct *mm, uint64_t start, uint64_t end, uint32_t reason,
		     uint32_t new_prot);
void mm_notify_end(struct mm_struct *mm, uint64_t start, uint64_t end);

/*
 * The layout count (mm_vma_seq): bumped by the write holder alone, after it
 * has write-locked what it changes (mm_vma_lock), so a reader holding a
 * VMA's read lock reads a count no change of that VMA has bumped yet.
 */
static inline void mm_layout_changed(struct mm_struct *mm)
{
	/* Release: a reader that loads the new count (acquire) sees every
	 * change of the sections before this one. */
	atomic_store_explicit(&mm->vma_seq,
			      atomic_load_explicit(&mm->vma_seq, memory_order_relaxed) + 1,
			      memory_order_release);
}

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

/*
 * The mm whose guest the calling thread runs (between mm_tlb_enter and
 * mm_tlb_exit, mm_inval.c), or NULL.  An invalidation of that mm waits for
 * the thread to leave its guest, so a call into the mm from inside (an
 * emulator's hook) could wait for that invalidation: refused too.
 */
extern MLN_HOT_TLS _Thread_local const struct mm_struct *mm_in_guest;

static inline bool mm_reentered(const struct mm_struct *mm)
{
	if (mln_unlikely(mm_in_guest == mm))
		return true;
	for (const struct mm_notify_frame *f = mm_notifying; mln_unlikely(f); f = f->up)
		if (f->mm == mm)
			return true;
	return false;
}

/*
 * Whether @mm is a host-backed mm that a host fork() copied into this
 * process: its frames are the parent's (frames.h, "Host fork"), so nothing
 * here may fault, punch or free them.
 */
static inline bool mm_backing_stale(const struct mm_struct *mm)
{
	return mm->host_backing && mln_unlikely(mm->backing_gen != frames_generation());
}

/*
 * What every entry point checks first: -EDEADLK for a call from the mm's
 * own notifiers or guest (mm_reentered), -ESTALE for a stale host-backed
 * mm (mm_backing_stale), else 0.
 */
static inline int mm_refused(const struct mm_struct *mm)
{
	if (mm_reentered(mm))
		return -EDEADLK;
	return mm_backing_stale(mm) ? -ESTALE : 0;
}

/*
 * For mremap (mm_mremap.c), from mm_mmap.c; the write lock is held.
 * mm_do_munmap: unmap [start, end) (page aligned) as munmap does, without
 * the downgrade: 0, or -ENOMEM (the VMA limit, nothing done).
 * mm_find_room: a free range of @len bytes (the hint if free): 0 if none.
 * mm_merge_around: merge @v with its compatible neighbours; the survivor.
 */
int mm_do_munmap(struct mm_struct *mm, uint64_t start, uint64_t end);
uint64_t mm_find_room(struct mm_struct *mm, uint64_t hint, uint64_t len, bool low32);
struct vm_area_struct *mm_merge_around(struct mm_struct *mm, struct vm_area_struct *v);
/* Make a shared backing hold at least @nr_pages pages (mremap growing it): 0 or -ENOMEM. */
int anon_shared_grow(struct anon_shared *s, uint64_t nr_pages);

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
		    int access, bool vma_locked);
/* Whether @vma permits @access (MM_ACCESS_*; read: any protection but PROT_NONE). */
static inline bool vma_permits(const struct vm_area_struct *vma, int access)
{
	if (access == MM_ACCESS_WRITE)
		return vma->vm_prot & PROT_WRITE;
	if (access == MM_ACCESS_EXEC)
		return vma->vm_prot & PROT_EXEC;
	return vma->vm_prot != PROT_NONE;
}

/*
 * MAP_POPULATE's prefault of [start, start + len) under the read lock
 * (mm_fault.c); what cannot be faulted in is left to later faults.
 */
void mm_populate(struct mm_struct *mm, uint64_t start, uint64_t len);
/*
 * The prefault itself, the read lock held: every page of the VMAs of
 * [start, end) faulted in.  MM_POPULATE_MAP (MAP_POPULATE): written in a
 * private writable VMA, read in others, PROT_NONE passed over.
 * MM_POPULATE_READ / WRITE (MADV_POPULATE_*): read / written, and a VMA
 * that does not allow it stops the walk with -EINVAL.  0, -ENOMEM (out of
 * memory; or a hole, which is passed over), or -EINVAL.
 */
enum mm_populate_mode { MM_POPULATE_MAP, MM_POPULATE_READ, MM_POPULATE_WRITE };
int mm_populate_locked(struct mm_struct *mm, uint64_t start, uint64_t end,
		       enum mm_populate_mode mode);

/*
 * A fault at unmapped @addr with the read lock held (mm_stack.c): if a
 * MAP_GROWSDOWN mapping lies just above, trade the read lock for the write
 * lock, grow it down to @addr's page as expand_downwards() does, and
 * downgrade back.  0: @addr is mapped now; SEGV_MAPERR: it is not; either
 * way the read lock is held (the layout may have changed meanwhile).  A
 * negative errno: the write lock was refused, and no lock is held.
 */
int mm_grow_stack_relock(struct mm_struct *mm, uint64_t addr);

#endif /* MLN_MM_INTERNAL_H */
