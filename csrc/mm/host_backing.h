/* SPDX-License-Identifier: MIT */
/*
 * host_backing.h - contiguous host backing of an mm's private anonymous
 * memory (MM_HOST_BACKING; docs/mm.md, "Contiguous host backing").
 *
 * Each page of a private VMA of such an mm has a slot (pgtable.h: struct
 * host_slot) once a fault near it made a window: a host range mapping a run
 * of frames (frames.h) MAP_SHARED, so that guest pages that are neighbours
 * are host neighbours too and an emulator maps a whole VMA at once.  The
 * invariants:
 *
 *   - where a page's PTE is present, its page is the slot's frame (the
 *     window shows what the mm maps);
 *   - where it is absent, the slot's frame is referenced by that slot alone
 *     and holds zeroes or what an emulator wrote through the window (those
 *     writes are the page's contents once it is faulted in: presence is
 *     implicit);
 *   - a window page keeps its host address while its guest page is mapped,
 *     across splits, merges, mprotect and mremap (which moves slots with the
 *     PTEs); only munmap removes it.
 *
 * Locks: slots change under their leaf's lock, like PTEs; windows are made
 * under mm->backing_lock, with the VMA (or the mmap lock) held.
 */
#ifndef MLN_HOST_BACKING_H
#define MLN_HOST_BACKING_H

#include <stdbool.h>
#include <stdint.h>

#include "mm.h"
#include "mm_guest.h"
#include "pgtable.h"
#include "vma.h"

/*
 * How far from a fault a window is made, and how far mm_host_range looks,
 * each way: one fault in a VMA of up to twice this size backs all of it.
 */
#define BACKING_REACH (32ull << 20)

static inline bool vma_host_backed(const struct mm_struct *mm, const struct vm_area_struct *v)
{
	return mm->host_backing && !v->vm_shared;
}

/*
 * Give the run of pages around @addr, in @v and within BACKING_REACH, that
 * have neither a slot nor a PTE one window (one frame run, one host
 * mapping, placed after its neighbour's window when that host range is
 * free); nothing if @addr's page has a slot or a PTE already.
 * @v is read-locked, or the mmap lock held.  0, or -ENOMEM (out of frames
 * or host memory: the caller falls back to a page of its own).
 */
int backing_ensure(struct mm_struct *mm, struct vm_area_struct *v, uint64_t addr);

/*
 * With @leaf locked and @addr's PTE absent: map the slot's frame as the
 * page, with PTE flags @flags.  0 done, 1 no slot there, -ENOMEM.
 */
int backing_install_locked(struct mm_struct *mm, struct pte_table *leaf, uint64_t addr,
			   pte_t flags);

/*
 * Copy-on-write break of the slot-backed page behind @pte, with @leaf
 * locked (unlocked on return): a new frame with the copy, mapped over the
 * window page, becomes the page (PTE flags @flags); @prot for the
 * invalidation record.  0 or -ENOMEM.
 */
int backing_cow_locked(struct mm_struct *mm, struct pte_table *leaf, uint64_t addr, pte_t pte,
		       pte_t flags, uint32_t prot);

/*
 * MADV_DONTNEED of [start, end) of a host-backed VMA, read lock held and the
 * invalidation started: PTEs go, and every slot reads zero afterwards (its
 * frame punched, or replaced by a fresh one where a pin or a fork still
 * holds the old).
 */
void backing_dontneed(struct mm_struct *mm, uint64_t start, uint64_t end);

/*
 * fork of the private VMA @v of @mm into @child (both write-locked, @v's
 * write protection notified): pages an emulator wrote through the window
 * without a fault are adopted first (given PTEs), then the child gets
 * windows of its own showing the same frames, shared copy-on-write, fresh
 * frames where the parent has no PTE, and copies of pinned pages.
 * 0 or -ENOMEM (what was copied stays; the caller frees the child).
 */
int backing_fork(struct mm_struct *child, struct mm_struct *mm, struct vm_area_struct *v);

/*
 * Widen @out (the page of @addr, mapped by @pte in @v) to the largest run
 * of @v's pages within BACKING_REACH that are host neighbours and allow at
 * least @out->prot.
 */
void backing_host_range(struct mm_struct *mm, struct vm_area_struct *v, uint64_t addr,
			struct mm_host_range *out);

#endif /* MLN_HOST_BACKING_H */
