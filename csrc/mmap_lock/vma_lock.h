/* SPDX-License-Identifier: MIT */
/*
 * vma_lock.h - per-VMA locks (the kernel's CONFIG_PER_VMA_LOCK: Linux 6.4,
 * refined in 6.15), the lock of the per_vma design.
 *
 * A page fault finds its VMA without the mmap lock and read-locks just that
 * VMA; only if that fails does it take mmap_read_lock.  Writers still take
 * mmap_write_lock, and write-lock each VMA they change before changing it;
 * those VMA write locks all end together when the write section ends
 * (mmap_write_unlock, mmap_write_downgrade), because a VMA is write-locked
 * exactly while the sequence count it was stamped with is its mm's current
 * mm_lock_seq (odd during a write section, moved on by its end).
 *
 * The lock word of a VMA, `state` (64 bits):
 *
 *   bit(s)   meaning                            changed by
 *   0        VMA_LOCK_DETACHED: not in its mm's vma_lock_init (set),
 *            tree (new, removed, or free)       vma_mark_attached (clear),
 *                                               vma_mark_detached (set); all
 *                                               by the mm's write-lock holder
 *                                               on a VMA it write-locked
 *   1..32    seq: the mm_lock_seq of the write  vma_start_write, by the
 *            section that last write-locked it  mm's write-lock holder
 *   33..63   zero
 *
 * The read side is free of shared writes: a reader publishes the VMA in its
 * own thread's reader slot (reader_slots.h), then reads `state` and
 * mm_lock_seq; vma_start_write stores `state`, then scans every thread's
 * slot and waits for those that hold the VMA.  Either the reader sees the
 * new `state` and backs out, or the writer sees the reader and waits.
 * So the indicator is one private line per thread, not an atomic per VMA:
 * a per-VMA reader count would be written by every fault on the VMA.
 *
 * VMA memory is type-stable (mm.c never returns it to the system): a reader
 * may look at a VMA that was freed and reused since it found it, which is
 * why vma_start_read() checks DETACHED and the caller then checks that the
 * VMA is still the one of this mm containing the address (lock_vma_under_rcu
 * in mm_fault.c).  docs/per_vma.md has the ordering argument in full.
 */
#ifndef MLN_VMA_LOCK_H
#define MLN_VMA_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mm_types.h"
#include "reader_slots.h"
#include "vma_lock_types.h"

#define VMA_LOCK_DETACHED 1ull

/* Detached and unlocked: for VMA memory that was never in a tree. */
static inline void vma_lock_init(struct vma_lock *l)
{
	atomic_store_explicit(&l->state, VMA_LOCK_DETACHED, memory_order_relaxed);
}

/* Whether @mm's lock design has VMA locks (MM(lock="per_vma")). */
int mmap_lock_has_vma_locks(struct mm_struct *mm);

/*
 * Read-lock @l, a VMA found without the mmap lock: 1, or 0 when it is
 * write-locked, detached, or the calling thread cannot publish (it holds a
 * VMA read lock already, or has no reader line).  Never waits.  After 1 the
 * caller still checks that the VMA belongs to @mm and covers its address.
 */
static inline int vma_start_read(struct mm_struct *mm, struct vma_lock *l)
{
	void *_Atomic *slot = mln_reader_slot_self(MLN_READER_SLOT_VMA);
	uint64_t st, st2;
	uint32_t seq;

	if (mln_unlikely(!slot || atomic_load_explicit(slot, memory_order_relaxed)))
		return 0;
	/* Store, then seq_cst load: the reader half of the Dekker pair (futex.h). */
	mln_store_before_load(slot, l);
	st = atomic_load_explicit(&l->state, memory_order_seq_cst);
	/*
	 * Acquire, after `state`: a stamp read above was stored after its
	 * section's count, so this reads that count or a later one; a later
	 * one ended the section, and everything it did to the VMA (a detach
	 * included) is visible from here on.  So `state` is read again: if it
	 * moved, the first read was of a section that has since changed it.
	 */
	seq = atomic_load_explicit(&mm->mm_lock_seq, memory_order_acquire);
	st2 = atomic_load_explicit(&l->state, memory_order_acquire);
	if (mln_likely(st == st2 && !(st & VMA_LOCK_DETACHED) && (uint32_t)(st >> 1) != seq))
		return 1;
	atomic_store_explicit(slot, NULL, memory_order_release);
	return 0;
}

/* Release: the fault's reads of the VMA happen before a writer's changes. */
static inline void vma_end_read(struct vma_lock *l)
{
	void *_Atomic *slot = mln_reader_slot_self(MLN_READER_SLOT_VMA);

	(void)l;
	atomic_store_explicit(slot, NULL, memory_order_release);
}

/*
 * Write-lock @l for @mm's current write section (the caller holds @mm's
 * write lock), waiting for the VMA's readers to leave; a no-op if it is
 * write-locked in this section already.  Before any change to the VMA.
 */
void vma_start_write(struct mm_struct *mm, struct vma_lock *l);
/* 1 if @l is write-locked in @mm's current write section. */
int vma_is_write_locked(struct mm_struct *mm, struct vma_lock *l);
/* In or out of the tree; the caller write-locked @l. */
void vma_mark_attached(struct vma_lock *l);
void vma_mark_detached(struct vma_lock *l);

/* Count a fault's MMAP_VMA_LOCK_* outcome in @mm's statistics. */
void mmap_vma_lock_event(struct mm_struct *mm, int outcome);

#endif /* MLN_VMA_LOCK_H */
