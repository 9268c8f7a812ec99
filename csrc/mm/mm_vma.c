/* SPDX-License-Identifier: MIT */
/*
 * mm_vma.c - VMA memory and the changes of an mm's VMA set, with the
 * per-VMA lock protocol every change follows (vma_lock.h): a VMA is
 * write-locked before any of its fields changes or it enters or leaves the
 * tree, and marked attached or detached as it does.
 *
 * VMA memory is type-stable, as the kernel's VMA slab is since 6.15
 * (SLAB_TYPESAFE_BY_RCU): a freed VMA goes to a pool and is only ever
 * reused as a VMA, never returned to the system.  A fault that found a VMA
 * without the mmap lock may therefore still read it after it was freed,
 * and its validation tells (detached, another mm, another range).  What
 * that costs: the pool holds the peak number of VMAs ever live, at
 * sizeof(struct vm_area_struct) each.  (RCU or hazard pointers would give
 * the memory back, for a grace period or a scan per free; the pool needs
 * neither and the count of VMAs is bounded by max_map_count per mm.)
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "futex.h"
#include "mm_internal.h"
#include "vma_lock.h"

#define POOL_CHUNK 64		/* VMAs allocated at once when the pool is empty */

static struct {
	_Atomic uint32_t lock;			/* futex mutex over the list */
	struct vm_area_struct *free;		/* through vm_pool_next */
} pool;

/*
 * fork(): the free list must not be mid-update, so the forking thread holds
 * its lock across it; the child, where only that thread exists, resets it.
 */
static void pool_fork_prepare(void)
{
	mln_mutex_lock(&pool.lock, 0);
}

static void pool_fork_parent(void)
{
	mln_mutex_unlock(&pool.lock, 0);
}

static void pool_fork_child(void)
{
	atomic_store_explicit(&pool.lock, 0, memory_order_relaxed);
}

/* At load, before any thread can be inside the pool: no fork can come first. */
__attribute__((constructor)) static void pool_module_init(void)
{
	pthread_atfork(pool_fork_prepare, pool_fork_parent, pool_fork_child);
}

/*
 * A detached VMA with zero fields, from the pool.  The fields the lockless
 * lookup and vma_start_read() read are stored atomically: a fault may still
 * be looking at this memory's previous life.
 */
struct vm_area_struct *vma_alloc(void)
{
	struct vm_area_struct *v;

	mln_mutex_lock(&pool.lock, 0);
	if (!pool.free) {
		struct vm_area_struct *chunk;

		if (posix_memalign((void **)&chunk, 64, POOL_CHUNK * sizeof(*chunk))) {
			mln_mutex_unlock(&pool.lock, 0);
			return NULL;
		}
		memset(chunk, 0, POOL_CHUNK * sizeof(*chunk));
		for (int i = 0; i < POOL_CHUNK; i++) {
			vma_lock_init(&chunk[i].vm_lock);
			chunk[i].vm_pool_next = pool.free;
			pool.free = &chunk[i];
		}
	}
	v = pool.free;
	pool.free = v->vm_pool_next;
	mln_mutex_unlock(&pool.lock, 0);

	v->vm_pool_next = NULL;
	atomic_store_explicit(&v->vm_start, 0, memory_order_relaxed);
	atomic_store_explicit(&v->vm_end, 0, memory_order_relaxed);
	atomic_store_explicit(&v->vt_left, NULL, memory_order_relaxed);
	atomic_store_explicit(&v->vt_right, NULL, memory_order_relaxed);
	v->vt_parent = NULL;
	v->vt_height = 0;
	v->vm_prot = 0;
	v->vm_flags = 0;
	v->vm_pgoff = 0;
	v->vm_shared = NULL;
	v->vm_mm = NULL;
	return v;
}

struct vm_area_struct *vma_dup(const struct vm_area_struct *v)
{
	struct vm_area_struct *n = vma_alloc();

	if (!n)
		return NULL;
	atomic_store_explicit(&n->vm_start, v->vm_start, memory_order_relaxed);
	atomic_store_explicit(&n->vm_end, v->vm_end, memory_order_relaxed);
	n->vm_prot = v->vm_prot;
	n->vm_flags = v->vm_flags;
	n->vm_pgoff = v->vm_pgoff;
	n->vm_shared = v->vm_shared;
	if (n->vm_shared)
		anon_shared_get(n->vm_shared);
	return n;
}

/* @v is detached (never linked, or unlinked): back to the pool. */
void vma_free(struct vm_area_struct *v)
{
	if (v->vm_shared)
		anon_shared_put(v->vm_shared);
	v->vm_shared = NULL;
	mln_mutex_lock(&pool.lock, 0);
	v->vm_pool_next = pool.free;
	pool.free = v;
	mln_mutex_unlock(&pool.lock, 0);
}

void mm_vma_lock(struct mm_struct *mm, struct vm_area_struct *v)
{
	vma_start_write(mm, &v->vm_lock);
	mm_layout_changed(mm);	/* after: see mm_layout_changed() */
}

int mm_vma_link(struct mm_struct *mm, struct vm_area_struct *v)
{
	int rc;

	mm_vma_lock(mm, v);
	v->vm_mm = mm;
	rc = vma_tree_insert(&mm->mm_vmas, v);
	if (rc == 0)
		vma_mark_attached(&v->vm_lock);	/* release: after every field */
	return rc;
}

void mm_vma_unlink(struct mm_struct *mm, struct vm_area_struct *v)
{
	mm_vma_lock(mm, v);
	vma_tree_erase(&mm->mm_vmas, v);
	vma_mark_detached(&v->vm_lock);
}
