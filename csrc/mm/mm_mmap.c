/* SPDX-License-Identifier: MIT */
/*
 * mm_mmap.c - mmap, munmap, mprotect, brk and madvise on the emulated mm.
 *
 * The VMA layout follows Linux's: a new or changed private anonymous range
 * merges with a touching neighbour of the same protection (so the layout is
 * always maximally merged, as a sequence of the same calls leaves it on
 * Linux); shared anonymous mappings never merge; partial unmaps, protection
 * changes and flag changes (madvise's MADV_DONTFORK, MADV_WIPEONFORK and
 * their undoing) split, and only VMAs with equal flags merge.  An operation
 * that would leave more VMAs than max_map_count (and more than before) fails
 * with ENOMEM and changes nothing.  Unmapped ranges are found top-down below mmap_base, then below
 * MM_TASK_SIZE.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "host_backing.h"
#include "mm.h"
#include "mm_internal.h"
#include "mmap_lock.h"

#define PAGE_ALIGN(x) (((x) + MM_PAGE_SIZE - 1) & ~(uint64_t)(MM_PAGE_SIZE - 1))
/* x86-64's MAP_32BIT, whatever the host (the emulated address space is x86-64's). */
#define MM_MAP_32BIT 0x40
#define MM_32BIT_LOW 0x40000000ull	/* x86-64's find_start_end() for MAP_32BIT */
#define MM_32BIT_HIGH 0x80000000ull
#define PROT_ALL (PROT_READ | PROT_WRITE | PROT_EXEC)
#ifndef PROT_SEM
#define PROT_SEM 0x8	/* <asm-generic/mman-common.h>; glibc does not export it */
#endif
#ifndef PROT_GROWSDOWN
#define PROT_GROWSDOWN 0x01000000	/* <asm-generic/mman-common.h> */
#endif
#ifndef PROT_GROWSUP
#define PROT_GROWSUP 0x02000000
#endif

static bool page_aligned(uint64_t x)
{
	return !(x & (MM_PAGE_SIZE - 1));
}

/* A length in bytes rounded up to pages: 0 if zero or if it overflows. */
static uint64_t page_length(uint64_t addr, uint64_t length)
{
	uint64_t len = PAGE_ALIGN(length);

	if (!length || len < length || addr + len < addr)
		return 0;
	return len;
}

/* ------------------------------------------------------------------------
 * Splitting and merging.
 */
static bool mergeable(const struct vm_area_struct *a, const struct vm_area_struct *b)
{
	return a && b && a->vm_end == b->vm_start && !(a->vm_flags & VM_SHARED) &&
	       !(b->vm_flags & VM_SHARED) && a->vm_prot == b->vm_prot &&
	       a->vm_flags == b->vm_flags;
}

/* Merge @v with its touching compatible neighbours; the surviving VMA. */
struct vm_area_struct *mm_merge_around(struct mm_struct *mm, struct vm_area_struct *v)
{
	struct vm_area_struct *prev = vma_prev(v), *next;

	if (mergeable(prev, v)) {
		uint64_t end = v->vm_end;

		mm_vma_lock(mm, prev);
		mm_vma_unlink(mm, v);
		prev->vm_end = end;	/* in place: the order is unchanged */
		vma_free(v);
		v = prev;
	}
	next = vma_next(v);
	if (mergeable(v, next)) {
		uint64_t end = next->vm_end;

		mm_vma_lock(mm, v);
		mm_vma_unlink(mm, next);
		v->vm_end = end;
		vma_free(next);
	}
	return v;
}

/* Split @v at @addr (strictly inside it): @v keeps the lower part. */
static int split_at(struct mm_struct *mm, struct vm_area_struct *v, uint64_t addr)
{
	struct vm_area_struct *hi = vma_dup(v);

	if (!hi)
		return -ENOMEM;
	hi->vm_start = addr;
	hi->vm_pgoff = v->vm_pgoff + ((addr - v->vm_start) >> MLN_PAGE_SHIFT);
	mm_vma_lock(mm, v);
	v->vm_end = addr;
	mm_vma_link(mm, hi);	/* cannot overlap: it is @v's old upper part */
	return 0;
}

/* Make a VMA boundary at @addr if it falls strictly inside one. */
static int split_if_inside(struct mm_struct *mm, uint64_t addr)
{
	struct vm_area_struct *v = vma_lookup(&mm->mm_vmas, addr);

	if (v && v->vm_start < addr)
		return split_at(mm, v, addr);
	return 0;
}

/*
 * The changes of a range that keep its VMAs (mprotect, madvise's flag
 * advice): the protection, or one vm_flags bit set or cleared.
 */
enum change { CHANGE_UNMAP, CHANGE_MAP, CHANGE_PROTECT, CHANGE_SET_FLAG, CHANGE_CLEAR_FLAG };

/* What @what makes of the part of @v in its range: the protection and the flags. */
static void changed_to(const struct vm_area_struct *v, enum change what, uint32_t prot,
		       uint32_t flags, uint32_t *new_prot, uint32_t *new_flags)
{
	*new_prot = what == CHANGE_PROTECT ? prot : v->vm_prot;
	*new_flags = what == CHANGE_SET_FLAG	 ? v->vm_flags | flags
		     : what == CHANGE_CLEAR_FLAG ? v->vm_flags & ~flags
						 : v->vm_flags;
}

/* Whether @what changes @v's part of its range (one it does not change is left whole). */
static bool changes(const struct vm_area_struct *v, enum change what, uint32_t prot,
		    uint32_t flags)
{
	uint32_t new_prot, new_flags;

	changed_to(v, what, prot, flags, &new_prot, &new_flags);
	return new_prot != v->vm_prot || new_flags != v->vm_flags;
}

/*
 * The same as split_if_inside, unless @what leaves that VMA as it is (as
 * Linux's mprotect_fixup() and madvise_update_vma() leave it whole).
 */
static int split_if_changing(struct mm_struct *mm, uint64_t addr, enum change what, uint32_t prot,
			     uint32_t flags)
{
	struct vm_area_struct *v = vma_lookup(&mm->mm_vmas, addr);

	if (v && v->vm_start < addr && changes(v, what, prot, flags))
		return split_at(mm, v, addr);
	return 0;
}

/* VMAs intersecting [start, end). */
static size_t vmas_in(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	size_t n = 0;

	for (struct vm_area_struct *v = vma_find(&mm->mm_vmas, start); v && v->vm_start < end;
	     v = vma_next(v))
		n++;
	return n;
}

/*
 * The limit rule needs the VMA count an operation would leave, merges
 * included, before doing it.  The operation replaces [start, end): by a hole
 * (CHANGE_UNMAP), by one new mapping (CHANGE_MAP), or by the same VMAs with
 * another protection (CHANGE_PROTECT) or flags (CHANGE_SET_FLAG,
 * CHANGE_CLEAR_FLAG).  Only the window of VMAs touching or intersecting
 * [start, end) can change; it is rebuilt as segments, merged as
 * mm_merge_around() would, and counted.
 */
struct segment {
	uint64_t start, end;
	uint32_t prot, flags;
};

static bool segments_merge(const struct segment *a, const struct segment *b)
{
	return a->end == b->start && !(a->flags & VM_SHARED) && !(b->flags & VM_SHARED) &&
	       a->prot == b->prot && a->flags == b->flags;
}

static void push_segment(struct segment *seg, size_t *n, uint64_t start, uint64_t end,
			 uint32_t prot, uint32_t flags)
{
	if (start >= end)
		return;
	seg[*n] = (struct segment){ start, end, prot, flags };
	if (*n && segments_merge(&seg[*n - 1], &seg[*n]))
		seg[*n - 1].end = end;
	else
		(*n)++;
}

static size_t count_after(struct mm_struct *mm, uint64_t start, uint64_t end, enum change what,
			  uint32_t prot, uint32_t flags)
{
	struct vm_area_struct *first = start ? vma_find(&mm->mm_vmas, start - 1)
					     : vma_first(&mm->mm_vmas);
	struct vm_area_struct *v;
	size_t window = 0, n = 0;
	struct segment *seg;
	bool mapped = what != CHANGE_MAP;
	bool keeps = what != CHANGE_MAP && what != CHANGE_UNMAP;	/* the VMAs stay */

	for (v = first; v && v->vm_start <= end; v = vma_next(v))
		window++;
	seg = malloc((3 * window + 1) * sizeof(*seg));
	if (!seg)
		return SIZE_MAX;	/* cannot check: refuse, as over the limit */
	for (v = first; v && v->vm_start <= end; v = vma_next(v)) {
		uint64_t mid_s = v->vm_start > start ? v->vm_start : start;
		uint64_t mid_e = v->vm_end < end ? v->vm_end : end;
		uint32_t new_prot, new_flags;

		if (keeps && !changes(v, what, prot, flags)) {
			/* Left whole, as change_range() leaves it (split_if_changing). */
			push_segment(seg, &n, v->vm_start, v->vm_end, v->vm_prot, v->vm_flags);
			continue;
		}
		if (!mapped && v->vm_start >= start) {
			push_segment(seg, &n, start, end, prot, flags);
			mapped = true;
		}
		push_segment(seg, &n, v->vm_start, v->vm_end < start ? v->vm_end : start,
			     v->vm_prot, v->vm_flags);
		changed_to(v, what, prot, flags, &new_prot, &new_flags);
		if (keeps && mid_s < mid_e)
			push_segment(seg, &n, mid_s, mid_e, new_prot, new_flags);
		if (!mapped && v->vm_end > start) {
			push_segment(seg, &n, start, end, prot, flags);
			mapped = true;
		}
		push_segment(seg, &n, v->vm_start > end ? v->vm_start : end, v->vm_end,
			     v->vm_prot, v->vm_flags);
	}
	if (!mapped)
		push_segment(seg, &n, start, end, prot, flags);
	free(seg);
	return mm->mm_vmas.count - window + n;
}

/* The limit rule: fail if the count left, merges included, exceeds max_map_count and grows. */
static bool over_limit(struct mm_struct *mm, uint64_t start, uint64_t end, enum change what,
		       uint32_t prot, uint32_t flags)
{
	size_t after = count_after(mm, start, end, what, prot, flags);

	return after > mm->mm_vmas.count && after > mm_max_map_count(mm);
}

/* Split at both ends and take the VMAs of [start, end) out of the tree, in order. */
static struct vm_area_struct **detach_range(struct mm_struct *mm, uint64_t start,
					    uint64_t end, size_t *count, int *err)
{
	size_t n = 0, cap;
	struct vm_area_struct **list, *v;

	*err = split_if_inside(mm, start);
	if (!*err)
		*err = split_if_inside(mm, end);
	if (*err)
		return NULL;
	cap = vmas_in(mm, start, end);
	list = malloc((cap ? cap : 1) * sizeof(*list));
	if (!list) {
		*err = -ENOMEM;
		return NULL;
	}
	while ((v = vma_find(&mm->mm_vmas, start)) && v->vm_start < end) {
		mm_vma_unlink(mm, v);
		list[n++] = v;
	}
	*count = n;
	return list;
}

/*
 * Unmap [start, end) with the write lock held: split, detach, then tear the
 * page tables down.  With @downgrade the lock is downgraded to read for the
 * teardown, as the kernel's munmap does, and the caller then holds the
 * read lock.
 */
static int unmap_range(struct mm_struct *mm, uint64_t start, uint64_t end, bool downgrade)
{
	struct vm_area_struct **list;
	size_t n = 0;
	int err;

	list = detach_range(mm, start, end, &n, &err);
	if (!list)
		return err;
	if (n)
		mm_notify_start(mm, start, end, MM_INVAL_UNMAP, 0);
	/* Cannot be refused: we hold the write lock (and asked for it ourselves). */
	if (downgrade)
		(void)mmap_write_downgrade(mm);
	for (size_t i = 0; i < n; i++) {
		pgtable_zap(&mm->pgt, list[i]->vm_start, list[i]->vm_end);
		vma_free(list[i]);
	}
	if (n)
		mm_notify_end(mm, start, end);
	free(list);
	return 0;
}

/* ------------------------------------------------------------------------
 * Finding room.
 */
static bool range_free(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	struct vm_area_struct *v = vma_find(&mm->mm_vmas, start);

	return !v || v->vm_start >= end;
}

/* The highest @len-byte gap in [low, high), or 0. */
static uint64_t gap_topdown(struct mm_struct *mm, uint64_t len, uint64_t low, uint64_t high)
{
	struct vm_area_struct *v = vma_find(&mm->mm_vmas, high - 1);
	uint64_t gap_end = high;

	/* @v is the first VMA ending above high - 1: it straddles high or lies above it. */
	if (v && v->vm_start < high)
		gap_end = v->vm_start;
	v = v ? vma_prev(v) : vma_last(&mm->mm_vmas);
	for (;;) {
		uint64_t gap_start = v && v->vm_end > low ? v->vm_end : low;

		if (gap_end >= gap_start + len && gap_end - len >= low)
			return gap_end - len;
		if (!v || v->vm_end <= low)
			return 0;
		gap_end = v->vm_start;
		v = vma_prev(v);
	}
}

/* The lowest @len-byte gap in [low, high), or 0 (MAP_32BIT searches bottom-up, as x86-64). */
static uint64_t gap_bottomup(struct mm_struct *mm, uint64_t len, uint64_t low, uint64_t high)
{
	uint64_t at = low;

	for (struct vm_area_struct *v = vma_find(&mm->mm_vmas, low); at + len <= high;
	     v = vma_next(v)) {
		if (!v || v->vm_start >= at + len)
			return at;
		at = v->vm_end;
	}
	return 0;
}

uint64_t mm_find_room(struct mm_struct *mm, uint64_t hint, uint64_t len, bool low32)
{
	uint64_t a;

	/* The kernel's round_hint_to_min(): round down, and lift a low hint. */
	hint &= ~(uint64_t)(MM_PAGE_SIZE - 1);
	if (hint && hint < MM_MMAP_MIN_ADDR)
		hint = MM_MMAP_MIN_ADDR;
	if (hint) {
		if (hint + len <= MM_TASK_SIZE && hint + len > hint &&
		    range_free(mm, hint, hint + len))
			return hint;
	}
	if (low32)
		return gap_bottomup(mm, len, MM_32BIT_LOW, MM_32BIT_HIGH);
	a = gap_topdown(mm, len, MM_MMAP_MIN_ADDR, mm->mmap_base);
	if (!a)
		a = gap_topdown(mm, len, MM_MMAP_MIN_ADDR, MM_TASK_SIZE);
	return a;
}

/* ------------------------------------------------------------------------
 * mmap.
 */
static int64_t do_mmap(struct mm_struct *mm, uint64_t addr, uint64_t len, int prot, int flags)
{
	bool fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE);
	uint32_t vm_flags = flags & MAP_SHARED ? VM_SHARED : 0;
	struct vm_area_struct *v;
	size_t removed = 0;
	int type;

	if (fixed) {
		/* MAP_FIXED_NOREPLACE wins over MAP_FIXED, as in the kernel. */
		if (flags & MAP_FIXED_NOREPLACE && !range_free(mm, addr, addr + len))
			return -EEXIST;
		removed = vmas_in(mm, addr, addr + len);
	} else {
		addr = mm_find_room(mm, addr, len, flags & MM_MAP_32BIT);
		if (!addr)
			return -ENOMEM;
	}
	/* The kernel checks the mapping type last, once the range is settled. */
	type = flags & (MAP_SHARED | MAP_PRIVATE);
	if (type != MAP_SHARED && type != MAP_PRIVATE)
		return -EINVAL;
	if (flags & MAP_GROWSDOWN) {
		/* do_mmap(): a shared anonymous mapping cannot grow (VM_GROWSDOWN). */
		if (type == MAP_SHARED)
			return -EINVAL;
		vm_flags |= VM_GROWSDOWN;
	}
	if (over_limit(mm, addr, addr + len, CHANGE_MAP, (uint32_t)prot, vm_flags))
		return -ENOMEM;
	v = vma_alloc();
	if (!v)
		return -ENOMEM;
	v->vm_start = addr;
	v->vm_end = addr + len;
	v->vm_prot = (uint32_t)prot;
	v->vm_flags = vm_flags;
	if (flags & MAP_SHARED) {
		v->vm_shared = anon_shared_new(len >> MLN_PAGE_SHIFT);
		if (!v->vm_shared) {
			vma_free(v);
			return -ENOMEM;
		}
	}
	if (fixed && removed) {
		int err = unmap_range(mm, addr, addr + len, false);

		if (err) {
			vma_free(v);
			return err;
		}
	}
	mm_vma_link(mm, v);	/* the range is free now */
	mm_merge_around(mm, v);
	return (int64_t)addr;
}

int64_t mm_mmap(struct mm_struct *mm, uint64_t addr, uint64_t length, int prot, int flags)
{
	MM_OP(MM_OP_MMAP);
	bool fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE);
	uint64_t len = PAGE_ALIGN(length);
	int64_t ret;

	ret = mm_refused(mm);
	if (ret)
		return ret;
	/* The kernel's order of checks: descriptor, length, range; the type comes last. */
	if (!(flags & MAP_ANONYMOUS))
		return -EBADF;		/* no file descriptor: only anonymous memory here */
	/*
	 * ksys_mmap_pgoff(): an anonymous MAP_HUGETLB mapping needs a huge page
	 * size, and a kernel without hugetlb support has none (EINVAL, as on
	 * such a kernel; with hugetlbfs but no pages reserved Linux gives ENOMEM).
	 */
	if (flags & MAP_HUGETLB)
		return -EINVAL;
	if (!length)
		return -EINVAL;
	if (len < length || len > MM_TASK_SIZE)
		return -ENOMEM;
	if (fixed) {
		/* __get_unmapped_area(): the range first, then the alignment. */
		if (addr + len > MM_TASK_SIZE || addr + len < addr)
			return -ENOMEM;
		if (!page_aligned(addr))
			return -EINVAL;
		if (addr < MM_MMAP_MIN_ADDR)
			return -EPERM;
	}
	prot &= PROT_ALL;	/* mmap ignores unknown protection bits; mprotect does not */
	ret = mm_lock(mm, true);
	if (ret)
		return ret;	/* refused (we hold it already, or the checker said no) */
	ret = mm->mm_closed ? -EINVAL : do_mmap(mm, addr, len, prot, flags);
	mmap_write_unlock(mm);
	/*
	 * vm_mmap_pgoff(): MAP_POPULATE (without MAP_NONBLOCK) and MAP_LOCKED
	 * prefault after the write lock is dropped, under the read lock; what
	 * cannot be faulted in is left for later faults, as mm_populate() does.
	 */
	if (ret >= 0 && ((flags & (MAP_POPULATE | MAP_NONBLOCK)) == MAP_POPULATE ||
			 (flags & MAP_LOCKED)))
		mm_populate(mm, (uint64_t)ret, len);
	return ret;
}

/* ------------------------------------------------------------------------
 * munmap.
 */
int mm_do_munmap(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	if (over_limit(mm, start, end, CHANGE_UNMAP, 0, 0))
		return -ENOMEM;
	return unmap_range(mm, start, end, false);
}

int mm_munmap(struct mm_struct *mm, uint64_t addr, uint64_t length)
{
	MM_OP(MM_OP_MUNMAP);
	uint64_t len = page_length(addr, length), end = addr + len;
	int err;

	err = mm_refused(mm);
	if (err)
		return err;
	if (!page_aligned(addr) || !len || end > MM_TASK_SIZE)
		return -EINVAL;
	err = mm_lock(mm, true);
	if (err)
		return err;
	if (mm->mm_closed) {
		mmap_write_unlock(mm);
		return -EINVAL;
	}
	if (over_limit(mm, addr, end, CHANGE_UNMAP, 0, 0)) {
		mmap_write_unlock(mm);
		return -ENOMEM;
	}
	err = unmap_range(mm, addr, end, true);
	if (err) {
		mmap_write_unlock(mm);
		return err;
	}
	mmap_read_unlock(mm);		/* downgraded for the teardown */
	return 0;
}

/* ------------------------------------------------------------------------
 * mprotect.
 */
static bool fully_mapped(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	uint64_t at = start;

	for (struct vm_area_struct *v = vma_find(&mm->mm_vmas, start); at < end;
	     v = vma_next(v)) {
		if (!v || v->vm_start > at)
			return false;
		at = v->vm_end;
	}
	return true;
}

static int change_range(struct mm_struct *mm, uint64_t start, uint64_t end, enum change what,
			uint32_t prot, uint32_t flags);

/* The end of the mapped run from @start (at most @end); @start itself if unmapped. */
static uint64_t mapped_until(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	uint64_t at = start;

	for (struct vm_area_struct *v = vma_find(&mm->mm_vmas, start); at < end && v;
	     v = vma_next(v)) {
		if (v->vm_start > at)
			break;
		at = v->vm_end;
	}
	return at < end ? at : end;
}

/*
 * As Linux: the VMAs from @start up to the first hole are changed, and a
 * hole before @end makes the call fail with ENOMEM afterwards (a hole at
 * @start changes nothing).
 */
static int do_mprotect(struct mm_struct *mm, uint64_t start, uint64_t end, int prot)
{
	uint64_t stop = mapped_until(mm, start, end);
	int err = change_range(mm, start, stop, CHANGE_PROTECT, (uint32_t)prot, 0);

	if (err)
		return err;
	return stop < end ? -ENOMEM : 0;
}

/*
 * Change the protection (CHANGE_PROTECT: @prot) or one flag (@flags) of the
 * VMAs of [start, end), write lock held: split at the ends, change, merge.
 * Holes in the range are passed over (mprotect gives none).  0, or -ENOMEM
 * (the VMA limit, or no memory for a split: nothing changed).
 */
static int change_range(struct mm_struct *mm, uint64_t start, uint64_t end, enum change what,
			uint32_t prot, uint32_t flags)
{
	bool protect = what == CHANGE_PROTECT;
	struct vm_area_struct *v;
	int err;

	if (start == end)
		return 0;
	if (over_limit(mm, start, end, what, prot, flags))
		return -ENOMEM;
	/* A VMA the change leaves as it is is left whole, as Linux leaves it. */
	err = split_if_changing(mm, start, what, prot, flags);
	if (!err)
		err = split_if_changing(mm, end, what, prot, flags);
	if (err)
		return err;
	/* The emulator's translations of the range are stale from here (flags change none). */
	if (protect)
		mm_notify_start(mm, start, end, MM_INVAL_PROTECT, prot);
	for (v = vma_find(&mm->mm_vmas, start); v && v->vm_start < end; v = vma_next(v)) {
		uint32_t new_prot, new_flags;

		changed_to(v, what, prot, flags, &new_prot, &new_flags);
		if (new_prot == v->vm_prot && new_flags == v->vm_flags)
			continue;	/* as Linux, which returns early for it: no lock, no seq */
		mm_vma_lock(mm, v);
		if ((v->vm_prot & PROT_WRITE) && !(new_prot & PROT_WRITE))
			pgtable_wrprotect(&mm->pgt, v->vm_start, v->vm_end);
		v->vm_prot = new_prot;
		v->vm_flags = new_flags;
	}
	if (protect)
		mm_notify_end(mm, start, end);
	/* Merge the changed VMAs with each other and with their outer neighbours. */
	for (v = vma_find(&mm->mm_vmas, start); v && v->vm_start <= end; v = vma_next(v))
		v = mm_merge_around(mm, v);
	return 0;
}

/*
 * mprotect's PROT_GROWSDOWN / PROT_GROWSUP, under the write lock: the range
 * starts at the first VMA it overlaps, which must be a MAP_GROWSDOWN one
 * (its whole span below @end is changed, so a stack's guard gap moves with
 * it); no VMA grows up on x86-64 or arm64, so PROT_GROWSUP finds none to
 * extend.  As Linux: no VMA in the range is ENOMEM, before the flag check;
 * for PROT_GROWSUP a hole at @start is ENOMEM first too.
 */
static int grows_start(struct mm_struct *mm, int grows, uint64_t *start, uint64_t end)
{
	struct vm_area_struct *v = vma_find(&mm->mm_vmas, *start);

	if (!v || v->vm_start >= end)
		return -ENOMEM;
	if (grows & PROT_GROWSUP)
		return v->vm_start > *start ? -ENOMEM : -EINVAL;
	if (!(v->vm_flags & VM_GROWSDOWN))
		return -EINVAL;
	*start = v->vm_start;
	return 0;
}

int mm_mprotect(struct mm_struct *mm, uint64_t addr, uint64_t length, int prot)
{
	MM_OP(MM_OP_MPROTECT);
	int grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP);
	uint64_t len, end;
	int err;

	err = mm_refused(mm);
	if (err)
		return err;
	prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP);
	if (grows == (PROT_GROWSDOWN | PROT_GROWSUP))
		return -EINVAL;		/* not both: checked first, as Linux does */
	if (!page_aligned(addr))
		return -EINVAL;
	if (!length)
		return 0;
	len = page_length(addr, length);
	end = addr + len;
	if (!len)
		return -ENOMEM;
	if (prot & ~(PROT_ALL | PROT_SEM))
		return -EINVAL;
	prot &= PROT_ALL;	/* PROT_SEM is valid and means nothing here (as on x86) */
	err = mm_lock(mm, true);
	if (err)
		return err;
	if (mm->mm_closed)
		err = -EINVAL;
	else if (grows)
		err = grows_start(mm, grows, &addr, end);
	if (!err)
		err = do_mprotect(mm, addr, end, prot);
	mmap_write_unlock(mm);
	return err;
}

/* ------------------------------------------------------------------------
 * brk.
 */
static bool brk_grow(struct mm_struct *mm, uint64_t oldbrk, uint64_t newbrk)
{
	struct vm_area_struct *prev, *v;

	/* Room for the new part and a guard page above it. */
	if (newbrk + MM_PAGE_SIZE > MM_TASK_SIZE || !range_free(mm, oldbrk, newbrk + MM_PAGE_SIZE))
		return false;
	prev = oldbrk > MM_MMAP_MIN_ADDR ? vma_lookup(&mm->mm_vmas, oldbrk - 1) : NULL;
	/* do_brk_flags() grows only a VMA whose flags a new heap VMA would have. */
	if (prev && prev->vm_flags == 0 &&
	    prev->vm_prot == (PROT_READ | PROT_WRITE) && prev->vm_end == oldbrk) {
		mm_vma_lock(mm, prev);
		prev->vm_end = newbrk;		/* the heap VMA grows in place */
		mm_merge_around(mm, prev);
		return true;
	}
	if (over_limit(mm, oldbrk, newbrk, CHANGE_MAP, PROT_READ | PROT_WRITE, 0))
		return false;
	v = vma_alloc();
	if (!v)
		return false;
	v->vm_start = oldbrk;
	v->vm_end = newbrk;
	v->vm_prot = PROT_READ | PROT_WRITE;
	mm_vma_link(mm, v);
	mm_merge_around(mm, v);
	return true;
}

int64_t mm_brk(struct mm_struct *mm, uint64_t brk)
{
	MM_OP(MM_OP_BRK);
	uint64_t oldbrk, newbrk;
	int64_t ret;

	ret = mm_refused(mm);
	if (ret)
		return ret;
	ret = mm_lock(mm, true);
	if (ret)
		return ret;
	ret = (int64_t)mm->brk;
	if (mm->mm_closed || brk < mm->start_brk || brk > MM_TASK_SIZE)
		goto out;
	oldbrk = PAGE_ALIGN(mm->brk);
	newbrk = PAGE_ALIGN(brk);
	if (brk != mm->brk)
		mm_layout_changed(mm);	/* the "[heap]" test reads the break */
	if (newbrk == oldbrk) {
		mm->brk = brk;
	} else if (brk < mm->brk) {
		/* Shrinking: the freed pages go as by munmap (a split may be needed). */
		if (over_limit(mm, newbrk, oldbrk, CHANGE_UNMAP, 0, 0) ||
		    unmap_range(mm, newbrk, oldbrk, false))
			goto out;
		mm->brk = brk;
	} else if (brk_grow(mm, oldbrk, newbrk)) {
		mm->brk = brk;
	}
	ret = (int64_t)mm->brk;
out:
	mmap_write_unlock(mm);
	return ret;
}

/* ------------------------------------------------------------------------
 * madvise.
 */
static int dontneed(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	bool hole = false;
	uint64_t at = start;

	for (struct vm_area_struct *v = vma_find(&mm->mm_vmas, start); v && v->vm_start < end;
	     v = vma_next(v)) {
		uint64_t s = v->vm_start > start ? v->vm_start : start;
		uint64_t e = v->vm_end < end ? v->vm_end : end;

		if (s > at)
			hole = true;
		mm_notify_start(mm, s, e, MM_INVAL_DONTNEED, v->vm_prot);
		if (vma_host_backed(mm, v))
			backing_dontneed(mm, s, e);	/* the window pages read zero too */
		else
			pgtable_zap(&mm->pgt, s, e);
		mm_notify_end(mm, s, e);
		at = e;
	}
	/* As Linux: the mapped parts are done, and an unmapped part is reported. */
	return hole || at < end ? -ENOMEM : 0;
}

enum madv_kind {
	MADV_KIND_INVALID, MADV_KIND_HINT, MADV_KIND_DROP, MADV_KIND_FREE, MADV_KIND_FLAG,
	MADV_KIND_POPULATE
};

/*
 * What an advice does to anonymous memory here.  Hints change nothing an
 * emulated mm can observe (readahead, reclaim, huge pages, core dumps), so
 * only the kernel's range check is made.  MADV_FREE lets the kernel drop a
 * private page until it is written again, so a read may see the old data or
 * zeros: dropping at once is one of its outcomes.  MADV_DONTFORK / DOFORK
 * and MADV_WIPEONFORK / KEEPONFORK set or clear a VMA flag (VM_DONTCOPY,
 * VM_WIPEONFORK) under the write lock, splitting at the range's edges as
 * mprotect does; mm_fork() honours them.  MADV_POPULATE_READ / WRITE fault
 * the range in as reads / writes under the read lock.  Advice whose effect
 * is not emulated (KSM, memory failure, MADV_REMOVE on shared memory,
 * MADV_COLLAPSE, guard regions) is EINVAL, as from a kernel built without it.
 */
static enum madv_kind madvise_kind(int advice)
{
	switch (advice) {
	case MADV_NORMAL: case MADV_RANDOM: case MADV_SEQUENTIAL: case MADV_WILLNEED:
	case MADV_COLD: case MADV_PAGEOUT: case MADV_HUGEPAGE: case MADV_NOHUGEPAGE:
	case MADV_DONTDUMP: case MADV_DODUMP:
		return MADV_KIND_HINT;
	case MADV_DONTNEED: case MADV_DONTNEED_LOCKED:
		return MADV_KIND_DROP;
	case MADV_FREE:
		return MADV_KIND_FREE;
	case MADV_DONTFORK: case MADV_DOFORK: case MADV_WIPEONFORK: case MADV_KEEPONFORK:
		return MADV_KIND_FLAG;
	case MADV_POPULATE_READ: case MADV_POPULATE_WRITE:
		return MADV_KIND_POPULATE;
	default:
		return MADV_KIND_INVALID;
	}
}

/*
 * Linux's madvise_need_mmap_write(): the advice that only drops, prefaults
 * or hints about pages takes the read lock; the rest (the flag advice, and
 * the hints Linux records in vm_flags: NORMAL, RANDOM, SEQUENTIAL,
 * (NO)HUGEPAGE, DONTDUMP, DODUMP) the write lock, so lock statistics and
 * refusals under a caller's read lock are the kernel's.
 */
static bool madvise_needs_write(int advice)
{
	switch (advice) {
	case MADV_WILLNEED: case MADV_DONTNEED: case MADV_DONTNEED_LOCKED: case MADV_COLD:
	case MADV_PAGEOUT: case MADV_FREE: case MADV_POPULATE_READ: case MADV_POPULATE_WRITE:
		return false;
	default:
		return true;
	}
}

/*
 * Where the first shared VMA of [start, end) begins (at least @start), or
 * @end if none: MADV_FREE and MADV_WIPEONFORK apply to private anonymous
 * memory only.
 */
static uint64_t first_shared(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	for (struct vm_area_struct *v = vma_find(&mm->mm_vmas, start); v && v->vm_start < end;
	     v = vma_next(v))
		if (v->vm_flags & VM_SHARED)
			return v->vm_start > start ? v->vm_start : start;
	return end;
}

/*
 * MADV_DONTFORK / DOFORK / WIPEONFORK / KEEPONFORK, write lock held.  As
 * Linux's madvise_behavior() (5.x; madvise_vma_behavior() since 5.18), VMA
 * by VMA: the mapped parts change and a hole is reported with ENOMEM
 * afterwards; MADV_WIPEONFORK stops with EINVAL at a shared VMA, the VMAs
 * before it changed.  Where a split fails for want of memory or of room
 * under max_map_count, Linux since 5.18 returns EAGAIN (madvise_vma_behavior()
 * turns ENOMEM into it; 5.x before gave ENOMEM for the limit); here the
 * limit is checked first, by the rule above, and then nothing changes.
 */
static int madvise_flag(struct mm_struct *mm, uint64_t start, uint64_t end, int advice)
{
	bool set = advice == MADV_DONTFORK || advice == MADV_WIPEONFORK;
	uint32_t flag = advice == MADV_DONTFORK || advice == MADV_DOFORK ? VM_DONTCOPY
									   : VM_WIPEONFORK;
	uint64_t stop = advice == MADV_WIPEONFORK ? first_shared(mm, start, end) : end;
	int err = change_range(mm, start, stop, set ? CHANGE_SET_FLAG : CHANGE_CLEAR_FLAG, 0, flag);

	if (err)
		return err == -ENOMEM ? -EAGAIN : err;
	if (stop < end)
		return -EINVAL;
	return fully_mapped(mm, start, end) ? 0 : -ENOMEM;
}

int mm_madvise(struct mm_struct *mm, uint64_t addr, uint64_t length, int advice)
{
	MM_OP(MM_OP_MADVISE);
	enum madv_kind kind = madvise_kind(advice);
	bool write = madvise_needs_write(advice);
	uint64_t len, end;
	int err = 0;

	err = mm_refused(mm);
	if (err)
		return err;
	if (!page_aligned(addr) || kind == MADV_KIND_INVALID)
		return -EINVAL;
	if (!length)
		return 0;
	len = page_length(addr, length);
	end = addr + len;
	if (!len)
		return -EINVAL;		/* the range wraps */
	err = mm_lock(mm, write);
	if (err)
		return err;
	if (mm->mm_closed)
		err = -EINVAL;
	else if (kind == MADV_KIND_HINT)
		err = fully_mapped(mm, addr, end) ? 0 : -ENOMEM;
	else if (kind == MADV_KIND_FLAG)
		err = madvise_flag(mm, addr, end, advice);
	else if (kind == MADV_KIND_POPULATE)
		err = mm_populate_locked(mm, addr, end,
					 advice == MADV_POPULATE_WRITE ? MM_POPULATE_WRITE
								       : MM_POPULATE_READ);
	else if (kind == MADV_KIND_FREE && first_shared(mm, addr, end) < end)
		err = -EINVAL;
	else
		err = dontneed(mm, addr, end);
	if (write)
		mmap_write_unlock(mm);
	else
		mmap_read_unlock(mm);
	return err;
}
