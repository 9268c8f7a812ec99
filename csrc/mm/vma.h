/* SPDX-License-Identifier: MIT */
/*
 * vma.h - virtual memory areas and the ordered set that holds an mm's VMAs.
 *
 * The set is an intrusive AVL tree of non-overlapping [vm_start, vm_end)
 * intervals keyed by vm_start, with O(log n) lookup by address (the kernel
 * uses a maple tree, a B-tree, for the same job).  It is not thread-safe by
 * itself: the mm's mmap_lock serialises writers (write mode) against readers
 * (read mode), as in the kernel.  A writer may move a VMA's bounds in place
 * (split, merge, brk) as long as the order and disjointness stay intact.
 */
#ifndef MLN_VMA_H
#define MLN_VMA_H

#include <stddef.h>
#include <stdint.h>

/* vm_flags */
#define VM_SHARED 1u	/* MAP_SHARED: pages shared with forks, never copied on write */
#define VM_HEAP 2u	/* the brk area ("[heap]" in maps) */

struct anon_shared;	/* mm.c: the backing of a shared anonymous mapping */

struct vm_area_struct {
	uint64_t vm_start;	/* first byte, page aligned */
	uint64_t vm_end;	/* one past the last byte, page aligned */
	uint32_t vm_prot;	/* PROT_READ | PROT_WRITE | PROT_EXEC */
	uint32_t vm_flags;	/* VM_* */
	uint64_t vm_pgoff;	/* page index of vm_start in vm_shared */
	struct anon_shared *vm_shared;	/* VM_SHARED: the pages' owner; else NULL */

	/* The tree's links: vma.c's business only. */
	struct vm_area_struct *vt_left, *vt_right, *vt_parent;
	int vt_height;
};

struct vma_tree {
	struct vm_area_struct *root;
	size_t count;
};

void vma_tree_init(struct vma_tree *t);
/* Insert @v (its bounds set): 0, or -EEXIST if it overlaps a VMA in @t. */
int vma_tree_insert(struct vma_tree *t, struct vm_area_struct *v);
/* Remove @v, which is in @t. */
void vma_tree_erase(struct vma_tree *t, struct vm_area_struct *v);

/* The kernel's find_vma(): the first VMA with vm_end > @addr, or NULL. */
struct vm_area_struct *vma_find(const struct vma_tree *t, uint64_t addr);
/* The VMA containing @addr, or NULL. */
struct vm_area_struct *vma_lookup(const struct vma_tree *t, uint64_t addr);
/* In address order; NULL past either end. */
struct vm_area_struct *vma_first(const struct vma_tree *t);
struct vm_area_struct *vma_last(const struct vma_tree *t);
struct vm_area_struct *vma_next(const struct vm_area_struct *v);
struct vm_area_struct *vma_prev(const struct vm_area_struct *v);

/*
 * Check every invariant (order, disjointness, parent links, AVL heights and
 * balance, count): 0, or -EINVAL with a description of the first violation
 * in @why (may be NULL).  For tests and debug builds: O(n).
 */
int vma_tree_check(const struct vma_tree *t, const char **why);

#endif /* MLN_VMA_H */
