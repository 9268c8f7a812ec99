/* SPDX-License-Identifier: MIT */
/*
 * host_backing.c - windows of frames behind a host-backed mm's private
 * anonymous pages (host_backing.h gives the invariants; docs/mm.md the
 * choices and their costs).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "frames.h"
#include "futex.h"
#include "host_backing.h"
#include "mm_internal.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000	/* <linux/mman.h>; glibc before 2.28 lacks it */
#endif

#define PG MLN_PAGE_SIZE
#define LEAF_SPAN ((uint64_t)MLN_PTRS_PER_TABLE * PG)

static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* The end of @addr's leaf, or @limit if that comes first. */
static inline uint64_t leaf_end(uint64_t addr, uint64_t limit)
{
	return min_u64((addr | (LEAF_SPAN - 1)) + 1, limit);
}

/* @addr's slot if it has one (host address set), with @t locked; else NULL. */
static struct host_slot *slot_locked(struct pte_table *t, uint64_t addr)
{
	struct host_slot *s = t->slots ? host_slot_of(t, addr) : NULL;

	return s && s->host ? s : NULL;
}

/* @addr's window address, or 0 (no leaf, no slot). */
static uintptr_t host_of(struct mm_struct *mm, uint64_t addr)
{
	struct pte_table *t = pgtable_leaf(&mm->pgt, addr, 0);
	struct host_slot *s;
	uintptr_t host = 0;

	if (!t)
		return 0;
	pte_table_lock(t);
	s = slot_locked(t, addr);
	if (s)
		host = s->host;
	pte_table_unlock(t);
	return host;
}

/*
 * A window for [start, end), which has no slot and no PTE: one run of
 * frames in one mapping, right after the window below or before the one
 * above when that host range is free.  Under mm->backing_lock.
 */
static int window_make(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	size_t n = (end - start) >> MLN_PAGE_SHIFT;
	uintptr_t below = host_of(mm, start - PG), above = host_of(mm, end), host;
	void *hint = NULL;
	frame_t spare;
	int64_t f;

	if (n == 1 && frames_spare_take(&host, &spare)) {
		f = spare;	/* a page mapped and zeroed already: no syscall */
	} else {
		f = frames_alloc(n);
		if (f < 0)
			return -ENOMEM;
		if (below)
			hint = (void *)(below + PG);
		else if (above > n * PG)
			hint = (void *)(above - n * PG);
		host = (uintptr_t)frames_map_near(hint, (frame_t)f, n);
		if (!host) {
			frames_put_run((frame_t)f, n);
			return -ENOMEM;
		}
	}
	for (uint64_t a = start; a < end;) {
		uint64_t stop = leaf_end(a, end);
		struct pte_table *t = pgtable_leaf(&mm->pgt, a, 1);

		if (t) {
			pte_table_lock(t);
			if (pte_slots_alloc(t)) {
				pte_table_unlock(t);
				t = NULL;
			}
		}
		for (; a < stop; a += PG) {
			uint64_t i = (a - start) >> MLN_PAGE_SHIFT;

			/*
			 * A page given a slab page meanwhile (a fault that found no
			 * frames) keeps it: its window page goes unused.
			 */
			if (!t || atomic_load_explicit(pte_slot(t, a), memory_order_relaxed)) {
				munmap((void *)(host + i * PG), PG);
				frames_put_run((frame_t)f + (frame_t)i, 1);
				continue;
			}
			*host_slot_of(t, a) = (struct host_slot){ host + i * PG, (frame_t)f + (frame_t)i,
								  0 };
			t->nr_slots++;
		}
		if (t)
			pte_table_unlock(t);
	}
	return 0;
}

/* What a walk asks of each page it passes, the page's leaf locked (NULL: there is no leaf). */
typedef bool (*page_test)(struct pte_table *t, uint64_t addr, const void *ctx);

/*
 * From @addr's neighbour in direction @step (+PG or -PG) up to @limit
 * (excluded going up, included going down), the last page that passes
 * @test with every page between: @addr itself if its neighbour fails.  One
 * leaf lock at a time, taken once per leaf.
 */
static uint64_t walk_edge(struct mm_struct *mm, uint64_t addr, int64_t step, uint64_t limit,
			  page_test test, const void *ctx)
{
	struct pte_table *t = NULL;
	uint64_t last = addr, leaf = UINT64_MAX;

	for (uint64_t a = addr + (uint64_t)step; step > 0 ? a < limit : a >= limit;
	     a += (uint64_t)step) {
		if ((a & ~(LEAF_SPAN - 1)) != leaf) {
			if (t)
				pte_table_unlock(t);
			leaf = a & ~(LEAF_SPAN - 1);
			t = pgtable_leaf(&mm->pgt, a, 0);
			if (t)
				pte_table_lock(t);
		}
		if (!test(t, a, ctx))
			break;
		last = a;
	}
	if (t)
		pte_table_unlock(t);
	return last;
}

/* A page with neither a slot nor a PTE: a window is to be made for it. */
static bool is_gap(struct pte_table *t, uint64_t addr, const void *ctx)
{
	(void)ctx;
	return !t || (!atomic_load_explicit(pte_slot(t, addr), memory_order_relaxed) &&
		      !slot_locked(t, addr));
}

int backing_ensure(struct mm_struct *mm, struct vm_area_struct *v, uint64_t addr)
{
	uint64_t page = addr & MLN_PAGE_MASK;
	uint64_t lo = page - v->vm_start > BACKING_REACH ? page - BACKING_REACH : v->vm_start;
	uint64_t hi = v->vm_end - page > BACKING_REACH ? page + BACKING_REACH : v->vm_end;
	struct pte_table *t;
	bool gap;
	int err = 0;

	if (frames_init())
		return -ENOMEM;
	t = pgtable_leaf(&mm->pgt, page, 1);
	if (!t)
		return -ENOMEM;
	mln_mutex_lock(&mm->backing_lock, 0);
	pte_table_lock(t);
	gap = is_gap(t, page, NULL);
	pte_table_unlock(t);
	/* The gap around the page, as far as it goes: one window for a VMA never touched. */
	if (gap)
		err = window_make(mm, walk_edge(mm, page, -(int64_t)PG, lo, is_gap, NULL),
				  walk_edge(mm, page, (int64_t)PG, hi, is_gap, NULL) + PG);
	mln_mutex_unlock(&mm->backing_lock, 0);
	return err;
}

int backing_install_locked(struct mm_struct *mm, struct pte_table *leaf, uint64_t addr,
			   pte_t flags)
{
	struct host_slot *s = slot_locked(leaf, addr);
	struct page *page;

	if (!s)
		return 1;
	/* The frame as it is: zero, or what an emulator wrote through the window. */
	page = page_alloc_frame(s->frame);
	if (!page)
		return -ENOMEM;
	pte_install_locked(&mm->pgt, leaf, addr, (pte_t)page | flags);
	return 0;
}

int backing_cow_locked(struct mm_struct *mm, struct pte_table *leaf, uint64_t addr, pte_t pte,
		       pte_t flags, uint32_t prot)
{
	struct page *old = pte_page(pte), *copy;
	uint64_t page_addr = addr & MLN_PAGE_MASK;
	struct host_slot *s;
	frame_t old_frame = 0;
	bool done = false;
	int64_t g;
	int rc = 0;

	page_get(old);			/* keeps it while we copy unlocked */
	pte_table_unlock(leaf);
	g = frames_alloc(1);
	copy = g < 0 ? NULL : page_alloc_frame((frame_t)g);
	if (!copy) {
		if (g >= 0)
			frames_put_run((frame_t)g, 1);
		page_put(old);
		return -ENOMEM;
	}
	memcpy(copy->data, old->data, PG);	/* read-only everywhere: nobody writes it now */
	mm_notify_start(mm, page_addr, page_addr + PG, MM_INVAL_COW, prot);
	pte_table_lock(leaf);
	s = slot_locked(leaf, addr);
	if (atomic_load_explicit(pte_slot(leaf, addr), memory_order_relaxed) == pte && s) {
		/* The window page shows the copy from here on: same host address. */
		rc = frames_map_at((void *)s->host, (frame_t)g, 1);
		if (!rc) {
			old_frame = s->frame;
			s->frame = (frame_t)g;
			pte_replace_locked(leaf, addr, (pte_t)copy | flags);
			done = true;
		}
	}
	pte_table_unlock(leaf);
	mm_notify_end(mm, page_addr, page_addr + PG);
	if (done) {
		page_put(old);			/* the PTE's reference */
		frames_put(&old_frame, 1);	/* the slot's */
	} else {
		page_put(copy);			/* someone else resolved it first, or no mapping */
		frames_put_run((frame_t)g, 1);
	}
	page_put(old);
	return rc;
}

/* ------------------------------------------------------------------------
 * MADV_DONTNEED.
 */

/* A run of frames to punch, grown while the frames are consecutive. */
struct zero_run {
	frame_t start;
	size_t len;
};

static void zero_add(struct zero_run *z, frame_t f)
{
	if (z->len && f == z->start + z->len) {
		z->len++;
		return;
	}
	if (z->len)
		frames_zero(z->start, z->len);
	z->start = f;
	z->len = 1;
}

static long dontneed_leaf(void *arg, struct pte_table *t, uint64_t base, unsigned int lo,
			  unsigned int hi)
{
	struct mm_struct *mm = arg;
	struct page *put[MLN_PTRS_PER_TABLE];
	frame_t old[MLN_PTRS_PER_TABLE];
	struct host_slot gone[MLN_PTRS_PER_TABLE];
	size_t n = 0, nold = 0, ngone = 0;
	struct zero_run z = { 0, 0 };

	pte_table_lock(t);
	for (unsigned int i = lo; i < hi; i++) {
		uint64_t a = base + ((uint64_t)i << MLN_PAGE_SHIFT);
		pte_t pte = pte_clear_locked(&mm->pgt, t, a);
		struct host_slot *s = slot_locked(t, a);
		bool alone;
		int64_t g;

		if (pte)
			put[n++] = pte_page(pte);
		if (!s)
			continue;
		/*
		 * Ours alone: the PTE's page had no other holder (a pin, a fork's
		 * PTE), or there was no PTE.  Acquire: a holder that let go just
		 * now (a release decrement) has its writes done before the punch.
		 */
		alone = pte ? atomic_load_explicit(&pte_page(pte)->refcount, memory_order_acquire) ==
					      1 && frame_refs(s->frame) == 2
			    : frame_refs(s->frame) == 1;
		if (alone) {
			zero_add(&z, s->frame);		/* punched before the unlock */
			continue;
		}
		/* A pin or a fork keeps the old frame: the window page gets a fresh one. */
		g = frames_alloc(1);
		if (g >= 0 && !frames_map_at((void *)s->host, (frame_t)g, 1)) {
			old[nold++] = s->frame;
			s->frame = (frame_t)g;
			continue;
		}
		if (g >= 0)
			frames_put_run((frame_t)g, 1);
		/* No fresh frame: the slot goes, and the next fault makes a window anew. */
		gone[ngone++] = *s;
		s->host = 0;
		t->nr_slots--;
	}
	if (z.len)
		frames_zero(z.start, z.len);
	pte_table_unlock(t);
	for (size_t i = 0; i < n; i++)
		page_put(put[i]);
	for (size_t i = 0; i < ngone; i++)
		munmap((void *)gone[i].host, PG);
	for (size_t i = 0; i < ngone; i++)
		old[nold++] = gone[i].frame;
	frames_put(old, nold);
	return (long)n;
}

void backing_dontneed(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	pgtable_walk(&mm->pgt, start, end, dontneed_leaf, mm);
}

/* ------------------------------------------------------------------------
 * Host ranges.
 */

/* The guest's protection through @addr of @v, @t locked: the PTE's, or the VMA's without one. */
static uint32_t page_prot_locked(struct pte_table *t, const struct vm_area_struct *v,
				 uint64_t addr)
{
	pte_t pte = atomic_load_explicit(pte_slot(t, addr), memory_order_relaxed);

	if (pte && !(pte & PTE_WRITE))
		return v->vm_prot & ~(uint32_t)PROT_WRITE;
	return v->vm_prot;
}

/* What a host range's pages must have: the window continued, and at least the protection. */
struct run_want {
	const struct vm_area_struct *v;
	uint64_t addr;
	uintptr_t host;
	uint32_t prot;
};

static bool continues_run(struct pte_table *t, uint64_t addr, const void *ctx)
{
	const struct run_want *w = ctx;
	struct host_slot *s = t ? slot_locked(t, addr) : NULL;

	return s && s->host == w->host + (addr - w->addr) &&
	       (page_prot_locked(t, w->v, addr) & w->prot) == w->prot;
}

void backing_host_range(struct mm_struct *mm, struct vm_area_struct *v, uint64_t addr,
			struct mm_host_range *out)
{
	uint64_t page = addr & MLN_PAGE_MASK, lo, hi;
	uintptr_t host = host_of(mm, page);
	struct run_want want = { v, page, host, out->prot };

	if (!host)
		return;		/* a page of its own (no frames were left): one page */
	lo = page - v->vm_start > BACKING_REACH ? page - BACKING_REACH : v->vm_start;
	hi = v->vm_end - page > BACKING_REACH ? page + BACKING_REACH : v->vm_end;
	lo = walk_edge(mm, page, -(int64_t)PG, lo, continues_run, &want);
	hi = walk_edge(mm, page, (int64_t)PG, hi, continues_run, &want) + PG;
	out->host = host - (page - lo);
	out->start = lo;
	out->end = hi;
}

/* ------------------------------------------------------------------------
 * fork.
 */

enum fork_kind { FK_NONE, FK_SHARE, FK_SHARE_NOSLOT, FK_COPY, FK_FRESH };

struct fork_walk {
	struct mm_struct *child, *mm;
	struct vm_area_struct *v;
	uint64_t next_addr;	/* the guest page after the child's last window page */
	uintptr_t next_host;	/* and the host address after it: the next window's hint */
};

/*
 * Give PTEs to the pages of [lo, hi) of @t that have a slot, no PTE, and
 * data an emulator wrote through the window: the fork must copy them.
 */
static void adopt_leaf(struct fork_walk *w, struct pte_table *t, uint64_t base, unsigned int lo,
		       unsigned int hi)
{
	pte_t flags = w->v->vm_prot & PROT_WRITE ? PTE_WRITE : 0;

	pte_table_lock(t);
	for (unsigned int i = lo, j; t->slots && i < hi; i = j) {
		frame_t f, end;

		j = i + 1;
		if (!t->slots[i].host || atomic_load_explicit(&t->pte[i], memory_order_relaxed))
			continue;
		/* A run of PTE-less slots with consecutive frames: one lseek per written extent. */
		f = t->slots[i].frame;
		while (j < hi && t->slots[j].host &&
		       !atomic_load_explicit(&t->pte[j], memory_order_relaxed) &&
		       t->slots[j].frame == f + (j - i))
			j++;
		end = f + (j - i);
		for (frame_t d = frames_next_data(f, end); d < end;) {
			frame_t h = frames_next_hole(d, end);

			for (; d < h; d++)
				(void)backing_install_locked(w->mm, t,
							     base + ((uint64_t)(i + (d - f)) << MLN_PAGE_SHIFT),
							     flags);
			d = h < end ? frames_next_data(h, end) : end;
		}
	}
	pte_table_unlock(t);
}

/* Map the child's frames of one guest run [i, j) at @host, a run of consecutive frames a call. */
static int map_child_run(const frame_t *cf, unsigned int i, unsigned int j, uintptr_t host)
{
	for (unsigned int k = i, m; k < j; k = m) {
		int err;

		for (m = k + 1; m < j && cf[m] == cf[m - 1] + 1; m++)
			;
		err = frames_map_at((void *)(host + (uint64_t)(k - i) * PG), cf[k], m - k);
		if (err)
			return err;
	}
	return 0;
}

static long fork_leaf(void *arg, struct pte_table *t, uint64_t base, unsigned int lo,
		      unsigned int hi)
{
	struct fork_walk *w = arg;
	uint8_t kind[MLN_PTRS_PER_TABLE];
	frame_t cf[MLN_PTRS_PER_TABLE];		/* the child's frame */
	pte_t cpte[MLN_PTRS_PER_TABLE];		/* the child's PTE */
	uintptr_t chost[MLN_PTRS_PER_TABLE] = { 0 };	/* the child's window page */
	struct pte_table *d;
	size_t fresh = 0;
	int64_t g = 0;
	int err = 0;

	adopt_leaf(w, t, base, lo, hi);

	/* What each page becomes in the child (nothing here can change meanwhile: both are
	 * write-locked, and so is @v against faults and pins). */
	pte_table_lock(t);
	for (unsigned int i = lo; i < hi; i++) {
		pte_t pte = atomic_load_explicit(&t->pte[i], memory_order_relaxed);
		bool slot = t->slots && t->slots[i].host;

		kind[i] = FK_NONE;
		if (pte && atomic_load_explicit(&pte_page(pte)->pincount, memory_order_relaxed))
			kind[i] = FK_COPY;	/* as copy_leaf: a pinned page is copied now */
		else if (pte)
			kind[i] = slot ? FK_SHARE : FK_SHARE_NOSLOT;
		else if (slot)
			kind[i] = FK_FRESH;
		cpte[i] = pte;
		if (slot)
			cf[i] = t->slots[i].frame;
		fresh += kind[i] == FK_COPY || kind[i] == FK_FRESH;
	}
	pte_table_unlock(t);

	/* Everything that can fail, before any reference is taken. */
	d = pgtable_leaf(&w->child->pgt, base, 1);
	if (!d)
		return -ENOMEM;
	pte_table_lock(d);
	err = pte_slots_alloc(d);
	pte_table_unlock(d);
	if (err)
		return err;
	if (fresh && (g = frames_alloc(fresh)) < 0)
		return -ENOMEM;
	for (unsigned int i = lo, k = 0; i < hi; i++) {
		if (kind[i] != FK_COPY && kind[i] != FK_FRESH)
			continue;
		cf[i] = (frame_t)g + k++;
		if (kind[i] == FK_COPY) {
			struct page *c = page_alloc_frame(cf[i]);

			if (!c) {
				err = -ENOMEM;
				break;
			}
			memcpy(c->data, pte_page(cpte[i])->data, PG);
			cpte[i] = (pte_t)c | (cpte[i] & PTE_WRITE);
		}
	}
	for (unsigned int i = lo, j; !err && i < hi; i = j) {
		uintptr_t host;
		void *hint = NULL, *r;

		j = i + 1;
		if (kind[i] == FK_NONE || kind[i] == FK_SHARE_NOSLOT)
			continue;
		while (j < hi && kind[j] != FK_NONE && kind[j] != FK_SHARE_NOSLOT)
			j++;
		/* A reservation for the run, then its frames over it. */
		if (base + ((uint64_t)i << MLN_PAGE_SHIFT) == w->next_addr)
			hint = (void *)w->next_host;
		r = mmap(hint, (uint64_t)(j - i) * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (hint ? MAP_FIXED_NOREPLACE : 0),
			 -1, 0);
		if (r == MAP_FAILED && hint)
			r = mmap(NULL, (uint64_t)(j - i) * PG, PROT_NONE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (r == MAP_FAILED) {
			err = -ENOMEM;
			break;
		}
		host = (uintptr_t)r;
		for (unsigned int k = i; k < j; k++)
			chost[k] = host + (uint64_t)(k - i) * PG;
		err = map_child_run(cf, i, j, host);
		if (err)
			break;		/* the undo unmaps the run with the others */
		w->next_addr = base + ((uint64_t)j << MLN_PAGE_SHIFT);
		w->next_host = host + (uint64_t)(j - i) * PG;
	}
	if (err) {
		/* Undo: the child's windows of this leaf are not in its table yet. */
		for (unsigned int i = lo; i < hi; i++) {
			if (chost[i])
				munmap((void *)chost[i], PG);
			if (kind[i] == FK_NONE || kind[i] == FK_SHARE_NOSLOT)
				continue;
			if (kind[i] == FK_COPY && cpte[i] != atomic_load_explicit(&t->pte[i],
										   memory_order_relaxed))
				page_put(pte_page(cpte[i]));
		}
		if (fresh)
			frames_put_run((frame_t)g, fresh);
		return err;
	}

	/* The references: the parent's pages become copy-on-write. */
	pte_table_lock(t);
	for (unsigned int i = lo; i < hi; i++) {
		if (kind[i] != FK_SHARE && kind[i] != FK_SHARE_NOSLOT)
			continue;
		if (cpte[i] & PTE_WRITE)
			atomic_store_explicit(&t->pte[i], cpte[i] & ~(pte_t)PTE_WRITE,
					      memory_order_relaxed);
		cpte[i] &= ~(pte_t)PTE_WRITE;
		page_get(pte_page(cpte[i]));
		if (kind[i] == FK_SHARE)
			frame_get(cf[i]);
	}
	pte_table_unlock(t);

	pte_table_lock(d);
	for (unsigned int i = lo; i < hi; i++) {
		uint64_t a = base + ((uint64_t)i << MLN_PAGE_SHIFT);

		if (kind[i] == FK_NONE)
			continue;
		if (kind[i] != FK_FRESH)
			pte_install_locked(&w->child->pgt, d, a, cpte[i]);
		if (kind[i] != FK_SHARE_NOSLOT) {
			d->slots[i] = (struct host_slot){ chost[i], cf[i], 0 };
			d->nr_slots++;
		}
	}
	pte_table_unlock(d);
	return 0;
}

int backing_fork(struct mm_struct *child, struct mm_struct *mm, struct vm_area_struct *v)
{
	struct fork_walk w = { .child = child, .mm = mm, .v = v };
	long rc;

	if (frames_init())
		return -ENOMEM;
	rc = pgtable_walk(&mm->pgt, v->vm_start, v->vm_end, fork_leaf, &w);
	return rc < 0 ? (int)rc : 0;
}
