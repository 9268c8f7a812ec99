/* SPDX-License-Identifier: MIT */
/*
 * mm_mremap.c - mremap(2) of anonymous memory, with Linux's checks in
 * Linux's order (mm/mremap.c as of 6.1) and its errnos:
 *
 *   EINVAL  unknown flags; MREMAP_FIXED without MREMAP_MAYMOVE;
 *           MREMAP_DONTUNMAP without MAYMOVE or with a size change; an
 *           unaligned address (or MREMAP_FIXED target); a new size of zero;
 *           a target past the top or overlapping the old range; an old size
 *           of zero (the "duplicate" request) on a private mapping
 *   EFAULT  no VMA at the address, or the old range crossing its end
 *   ENOMEM  no room to grow in place without MREMAP_MAYMOVE, no free range
 *           to move to, the VMA limit
 *   EPERM   a MREMAP_FIXED target below mmap_min_addr
 *
 * Shrinking unmaps the tail; growing extends in place when the range above
 * is free, else moves (MREMAP_MAYMOVE): a new VMA with the same protection
 * and flags, the page-table entries moved to it (pages, pins and
 * copy-on-write state travel with them), and the old range unmapped, or
 * with MREMAP_DONTUNMAP left mapped and empty.  An old size of zero on a
 * shared mapping maps the same pages a second time.  Where Linux would let
 * a grown shared anonymous mapping raise SIGBUS past the end of its shmem
 * object, the object grows here (there is no SIGBUS to give).
 */
#include <errno.h>
#include <stdbool.h>

#include "mm_internal.h"
#include "mmap_lock.h"

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4	/* <linux/mman.h>; glibc before 2.32 lacks it */
#endif
#define MREMAP_ALL (MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP)
#define PAGE_ALIGN_WRAP(x) (((x) + MM_PAGE_SIZE - 1) & MLN_PAGE_MASK)	/* wraps, as the kernel's */

/* vma_to_resize(): the VMA to move or grow, or an errno. */
static int vma_to_resize(struct mm_struct *mm, uint64_t addr, uint64_t old_len,
			 struct vm_area_struct **out)
{
	struct vm_area_struct *v = vma_lookup(&mm->mm_vmas, addr);

	if (!v)
		return -EFAULT;
	if (!old_len && !(v->vm_flags & VM_SHARED))
		return -EINVAL;		/* "duplicating" a private mapping makes no sense */
	if (old_len > v->vm_end - addr)
		return -EFAULT;		/* across a VMA boundary */
	*out = v;
	return 0;
}

/* The shared backing of @v covers @len bytes from @addr: 0 or -ENOMEM. */
static int backing_covers(struct vm_area_struct *v, uint64_t pgoff, uint64_t len)
{
	if (!v->vm_shared)
		return 0;
	return anon_shared_grow(v->vm_shared, pgoff + (len >> MLN_PAGE_SHIFT));
}

/* Grow @v in place by @delta bytes if the range above is free. */
static bool grow_in_place(struct mm_struct *mm, struct vm_area_struct *v, uint64_t delta)
{
	struct vm_area_struct *next = vma_next(v);
	uint64_t end = v->vm_end + delta;

	if (end < v->vm_end || end > MM_TASK_SIZE || (next && next->vm_start < end))
		return false;
	if (backing_covers(v, v->vm_pgoff, end - v->vm_start))
		return false;
	mm_vma_lock(mm, v);
	v->vm_end = end;
	mm_merge_around(mm, v);
	return true;
}

/* move_vma(): [addr, addr + old_len) of @v to a new VMA at @to of @new_len bytes. */
static int64_t move_vma(struct mm_struct *mm, struct vm_area_struct *v, uint64_t addr,
			uint64_t old_len, uint64_t new_len, uint64_t to, int flags)
{
	uint64_t pgoff = v->vm_pgoff + ((addr - v->vm_start) >> MLN_PAGE_SHIFT);
	struct vm_area_struct *n;
	int err;

	if (mm->mm_vmas.count >= mm_max_map_count(mm) - 3)
		return -ENOMEM;
	err = backing_covers(v, pgoff, new_len);
	if (err)
		return err;
	n = vma_dup(v);
	if (!n)
		return -ENOMEM;
	n->vm_start = to;
	n->vm_end = to + new_len;
	n->vm_pgoff = pgoff;
	if (old_len)
		mm_notify_start(mm, addr, addr + old_len, MM_INVAL_MOVE,
				flags & MREMAP_DONTUNMAP ? v->vm_prot : 0);
	/* Old and new VMAs are write-locked (mm_vma_lock): no fault runs on either range. */
	mm_vma_lock(mm, v);
	err = pgtable_move(&mm->pgt, addr, to, old_len);
	if (!err)
		mm_vma_link(mm, n);	/* the range is free: mm_find_room or the unmap made it so */
	if (old_len)
		mm_notify_end(mm, addr, addr + old_len);
	if (err) {
		vma_free(n);
		return err;
	}
	if (!(flags & MREMAP_DONTUNMAP) && old_len)
		mm_do_munmap(mm, addr, addr + old_len);	/* its PTEs are gone already */
	mm_merge_around(mm, n);
	return (int64_t)to;
}

/* mremap_to(): MREMAP_FIXED or MREMAP_DONTUNMAP. */
static int64_t mremap_to(struct mm_struct *mm, uint64_t addr, uint64_t old_len,
			 uint64_t new_addr, uint64_t new_len, int flags)
{
	struct vm_area_struct *v;
	uint64_t to;
	int err;

	if (new_addr & (MM_PAGE_SIZE - 1))
		return -EINVAL;
	if (new_len > MM_TASK_SIZE || new_addr > MM_TASK_SIZE - new_len)
		return -EINVAL;
	if (addr + old_len > new_addr && new_addr + new_len > addr)
		return -EINVAL;		/* the ranges overlap */
	/* The worst case splits both ranges. */
	if (mm->mm_vmas.count + 2 >= mm_max_map_count(mm) - 3)
		return -ENOMEM;
	if (flags & MREMAP_FIXED) {
		err = mm_do_munmap(mm, new_addr, new_addr + new_len);
		if (err)
			return err;
	}
	if (old_len > new_len) {
		err = mm_do_munmap(mm, addr + new_len, addr + old_len);
		if (err)
			return err;
		old_len = new_len;
	}
	err = vma_to_resize(mm, addr, old_len, &v);
	if (err)
		return err;
	if (flags & MREMAP_FIXED) {
		if (new_addr < MM_MMAP_MIN_ADDR)
			return -EPERM;	/* get_unmapped_area()'s security_mmap_addr() */
		to = new_addr;
	} else {
		to = mm_find_room(mm, new_addr, new_len, false);
		if (!to)
			return -ENOMEM;
	}
	return move_vma(mm, v, addr, old_len, new_len, to, flags);
}

static int64_t do_mremap(struct mm_struct *mm, uint64_t addr, uint64_t old_len,
			 uint64_t new_len, int flags, uint64_t new_addr)
{
	struct vm_area_struct *v;
	uint64_t to;
	int err;

	if (mm->mm_closed || !vma_lookup(&mm->mm_vmas, addr))
		return -EFAULT;
	if (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))
		return mremap_to(mm, addr, old_len, new_addr, new_len, flags);
	if (old_len >= new_len) {
		/* Shrinking just unmaps the tail (which must lie in user space). */
		if (old_len != new_len) {
			if (addr + old_len > MM_TASK_SIZE || addr + old_len < addr)
				return -EINVAL;
			err = mm_do_munmap(mm, addr + new_len, addr + old_len);
			if (err)
				return err;
		}
		return (int64_t)addr;
	}
	err = vma_to_resize(mm, addr, old_len, &v);
	if (err)
		return err;
	if (old_len && old_len == v->vm_end - addr && grow_in_place(mm, v, new_len - old_len))
		return (int64_t)addr;
	if (!(flags & MREMAP_MAYMOVE))
		return -ENOMEM;
	to = mm_find_room(mm, 0, new_len, false);
	if (!to)
		return -ENOMEM;
	return move_vma(mm, v, addr, old_len, new_len, to, flags);
}

int64_t mm_mremap(struct mm_struct *mm, uint64_t addr, uint64_t old_len, uint64_t new_len,
		  int flags, uint64_t new_addr)
{
	MM_OP(MM_OP_MREMAP);
	int64_t ret;

	ret = mm_refused(mm);
	if (ret)
		return ret;
	if (flags & ~MREMAP_ALL)
		return -EINVAL;
	if ((flags & MREMAP_FIXED) && !(flags & MREMAP_MAYMOVE))
		return -EINVAL;
	if ((flags & MREMAP_DONTUNMAP) && (!(flags & MREMAP_MAYMOVE) || old_len != new_len))
		return -EINVAL;
	if (addr & (MM_PAGE_SIZE - 1))
		return -EINVAL;
	old_len = PAGE_ALIGN_WRAP(old_len);
	new_len = PAGE_ALIGN_WRAP(new_len);
	if (!new_len)
		return -EINVAL;		/* zero, or so large it wrapped */
	ret = mm_lock(mm, true);
	if (ret)
		return ret;
	ret = do_mremap(mm, addr, old_len, new_len, flags, new_addr);
	mmap_write_unlock(mm);
	return ret;
}
