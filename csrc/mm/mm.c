/* SPDX-License-Identifier: MIT */
/*
 * mm.c - life cycle of the emulated mm_struct: allocation, exit_mmap, fork,
 * MMU notifiers, the maps listing, and the pieces the other mm files share
 * (VMA allocation, the shared-anonymous backing object).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "frames.h"
#include "futex.h"
#include "host_backing.h"
#include "mm.h"
#include "mm_internal.h"
#include "mmap_lock.h"
#include "mmap_lock_stats.h"
#include "vma_lock.h"

/* ------------------------------------------------------------------------
 * Shared anonymous backing.
 */
struct anon_shared *anon_shared_new(uint64_t nr_pages)
{
	struct anon_shared *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->pages = calloc(nr_pages ? nr_pages : 1, sizeof(*s->pages));
	if (!s->pages) {
		free(s);
		return NULL;
	}
	s->nr_pages = nr_pages;
	atomic_init(&s->refs, 1);
	return s;
}

void anon_shared_get(struct anon_shared *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void anon_shared_put(struct anon_shared *s)
{
	/* Acq_rel: the last put sees every page store of the other holders. */
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (uint64_t i = 0; i < s->nr_pages; i++)
		if (s->pages[i])
			page_put(s->pages[i]);
	free(s->pages);
	free(s);
}

struct page *anon_shared_page(struct anon_shared *s, uint64_t index)
{
	struct page *p;

	mln_mutex_lock(&s->lock, 0);
	if (index >= s->nr_pages) {	/* under the lock: mremap may grow it */
		mln_mutex_unlock(&s->lock, 0);
		return NULL;
	}
	p = s->pages[index];
	if (!p) {
		/* Zeroing 4 KiB under this lock is short, and keeps one page per index. */
		p = page_alloc(NULL);
		s->pages[index] = p;
	}
	if (p)
		page_get(p);
	mln_mutex_unlock(&s->lock, 0);
	return p;
}

int anon_shared_grow(struct anon_shared *s, uint64_t nr_pages)
{
	struct page **pages;

	mln_mutex_lock(&s->lock, 0);
	if (nr_pages > s->nr_pages) {
		pages = realloc(s->pages, nr_pages * sizeof(*pages));
		if (!pages) {
			mln_mutex_unlock(&s->lock, 0);
			return -ENOMEM;
		}
		memset(pages + s->nr_pages, 0, (nr_pages - s->nr_pages) * sizeof(*pages));
		s->pages = pages;
		s->nr_pages = nr_pages;
	}
	mln_mutex_unlock(&s->lock, 0);
	return 0;
}

/* ------------------------------------------------------------------------
 * MMU notifiers.  The list changes only under the write lock; every caller
 * of the notify functions holds the lock in some mode, so it is stable.
 */
struct mmu_notifier {
	struct mmu_notifier *next;
	const struct mmu_notifier_ops *ops;
	void *arg;
	int id;
};

MLN_HOT_TLS _Thread_local struct mm_notify_frame *mm_notifying;

/* Run @fn over @mm's notifiers with @mm on the calling thread's notifying stack. */
#define NOTIFY_EACH(mm, member, ...)							\
	do {										\
		struct mm_notify_frame frame = { (mm), mm_notifying };			\
		mm_notifying = &frame;							\
		for (struct mmu_notifier *n = (mm)->notifiers; n; n = n->next)		\
			if (n->ops->member)						\
				n->ops->member(__VA_ARGS__, n->arg);			\
		mm_notifying = frame.up;						\
	} while (0)

void mm_notify_start(struct mm_struct *mm, uint64_t start, uint64_t end, uint32_t reason,
		     uint32_t new_prot)
{
	/* The secondary MMUs first: their guests stop before anything else runs. */
	mm_inval_start(mm, start, end, reason, new_prot);
	NOTIFY_EACH(mm, invalidate_range_start, mm, start, end);
}

void mm_notify_end(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	NOTIFY_EACH(mm, invalidate_range_end, mm, start, end);
	mm_inval_end(mm, start, end);
}

static void notify_release(struct mm_struct *mm)
{
	NOTIFY_EACH(mm, release, mm);
}

int mm_register_notifier(struct mm_struct *mm, const struct mmu_notifier_ops *ops, void *arg)
{
	MM_OP(MM_OP_NOTIFIER);
	static _Atomic int next_id = 1;
	struct mmu_notifier *n;
	int id, rc;

	rc = mm_refused(mm);
	if (rc)
		return rc;
	if (!ops)
		return -EINVAL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->ops = ops;
	n->arg = arg;
	n->id = id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
	rc = mm_lock(mm, true);
	if (rc || mm->mm_closed) {
		if (!rc)
			mmap_write_unlock(mm);
		free(n);
		return rc ? rc : -EINVAL;
	}
	/* Appended, so notifiers run in registration order. */
	{
		struct mmu_notifier **pp = &mm->notifiers;

		while (*pp)
			pp = &(*pp)->next;
		*pp = n;
	}
	mmap_write_unlock(mm);
	return id;
}

int mm_unregister_notifier(struct mm_struct *mm, int id)
{
	MM_OP(MM_OP_NOTIFIER);
	struct mmu_notifier **pp, *n = NULL;
	int rc;

	rc = mm_refused(mm);
	if (rc)
		return rc;
	rc = mm_lock(mm, true);
	if (rc)
		return rc;
	for (pp = &mm->notifiers; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			n = *pp;
			*pp = n->next;
			break;
		}
	}
	mmap_write_unlock(mm);
	free(n);
	return n ? 0 : -ENOENT;
}

/* The relay: three function pointers, each loaded once per call. */
typedef void (*range_fn)(struct mm_struct *, uint64_t, uint64_t, void *);
typedef void (*release_fn)(struct mm_struct *, void *);
static _Atomic(range_fn) relay_start, relay_end;
static _Atomic(release_fn) relay_release;

static void relay_range(_Atomic(range_fn) *slot, struct mm_struct *mm, uint64_t start,
			uint64_t end, void *arg)
{
	range_fn fn = atomic_load_explicit(slot, memory_order_acquire);

	if (fn)
		fn(mm, start, end, arg);
}

static void relay_start_fn(struct mm_struct *mm, uint64_t start, uint64_t end, void *arg)
{
	relay_range(&relay_start, mm, start, end, arg);
}

static void relay_end_fn(struct mm_struct *mm, uint64_t start, uint64_t end, void *arg)
{
	relay_range(&relay_end, mm, start, end, arg);
}

static void relay_release_fn(struct mm_struct *mm, void *arg)
{
	release_fn fn = atomic_load_explicit(&relay_release, memory_order_acquire);

	if (fn)
		fn(mm, arg);
}

static const struct mmu_notifier_ops relay_ops = {
	.invalidate_range_start = relay_start_fn,
	.invalidate_range_end = relay_end_fn,
	.release = relay_release_fn,
};

const struct mmu_notifier_ops *mm_relay_notifier_ops(void)
{
	return &relay_ops;
}

void mm_set_notifier_relay(const struct mmu_notifier_ops *to)
{
	/* Release: a caller that loads a pointer sees what it points to. */
	atomic_store_explicit(&relay_start, to ? to->invalidate_range_start : NULL,
			      memory_order_release);
	atomic_store_explicit(&relay_end, to ? to->invalidate_range_end : NULL,
			      memory_order_release);
	atomic_store_explicit(&relay_release, to ? to->release : NULL, memory_order_release);
}

static void free_notifiers(struct mm_struct *mm)
{
	while (mm->notifiers) {
		struct mmu_notifier *n = mm->notifiers;

		mm->notifiers = n->next;
		free(n);
	}
}

/* ------------------------------------------------------------------------
 * Life cycle.
 */
static int mm_space_init(struct mm_struct *mm)
{
	vma_tree_init(&mm->mm_vmas);
	mm->mmap_base = MM_MMAP_BASE;
	mm->start_brk = mm->brk = MM_START_BRK;
	mm->max_map_count = 0;
	mm->mm_closed = 0;
	mm->notifiers = NULL;
	mm->inval = NULL;
	atomic_init(&mm->vma_seq, 0);
	mm->host_backing = 0;
	atomic_init(&mm->backing_lock, 0);
	return pgtable_init(&mm->pgt);
}

struct mm_struct *mm_alloc(unsigned int lock_flags)
{
	/* A process-shared mm keeps nothing process-local: the plain rwsem. */
	return mm_alloc_backend(lock_flags, lock_flags & MMAP_LOCK_SHARED ? MMAP_LOCK_BACKEND_RWSEM
								    : MMAP_LOCK_DEFAULT_BACKEND);
}

struct mm_struct *mm_alloc_backend(unsigned int lock_flags, int backend)
{
	return mm_alloc_opts(lock_flags, backend, 0);
}

int mm_host_backed(const struct mm_struct *mm)
{
	return mm->host_backing != 0;
}

size_t mm_host_frames(void)
{
	return frames_in_use();
}

struct mm_struct *mm_alloc_opts(unsigned int lock_flags, int backend, unsigned int mm_flags)
{
	struct mm_struct *mm;

	if (mm_flags & ~MM_HOST_BACKING)
		return NULL;
	/* The frame file first: a host-backed mm that cannot have windows is not made. */
	if ((mm_flags & MM_HOST_BACKING) && frames_init())
		return NULL;

	/* The lock's cache line is the mm's hottest: give it one of its own. */
	if (posix_memalign((void **)&mm, 64, sizeof(*mm)))
		return NULL;
	if (mmap_lock_init_backend(mm, lock_flags, backend)) {
		free(mm);
		return NULL;
	}
	if (mm_space_init(mm)) {
		mmap_lock_destroy(mm);
		free(mm);
		return NULL;
	}
	mm->host_backing = mm_flags & MM_HOST_BACKING;
	mm->backing_gen = frames_generation();
	return mm;
}

void mm_unmap_all(struct mm_struct *mm)
{
	struct vm_area_struct *v;
	bool any = vma_first(&mm->mm_vmas) != NULL;

	/* Brackets come in pairs, or not at all (nothing to invalidate). */
	if (any)
		mm_notify_start(mm, 0, MM_TASK_SIZE, MM_INVAL_UNMAP, 0);
	while ((v = vma_first(&mm->mm_vmas))) {
		mm_vma_unlink(mm, v);
		pgtable_zap(&mm->pgt, v->vm_start, v->vm_end);
		vma_free(v);
	}
	if (any)
		mm_notify_end(mm, 0, MM_TASK_SIZE);
}

/* exit_mmap's work; the caller excludes every other user of @mm. */
static void exit_mmap_locked(struct mm_struct *mm)
{
	notify_release(mm);
	mm_unmap_all(mm);
	mm->mm_closed = 1;
}

int mm_exit_mmap(struct mm_struct *mm)
{
	MM_OP(MM_OP_EXIT);
	int rc;

	rc = mm_refused(mm);
	if (rc)
		return rc;
	rc = mm_lock(mm, true);
	if (rc)
		return rc;
	if (mm->mm_closed) {
		mmap_write_unlock(mm);
		return -EINVAL;
	}
	exit_mmap_locked(mm);
	mmap_write_unlock(mm);
	return 0;
}

int mm_free(struct mm_struct *mm)
{
	int rc;

	if (!mm)
		return 0;
	/* A host fork's copy: its pages are the parent's frames, left as they are (leaked). */
	if (mm_backing_stale(mm))
		return -ESTALE;
	if (mmap_lock_is_busy(mm))
		return -EBUSY;
	/*
	 * Nobody holds or awaits the lock, and freeing the mm says nobody will:
	 * tear down without taking it, so that a binding's garbage collector
	 * freeing an mm fires no tracepoints from whatever thread it runs on.
	 */
	if (!mm->mm_closed)
		exit_mmap_locked(mm);
	rc = mmap_lock_destroy(mm);
	if (rc)
		return rc;
	free_notifiers(mm);
	mm_inval_free(mm);
	pgtable_destroy(&mm->pgt);
	free(mm);
	return 0;
}

/*
 * fork's dup_mmap(): the parent's write lock, then the child's, nested (it
 * is not reachable by anyone else yet, so there is no deadlock potential,
 * but the lock-order checker must be told).  Private mappings share their
 * pages copy-on-write: write-protected in both, so the first write on
 * either side copies; shared ones share them writable.  As dup_mmap(): a
 * VMA with VM_DONTCOPY (MADV_DONTFORK) is not copied, and one with
 * VM_WIPEONFORK gets no pages in the child.
 */
struct mm_struct *mm_fork(struct mm_struct *mm, int *err)
{
	MM_OP(MM_OP_FORK);
	unsigned int flags = mmap_lock_is_debug(mm) ? MMAP_LOCK_DEBUG : MMAP_LOCK_NODEBUG;
	struct mm_struct *child;
	uint64_t skipped = 0;
	int rc;

	rc = mm_refused(mm);
	if (rc) {
		*err = rc;
		return NULL;
	}
	child = mm_alloc_opts(flags, mmap_lock_backend_id(mm),
			      mm->host_backing ? MM_HOST_BACKING : 0);
	if (!child) {
		*err = -ENOMEM;
		return NULL;
	}
	rc = mm_lock(mm, true);
	if (rc || mm->mm_closed) {
		if (!rc)
			mmap_write_unlock(mm);
		mm_free(child);
		*err = rc ? rc : -EINVAL;
		return NULL;
	}
	/* Nobody else knows the child yet: only the checker could refuse. */
	rc = mmap_write_lock_nested(child, SINGLE_DEPTH_NESTING);
	if (rc) {
		mmap_write_unlock(mm);
		mm_free(child);
		*err = rc;
		return NULL;
	}
	child->mmap_base = mm->mmap_base;
	child->start_brk = mm->start_brk;
	child->brk = mm->brk;
	child->max_map_count = mm->max_map_count;
	for (struct vm_area_struct *v = vma_first(&mm->mm_vmas); v && !rc; v = vma_next(v)) {
		struct vm_area_struct *n;
		bool cow = !(v->vm_flags & VM_SHARED);

		if (v->vm_flags & VM_DONTCOPY) {
			skipped = 1;	/* MADV_DONTFORK: nothing mapped there in the child */
			continue;
		}
		n = vma_dup(v);
		if (!n) {
			rc = -ENOMEM;
			break;
		}
		mm_vma_link(child, n);
		/*
		 * MADV_WIPEONFORK: the child's VMA starts empty (demand-zero, its
		 * flag kept, as dup_mmap() keeps it), and the parent's pages stay
		 * writable: nothing is shared.
		 */
		if (v->vm_flags & VM_WIPEONFORK)
			continue;
		/* Its PTEs become read-only: no fault may work on it meanwhile. */
		mm_vma_lock(mm, v);
		if (cow)
			mm_notify_start(mm, v->vm_start, v->vm_end, MM_INVAL_WRPROTECT,
					v->vm_prot & ~(uint32_t)PROT_WRITE);
		if (vma_host_backed(mm, v))
			rc = backing_fork(child, mm, v);	/* the child's windows, too */
		else
			rc = pgtable_copy(&child->pgt, &mm->pgt, v->vm_start, v->vm_end, cow);
		if (cow)
			mm_notify_end(mm, v->vm_start, v->vm_end);
	}
	/*
	 * The child's layout is the parent's at its count: it starts there,
	 * or one past it when a VMA was left out (MADV_DONTFORK), so that no
	 * VMA record read in the parent passes as the child's.
	 */
	atomic_store_explicit(&child->vma_seq,
			      atomic_load_explicit(&mm->vma_seq, memory_order_relaxed) + skipped,
			      memory_order_release);
	mmap_write_unlock(child);
	mmap_write_unlock(mm);
	if (rc) {
		mm_free(child);
		*err = rc;
		return NULL;
	}
	*err = 0;
	return child;
}

/* ------------------------------------------------------------------------
 * Queries.
 */
/* @v as a record; the lock that keeps @v is held. */
static struct mm_vma_info vma_info(struct mm_struct *mm, const struct vm_area_struct *v)
{
	return (struct mm_vma_info){
		.start = v->vm_start, .end = v->vm_end, .prot = v->vm_prot,
		.flags = v->vm_flags & (VM_SHARED | VM_GROWSDOWN), .pgoff = v->vm_pgoff,
		/* The kernel's test for "[heap]" (show_map_vma). */
		.heap = v->vm_start <= mm->brk && v->vm_end >= mm->start_brk,
		/* Acquire: as mm_vma_seq(). */
		.seq = atomic_load_explicit(&mm->vma_seq, memory_order_acquire),
	};
}

int mm_find_vma(struct mm_struct *mm, uint64_t addr, int containing, unsigned int flags,
		struct mm_vma_info *out)
{
	MM_OP(MM_OP_MAPS);
	struct vm_area_struct *v;
	int rc;

	rc = mm_refused(mm);
	if (rc)
		return rc;
	if (flags & ~(unsigned int)MM_GUEST_LOCKED || (containing != 0 && containing != 1))
		return -EINVAL;
	if (flags & MM_GUEST_LOCKED) {
		if (mmap_lock_check_held(mm, 0) != MMAP_CHECK_OK)
			return -EPERM;
	} else if (containing && mmap_lock_has_vma_locks(mm) &&
		   (v = mm_lock_vma_under_rcu(mm, addr))) {
		/*
		 * Only this VMA's lock, as a fault: it cannot change meanwhile,
		 * and the count is read before any change of it bumps it.  The
		 * break can move under us (the "[heap]" test): a brk bumps the
		 * count, so a record read here is exact while the count holds.
		 */
		*out = vma_info(mm, v);
		vma_end_read(&v->vm_lock);
		mmap_vma_lock_event(mm, MMAP_VMA_LOCK_SUCCESS);
		return 1;
	} else if ((rc = mm_lock(mm, false))) {
		return rc;
	}
	v = mm->mm_closed ? NULL : containing ? vma_lookup(&mm->mm_vmas, addr)
					      : vma_find(&mm->mm_vmas, addr);
	if (v)
		*out = vma_info(mm, v);
	if (!(flags & MM_GUEST_LOCKED))
		mmap_read_unlock(mm);
	return v != NULL;
}

int mm_maps(struct mm_struct *mm, struct mm_vma_info *out, size_t cap, size_t *count)
{
	MM_OP(MM_OP_MAPS);
	size_t n = 0;
	int rc;

	rc = mm_refused(mm);
	if (rc)
		return rc;
	rc = mm_lock(mm, false);
	if (rc)
		return rc;
	for (struct vm_area_struct *v = vma_first(&mm->mm_vmas); v; v = vma_next(v), n++) {
		if (n < cap)
			out[n] = vma_info(mm, v);
	}
	mmap_read_unlock(mm);
	*count = n;
	return 0;
}

int mm_set_max_map_count(struct mm_struct *mm, uint32_t count)
{
	MM_OP(MM_OP_MAPS);
	int rc;

	rc = mm_refused(mm);
	if (rc)
		return rc;
	if (count == 0)
		return -EINVAL;
	rc = mm_lock(mm, true);
	if (rc)
		return rc;
	mm->max_map_count = count;
	mmap_write_unlock(mm);
	return 0;
}

int64_t mm_map_count(struct mm_struct *mm)
{
	MM_OP(MM_OP_MAPS);
	int64_t n;

	n = mm_refused(mm);
	if (n)
		return n;
	n = mm_lock(mm, false);
	if (n)
		return n;
	n = (int64_t)mm->mm_vmas.count;
	mmap_read_unlock(mm);
	return n;
}

int64_t mm_get_brk(struct mm_struct *mm)
{
	MM_OP(MM_OP_MAPS);
	int64_t b;

	b = mm_refused(mm);
	if (b)
		return b;
	b = mm_lock(mm, false);
	if (b)
		return b;
	b = (int64_t)mm->brk;
	mmap_read_unlock(mm);
	return b;
}

size_t mm_pgtable_bytes(struct mm_struct *mm)
{
	return pgtable_bytes(&mm->pgt);
}

size_t mm_nr_pages(struct mm_struct *mm)
{
	return pgtable_nr_pages(&mm->pgt);
}
