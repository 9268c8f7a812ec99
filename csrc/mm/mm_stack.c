/* SPDX-License-Identifier: MIT */
/*
 * mm_stack.c - MAP_GROWSDOWN: a user fault just below a growing mapping
 * extends it, as Linux's expand_downwards() does for the fault path (6.5+:
 * lock_mm_and_find_vma() trades the read lock for the write lock to do it).
 * get_user_pages and pins never grow a stack, as in Linux since 6.5.
 *
 * The checks are the kernel's: not below mmap_min_addr (EPERM); a gap of
 * stack_guard_gap (256 pages) kept above an accessible mapping below that
 * does not grow itself; the grown size within RLIMIT_STACK (its 8 MiB
 * default).  A failed growth is a SEGV_MAPERR, as the fault would give.
 * A grown mapping does not merge with its neighbours (the kernel's does not).
 */
#include <errno.h>

#include "mm_internal.h"
#include "mmap_lock.h"

static int expand_downwards(struct mm_struct *mm, struct vm_area_struct *v, uint64_t addr)
{
	struct vm_area_struct *prev = vma_prev(v);
	uint64_t start = v->vm_start;

	addr &= MLN_PAGE_MASK;
	if (addr < MM_MMAP_MIN_ADDR)
		return -EPERM;
	/* find_vma() found @v first above @addr, so prev ends at or below @addr. */
	if (prev && !(prev->vm_flags & VM_GROWSDOWN) && prev->vm_prot != PROT_NONE &&
	    addr - prev->vm_end < MM_STACK_GUARD_GAP)
		return -ENOMEM;
	if (v->vm_end - addr > MM_STACK_LIMIT)
		return -ENOMEM;
	mm_vma_lock(mm, v);
	v->vm_start = addr;	/* in place: the gap below keeps the order */
	v->vm_pgoff -= (start - addr) >> MLN_PAGE_SHIFT;
	return 0;
}

int mm_grow_stack_relock(struct mm_struct *mm, uint64_t addr)
{
	struct vm_area_struct *v = vma_find(&mm->mm_vmas, addr);
	int rc;

	if (!v || v->vm_start <= addr || !(v->vm_flags & VM_GROWSDOWN))
		return SEGV_MAPERR;
	mmap_read_unlock(mm);
	rc = mm_lock(mm, true);
	if (rc)
		return rc;
	/* Looked up again: the layout may have changed while no lock was held. */
	v = mm->mm_closed ? NULL : vma_find(&mm->mm_vmas, addr);
	if (v && v->vm_start <= addr)
		rc = 0;		/* grown or mapped meanwhile */
	else if (v && (v->vm_flags & VM_GROWSDOWN))
		rc = expand_downwards(mm, v, addr) ? SEGV_MAPERR : 0;
	else
		rc = SEGV_MAPERR;
	/* We hold the write lock: the downgrade cannot be refused, but say so if it is. */
	if (mmap_write_downgrade(mm)) {
		mmap_write_unlock(mm);
		return -EDEADLK;
	}
	return rc;
}
