/* SPDX-License-Identifier: MIT */
/*
 * vma_lock.c - the write side of the per-VMA locks (vma_lock.h).
 */
#include "mmap_lock_internal.h"
#include "mmap_lock_stats_impl.h"
#include "reader_slots.h"
#include "vma_lock.h"

int mmap_lock_has_vma_locks(struct mm_struct *mm)
{
	return !!(mm_instr(mm) & MMAP_LOCK_INSTR_PER_VMA);
}

void vma_start_write(struct mm_struct *mm, struct vma_lock *l)
{
	/* Relaxed: the write holder is the only writer of both words. */
	uint32_t seq = atomic_load_explicit(&mm->mm_lock_seq, memory_order_relaxed);
	uint64_t st = atomic_load_explicit(&l->state, memory_order_relaxed);

	if ((uint32_t)(st >> 1) == seq)
		return;
	/* Store, then the seq_cst loads of the scan: the writer half (futex.h). */
	mln_store_before_load(&l->state, ((uint64_t)seq << 1) | (st & VMA_LOCK_DETACHED));
	/* Other designs have no VMA readers: the stamp alone keeps the word exact. */
	if (mmap_lock_has_vma_locks(mm))
		mln_reader_slots_wait(MLN_READER_SLOT_VMA, l);
}

int vma_is_write_locked(struct mm_struct *mm, struct vma_lock *l)
{
	uint64_t st = atomic_load_explicit(&l->state, memory_order_relaxed);

	return (uint32_t)(st >> 1) == atomic_load_explicit(&mm->mm_lock_seq, memory_order_relaxed);
}

void vma_mark_attached(struct vma_lock *l)
{
	/* Release: a reader that sees it attached sees the VMA's fields set before. */
	atomic_fetch_and_explicit(&l->state, ~VMA_LOCK_DETACHED, memory_order_release);
}

void vma_mark_detached(struct vma_lock *l)
{
	atomic_fetch_or_explicit(&l->state, VMA_LOCK_DETACHED, memory_order_relaxed);
}

void mmap_vma_lock_event(struct mm_struct *mm, int outcome)
{
	struct mmap_lock_stat_slot *s = mmap_lock_stat_slot_if_on(mm);

	if (s && outcome >= 0 && outcome < 4)
		mmap_lock_stat_add(s, &s->vma_lock[outcome], 1);
}
