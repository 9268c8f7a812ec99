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
 *
 * One reader needs no lock: vma_lookup_lockless(), the per-VMA lock's
 * lookup (the kernel's maple tree walk under RCU).  For it, the fields it
 * reads (the root, the child links, the bounds) are atomics, every store to
 * them is atomic, and VMA memory is never returned to the system (mm.c's
 * pool), so a stale pointer still points at a VMA.  Its answer may be wrong
 * while a writer works; the per-VMA lock's validation catches that.
 */
#ifndef MLN_VMA_H
#define MLN_VMA_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "vma_lock_types.h"

/* vm_flags */
#define VM_SHARED 1u	/* MAP_SHARED: pages shared with forks, never copied on write */
#define VM_HEAP 2u	/* the brk area ("[heap]" in maps) */
#define VM_GROWSDOWN 4u	/* MAP_GROWSDOWN: a fault below it grows it (mm_stack.c) */
#define VM_DONTCOPY 8u	/* MADV_DONTFORK: fork leaves the range unmapped in the child */
#define VM_WIPEONFORK 16u	/* MADV_WIPEONFORK: the child gets the VMA empty (private only) */

struct anon_shared;	/* mm.c: the backing of a shared anonymous mapping */
struct mm_struct;

/*
 * The first cache line holds what a fault reads (the lookup's bounds and
 * links, the lock word, the owner and the protection), so that a fault
 * touches one line per VMA it passes; the rest is for writers.
 */
struct vm_area_struct {
	_Atomic uint64_t vm_start;	/* first byte, page aligned */
	_Atomic uint64_t vm_end;	/* one past the last byte, page aligned */
	/* The tree's links: vma.c's business only. */
	struct vm_area_struct *_Atomic vt_left, *_Atomic vt_right;
	struct vma_lock vm_lock;	/* the per-VMA lock (vma_lock.h) */
	struct mm_struct *vm_mm;	/* the mm whose tree holds it (set before attaching) */
	uint32_t vm_prot;	/* PROT_READ | PROT_WRITE | PROT_EXEC */
	uint32_t vm_flags;	/* VM_* */
	struct anon_shared *vm_shared;	/* VM_SHARED: the pages' owner; else NULL */

	uint64_t vm_pgoff;	/* page index of vm_start in vm_shared */
	struct vm_area_struct *vt_parent;	/* (not read by the lockless lookup) */
	int vt_height;
	struct vm_area_struct *vm_pool_next;	/* mm.c's free pool */
} __attribute__((aligned(64)));

struct vma_tree {
	struct vm_area_struct *_Atomic root;
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
/*
 * vma_lookup() without the mmap lock, racing writers: the VMA that seemed
 * to contain @addr on the way down, or NULL.  Either may be wrong while a
 * writer changes the tree; the caller validates (lock_vma_under_rcu).
 * At most VMA_LOCKLESS_MAX_STEPS nodes are visited.
 */
#define VMA_LOCKLESS_MAX_STEPS 96
struct vm_area_struct *vma_lookup_lockless(const struct vma_tree *t, uint64_t addr);
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
