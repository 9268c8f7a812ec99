/* SPDX-License-Identifier: MIT */
/*
 * pgtable.c - pages and the 4-level page table of an emulated mm.
 *
 * Pages.  A page is a struct page (the descriptor: refcount, pincount, data
 * pointer) and 4 KiB of data.  They come from a process-wide slab rather than
 * posix_memalign(): glibc's 4 KiB-aligned 4 KiB blocks need a chunk header
 * in front of each, so every page costs two pages of RSS, and when faults
 * and zaps alternate glibc trims and refaults its heap (measured: 3.4 us a
 * page against the slab's 90 ns, memset included).  A slab is a 2 MiB-aligned
 * mmap() of 512 pages; its first two pages hold the 512 descriptors (those of
 * the two descriptor pages themselves hold the slab's header), the other 510
 * are data, so a descriptor finds its slab by masking its address.  Pages
 * never handed out are still the kernel's zero pages: page_alloc() gives them
 * out without a memset and they cost no RSS until written.  One futex mutex
 * guards the slab lists; a slab whose pages are all free goes back to the
 * kernel unless SLAB_KEEP_EMPTY empty slabs are kept already (a cache
 * against map/unmap churn: the kernel's own page faults and zeroing of
 * fresh memory would otherwise dominate a workload that maps, touches and
 * unmaps the same amount again and again).  Under ASan free
 * pages and descriptors are poisoned, so a use after the last page_put()
 * still traps.  -DMLN_PAGE_MALLOC selects posix_memalign() instead.
 *
 * In front of the slab, each thread keeps up to PCP_HIGH free pages of its
 * own (the kernel's per-CPU page lists): faults and zaps on different
 * threads then take no common lock, and the slab lock is taken once per
 * PCP_BATCH pages.  A thread's pages go back to the slab when it exits.
 *
 * Refcounts follow the kernel's refcount_t/put_page(): an increment is
 * relaxed (whoever increments already holds a reference, or the PT lock that
 * keeps a PTE's reference), a decrement is a release, and the decrement that
 * reaches zero is followed by an acquire so that the freeing thread sees
 * every other holder's accesses to the page done.
 *
 * Tables.  Level 4 is pgtable.top; levels 3 and 2 ("directories") hold 512
 * pointers to the next level; level 1 is struct pte_table.  A directory has
 * the leaf's size and layout (its header line unused), so every table is
 * sizeof(struct pte_table) bytes (4 KiB of slots after a 64-byte header
 * line: a leaf's lock and count share no line with its PTEs) and
 * pgtable_bytes() is one product.  Missing tables are installed with a compare-and-swap: racing
 * installers agree on the winner's table and the losers free theirs.  Tables
 * are only freed by pgtable_destroy(), so a pointer read from a slot stays
 * valid without any lock.  PTEs change only under their leaf's lock.
 *
 * Range walks visit only present tables, skipping an absent table's whole
 * span (512 GiB, 1 GiB or 2 MiB) with one load, and stop scanning a leaf once
 * they have seen all of its nr_present PTEs.  Pages whose last reference a
 * walk drops are freed after the leaf lock is released, in one batch.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "frames.h"
#include "futex.h"
#include "pgtable.h"
#include "thread_index.h"

#if defined(__SANITIZE_ADDRESS__)
#define PGTABLE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PGTABLE_ASAN 1
#endif
#endif
#ifdef PGTABLE_ASAN
#include <sanitizer/asan_interface.h>
#define san_poison(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define san_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define san_poison(p, n) ((void)(p), (void)(n))
#define san_unpoison(p, n) ((void)(p), (void)(n))
#endif

/*
 * GCC expands a fixed-size memset()/memcpy() inline (rep stos/movs), which
 * ThreadSanitizer does not see; under TSan call the intercepted library
 * functions, so that races on page contents are reported.
 */
#if defined(__SANITIZE_THREAD__)
#define PGTABLE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PGTABLE_TSAN 1
#endif
#endif
#ifdef PGTABLE_TSAN
static void *(*volatile page_memset)(void *, int, size_t) = memset;
static void *(*volatile page_memcpy)(void *, const void *, size_t) = memcpy;
#else
#define page_memset memset
#define page_memcpy memcpy
#endif

/*
 * Test hooks, not (yet) in pgtable.h: the pages allocated and not yet freed,
 * and what the calling thread's range walks have looked at so far (tables
 * below the top, and slots of every level, PTEs included).
 */
size_t page_nr_live(void);
void pgtable_walk_counts(uint64_t *tables, uint64_t *slots);

static MLN_HOT_TLS _Thread_local uint64_t walk_tables, walk_slots;

__attribute__((noreturn, cold))
static void pgtable_bug(const char *what, const void *p)
{
	fprintf(stderr, "pgtable: %s (%p)\n", what, p);
	abort();
}

/* ------------------------------------------------------------------------
 * The page slab.
 */
#ifndef MLN_PAGE_MALLOC

#define SLAB_SHIFT	21
#define SLAB_BYTES	(1ul << SLAB_SHIFT)
#define SLAB_SLOTS	(SLAB_BYTES >> MLN_PAGE_SHIFT)				/* 512 */
#define SLAB_FIRST	((SLAB_SLOTS * sizeof(struct page)) >> MLN_PAGE_SHIFT)	/* 2 */
#define SLAB_DATA	(SLAB_SLOTS - SLAB_FIRST)				/* 510 */
#define SLAB_KEEP_EMPTY	64	/* empty slabs kept mapped (128 MiB), against map/unmap churn */

/*
 * Under ASan, recycled pages are reused oldest first, and only once the
 * fresh ones are gone, so that a use after free meets poison rather than the
 * page's next user (ASan's own allocator has a quarantine for this).
 * Otherwise newest first: that page is likely still in the cache.
 */
#ifdef PGTABLE_ASAN
#define SLAB_FIFO	1
#else
#define SLAB_FIFO	0
#endif

struct slab {
	struct slab *next, *prev;	/* on slab_cache.partial while nr_free != 0 */
	uint16_t free_head;		/* recycled free pages' slots, 0 for none */
	uint16_t free_tail;		/* (SLAB_FIFO) */
	uint16_t nr_free;		/* recycled and fresh pages */
	uint16_t fresh;			/* slots [fresh, SLAB_SLOTS) never handed out: zero */
};

_Static_assert(SLAB_FIRST * MLN_PAGE_SIZE == SLAB_SLOTS * sizeof(struct page),
	       "the descriptors fill whole pages");
_Static_assert(sizeof(struct slab) <= SLAB_FIRST * sizeof(struct page),
	       "the header fits in the descriptor pages' own (unused) descriptors");
_Static_assert(SLAB_SLOTS <= UINT16_MAX, "slot numbers are uint16_t");

static struct {
	_Atomic uint32_t lock;	/* futex mutex over everything below */
	struct slab *partial;	/* slabs with a free page; the last one freed into first */
	size_t nr_empty;	/* slabs with every page free */
	size_t nr_live;		/* pages handed out */
} slab_cache;

static inline struct slab *slab_of(const struct page *p)
{
	return (struct slab *)((uintptr_t)p & ~(uintptr_t)(SLAB_BYTES - 1));
}

static inline struct page *slab_desc(struct slab *s, unsigned int slot)
{
	return (struct page *)s + slot;
}

static inline uint8_t *slab_data(struct slab *s, unsigned int slot)
{
	return (uint8_t *)s + ((size_t)slot << MLN_PAGE_SHIFT);
}

static void slab_link(struct slab *s)
{
	s->prev = NULL;
	s->next = slab_cache.partial;
	if (s->next)
		s->next->prev = s;
	slab_cache.partial = s;
}

static void slab_unlink(struct slab *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		slab_cache.partial = s->next;
	if (s->next)
		s->next->prev = s->prev;
}

/* A new empty slab, 2 MiB aligned; mmap() rather than malloc so that it can go back. */
static struct slab *slab_new(void)
{
	size_t len = 2 * SLAB_BYTES, head;
	uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct slab *s;

	if (m == MAP_FAILED)
		return NULL;
	head = (SLAB_BYTES - ((uintptr_t)m & (SLAB_BYTES - 1))) & (SLAB_BYTES - 1);
	if (head)
		munmap(m, head);
	if (len - head - SLAB_BYTES)
		munmap(m + head + SLAB_BYTES, len - head - SLAB_BYTES);
	s = (struct slab *)(m + head);
	s->free_head = 0;
	s->free_tail = 0;
	s->nr_free = SLAB_DATA;
	s->fresh = SLAB_FIRST;
	san_poison(slab_desc(s, SLAB_FIRST), SLAB_DATA * sizeof(struct page));
	san_poison(slab_data(s, SLAB_FIRST), SLAB_DATA * MLN_PAGE_SIZE);
	return s;
}

static void slab_release(struct slab *s)
{
	san_unpoison(s, SLAB_BYTES);	/* the next mapping here starts clean */
	munmap(s, SLAB_BYTES);
}

/* Under the lock: take a page of @s (which has one); *zeroed if never used. */
static struct page *slab_take(struct slab *s, bool *zeroed)
{
	unsigned int slot;
	struct page *p;

	if (s->nr_free == SLAB_DATA)
		slab_cache.nr_empty--;
	if (s->free_head && (!SLAB_FIFO || s->fresh == SLAB_SLOTS)) {
		/* Recycled pages first: they are resident and likely cached. */
		slot = s->free_head;
		p = slab_desc(s, slot);
		san_unpoison(p, sizeof(*p));
		s->free_head = (uint16_t)atomic_load_explicit(&p->pincount, memory_order_relaxed);
		if (!s->free_head)
			s->free_tail = 0;
		*zeroed = false;
	} else {
		slot = s->fresh++;
		p = slab_desc(s, slot);
		san_unpoison(p, sizeof(*p));
		p->data = slab_data(s, slot);
		*zeroed = true;
	}
	san_unpoison(p->data, MLN_PAGE_SIZE);
	if (--s->nr_free == 0)
		slab_unlink(s);
	slab_cache.nr_live++;
	return p;
}

/*
 * Under the lock: give @p back to its slab.  Returns the slab if it is now
 * empty and beyond the cache, unlinked, for the caller to release unlocked.
 */
static struct slab *slab_give(struct page *p)
{
	struct slab *s = slab_of(p);
	unsigned int slot = (unsigned int)(p - slab_desc(s, 0));

	/* The free list threads through the free descriptors' pincount. */
	if (SLAB_FIFO && s->free_tail) {
		struct page *tail = slab_desc(s, s->free_tail);

		atomic_store_explicit(&p->pincount, 0, memory_order_relaxed);
		san_unpoison(tail, sizeof(*tail));
		atomic_store_explicit(&tail->pincount, slot, memory_order_relaxed);
		san_poison(tail, sizeof(*tail));
	} else {
		atomic_store_explicit(&p->pincount, s->free_head, memory_order_relaxed);
		s->free_head = (uint16_t)slot;
	}
	if (SLAB_FIFO || !s->free_tail)
		s->free_tail = (uint16_t)slot;
	san_poison(p->data, MLN_PAGE_SIZE);
	san_poison(p, sizeof(*p));
	slab_cache.nr_live--;
	if (s->nr_free++ == 0)
		slab_link(s);
	if (s->nr_free < SLAB_DATA)
		return NULL;
	if (slab_cache.nr_empty < SLAB_KEEP_EMPTY) {
		slab_cache.nr_empty++;
		return NULL;
	}
	slab_unlink(s);
	return s;
}

/* Under the lock: take a page, mapping a new slab if none has one; NULL on ENOMEM. */
static struct page *slab_take_any(bool *zeroed)
{
	struct slab *s;

	if (mln_unlikely(!slab_cache.partial)) {
		/* mmap() outside the lock; a racing thread's extra slab is used too. */
		mln_mutex_unlock(&slab_cache.lock, 0);
		s = slab_new();
		mln_mutex_lock(&slab_cache.lock, 0);
		if (!s)
			return slab_cache.partial ? slab_take_any(zeroed) : NULL;
		slab_cache.nr_empty++;
		slab_link(s);
	}
	return slab_take(slab_cache.partial, zeroed);
}

/* Give @n pages back under one lock round trip; release slabs that emptied. */
static void slab_give_many(struct page **v, size_t n)
{
	struct slab *dead = NULL, *s;

	mln_mutex_lock(&slab_cache.lock, 0);
	for (size_t i = 0; i < n; i++) {
		s = slab_give(v[i]);
		if (s) {
			s->next = dead;
			dead = s;
		}
	}
	mln_mutex_unlock(&slab_cache.lock, 0);
	while (dead) {
		s = dead;
		dead = s->next;
		slab_release(s);
	}
}

/* ------------------------------------------------------------------------
 * Per-thread page caches.
 */
#define PCP_HIGH	64	/* most free pages a thread keeps */
#define PCP_BATCH	16	/* pages moved between a cache and the slab at once */

struct page_pcp {
	struct page *pages[PCP_HIGH];	/* [0, count): free, poisoned under ASan */
	_Atomic unsigned int count;	/* written by the owner; read by page_nr_live() */
	struct page_pcp *next, *prev;	/* every live cache, under slab_cache.lock */
};

/*
 * A cached page's descriptor keeps whether its data are still all zero (a
 * fresh slab page never written) in pincount, unused while the page is free.
 */
#define PCP_ZEROED 1u

static MLN_HOT_TLS _Thread_local struct page_pcp *pcp_self;
static struct page_pcp *pcp_list;	/* under slab_cache.lock */
static pthread_key_t pcp_key;
static pthread_once_t pcp_once = PTHREAD_ONCE_INIT;

/* The exiting thread's cache goes back to the slab. */
static void pcp_destroy(void *arg)
{
	struct page_pcp *c = arg;
	unsigned int n = atomic_load_explicit(&c->count, memory_order_relaxed);

	for (unsigned int i = 0; i < n; i++) {
		san_unpoison(c->pages[i], sizeof(*c->pages[i]));
		san_unpoison(c->pages[i]->data, MLN_PAGE_SIZE);
	}
	mln_mutex_lock(&slab_cache.lock, 0);
	if (c->prev)
		c->prev->next = c->next;
	else
		pcp_list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	mln_mutex_unlock(&slab_cache.lock, 0);
	slab_give_many(c->pages, n);
	if (pcp_self == c)
		pcp_self = NULL;
	free(c);
}

static void pcp_key_init(void)
{
	pthread_key_create(&pcp_key, pcp_destroy);
}

/* The calling thread's cache, made on first use; NULL if out of memory. */
static struct page_pcp *pcp_get(void)
{
	struct page_pcp *c = pcp_self;

	if (mln_likely(c))
		return c;
	pthread_once(&pcp_once, pcp_key_init);
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	mln_mutex_lock(&slab_cache.lock, 0);
	c->next = pcp_list;
	if (pcp_list)
		pcp_list->prev = c;
	pcp_list = c;
	mln_mutex_unlock(&slab_cache.lock, 0);
	pthread_setspecific(pcp_key, c);
	return pcp_self = c;
}

/* Only the owner writes count: a load and a store, no read-modify-write. */
static inline void pcp_set_count(struct page_pcp *c, unsigned int n)
{
	atomic_store_explicit(&c->count, n, memory_order_relaxed);
}

static void pcp_push(struct page_pcp *c, struct page *p, bool zeroed)
{
	unsigned int n = atomic_load_explicit(&c->count, memory_order_relaxed);

	atomic_store_explicit(&p->pincount, zeroed ? PCP_ZEROED : 0, memory_order_relaxed);
	san_poison(p->data, MLN_PAGE_SIZE);
	san_poison(p, sizeof(*p));
	c->pages[n] = p;
	pcp_set_count(c, n + 1);
}

/* Refill an empty cache with up to PCP_BATCH pages; false if none could be had. */
static bool pcp_refill(struct page_pcp *c)
{
	struct page *got[PCP_BATCH];
	bool zeroed[PCP_BATCH];
	unsigned int n = 0;

	mln_mutex_lock(&slab_cache.lock, 0);
	while (n < PCP_BATCH && (got[n] = slab_take_any(&zeroed[n])))
		n++;
	mln_mutex_unlock(&slab_cache.lock, 0);
	/* Taken oldest last, so that the first page handed out is the one just taken. */
	while (n--)
		pcp_push(c, got[n], zeroed[n]);
	return atomic_load_explicit(&c->count, memory_order_relaxed) != 0;
}

static struct page *page_mem_alloc(bool *zeroed)
{
	struct page_pcp *c = pcp_get();
	struct page *p;
	unsigned int n;

	if (mln_unlikely(!c)) {		/* no cache: straight from the slab */
		mln_mutex_lock(&slab_cache.lock, 0);
		p = slab_take_any(zeroed);
		mln_mutex_unlock(&slab_cache.lock, 0);
		return p;
	}
	if (mln_unlikely(!atomic_load_explicit(&c->count, memory_order_relaxed)) &&
	    !pcp_refill(c))
		return NULL;
	n = atomic_load_explicit(&c->count, memory_order_relaxed) - 1;
	p = c->pages[n];
	pcp_set_count(c, n);
	san_unpoison(p, sizeof(*p));
	san_unpoison(p->data, MLN_PAGE_SIZE);
	*zeroed = atomic_load_explicit(&p->pincount, memory_order_relaxed) == PCP_ZEROED;
	return p;
}

/* Free pages whose refcount reached zero: into the cache, overflow to the slab. */
static void pages_free(struct page **v, size_t n)
{
	struct page_pcp *c = pcp_get();
	struct page *spill[PCP_BATCH];

	for (size_t i = 0; i < n; i++) {
		if (mln_unlikely(!c)) {
			slab_give_many(&v[i], 1);
			continue;
		}
		if (atomic_load_explicit(&c->count, memory_order_relaxed) == PCP_HIGH) {
			/* Full: the oldest PCP_BATCH go back, keeping the recent (cache-warm) ones. */
			unsigned int keep = PCP_HIGH - PCP_BATCH;

			for (unsigned int j = 0; j < PCP_BATCH; j++) {
				spill[j] = c->pages[j];
				san_unpoison(spill[j], sizeof(*spill[j]));
				san_unpoison(spill[j]->data, MLN_PAGE_SIZE);
			}
			memmove(c->pages, c->pages + PCP_BATCH, keep * sizeof(c->pages[0]));
			pcp_set_count(c, keep);
			slab_give_many(spill, PCP_BATCH);
		}
		pcp_push(c, v[i], false);
	}
}

/*
 * fork(): the slab lists must not be mid-update, so the forking thread
 * holds their lock across it.  In the child only that thread exists: the
 * lock is reset, and the other threads' per-thread caches stay as they
 * are (their pages are never taken again, as at those threads' exit
 * without the destructor).
 */
static void slab_fork_prepare(void)
{
	mln_mutex_lock(&slab_cache.lock, 0);
}

static void slab_fork_parent(void)
{
	mln_mutex_unlock(&slab_cache.lock, 0);
}

static void slab_fork_child(void)
{
	atomic_store_explicit(&slab_cache.lock, 0, memory_order_relaxed);
}

/* At load, before any thread can be inside the slab: no fork can come first. */
__attribute__((constructor)) static void slab_module_init(void)
{
	pthread_atfork(slab_fork_prepare, slab_fork_parent, slab_fork_child);
}

size_t page_nr_live(void)
{
	size_t n, cached = 0;

	mln_mutex_lock(&slab_cache.lock, 0);
	n = slab_cache.nr_live;
	for (struct page_pcp *c = pcp_list; c; c = c->next)
		cached += atomic_load_explicit(&c->count, memory_order_relaxed);
	mln_mutex_unlock(&slab_cache.lock, 0);
	return n - cached;
}

#else /* MLN_PAGE_MALLOC: the plain allocator, for comparison and exact LSan reports */
static _Atomic size_t malloc_live;

static struct page *page_mem_alloc(bool *zeroed)
{
	struct page *p = malloc(sizeof(*p));
	void *data;

	if (!p)
		return NULL;
	if (posix_memalign(&data, MLN_PAGE_SIZE, MLN_PAGE_SIZE)) {
		free(p);
		return NULL;
	}
	p->data = data;
	*zeroed = false;
	atomic_fetch_add_explicit(&malloc_live, 1, memory_order_relaxed);
	return p;
}

static void pages_free(struct page **v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i]->data);
		free(v[i]);
	}
	atomic_fetch_sub_explicit(&malloc_live, n, memory_order_relaxed);
}

size_t page_nr_live(void)
{
	return atomic_load_explicit(&malloc_live, memory_order_relaxed);
}
#endif /* MLN_PAGE_MALLOC */

/* ------------------------------------------------------------------------
 * Pages.
 */

struct page *page_alloc(const struct page *src)
{
	bool zeroed;
	struct page *p = page_mem_alloc(&zeroed);

	if (!p)
		return NULL;
	if (src)
		page_memcpy(p->data, src->data, MLN_PAGE_SIZE);
	else if (!zeroed)
		page_memset(p->data, 0, MLN_PAGE_SIZE);
	/* Relaxed: the page is published by a PTE store under the leaf lock (or by the caller). */
	atomic_store_explicit(&p->refcount, 1, memory_order_relaxed);
	atomic_store_explicit(&p->pincount, 0, memory_order_relaxed);
	return p;
}

struct page *page_alloc_frame(uint32_t frame)
{
	/* Only a descriptor: the data are the frame's, mapped in the pool already. */
	struct page *p = malloc(sizeof(*p));

	if (!p)
		return NULL;
	p->data = frame_data(frame);
	/* Relaxed: published by a PTE store under the leaf lock, as page_alloc()'s. */
	atomic_store_explicit(&p->refcount, 1, memory_order_relaxed);
	atomic_store_explicit(&p->pincount, 0, memory_order_relaxed);
	frame_get(frame);
	return p;
}

void page_get(struct page *p)
{
	/* Relaxed: the caller holds a reference, or the PT lock over one; nothing is published. */
	atomic_fetch_add_explicit(&p->refcount, 1, memory_order_relaxed);
}

/* Drop one reference; true if it was the last (the page is then ours to free). */
static inline bool page_put_testzero(struct page *p)
{
	/* Release: our accesses to the page happen before whoever frees it. */
	uint32_t old = atomic_fetch_sub_explicit(&p->refcount, 1, memory_order_release);

	if (mln_likely(old > 1))
		return false;
	if (mln_unlikely(old == 0))
		pgtable_bug("page_put: refcount underflow", p);
	/*
	 * Acquire: reading the value our decrement wrote synchronises with every
	 * earlier release decrement (they head release sequences that our RMW
	 * continues), as the kernel's smp_acquire__after_ctrl_dep() does; a load
	 * rather than atomic_thread_fence(), which ThreadSanitizer does not model.
	 */
	(void)atomic_load_explicit(&p->refcount, memory_order_acquire);
	return true;
}

/*
 * Free pages whose last reference went: a frame's page frees its descriptor
 * and drops its frame reference (the window's slot usually holds another),
 * the others go back to the slab in one batch.
 */
static void pages_release(struct page **v, size_t n)
{
	size_t slab = 0;

	for (size_t i = 0; i < n; i++) {
		if (mln_likely(!frames_contains(v[i]->data))) {
			/* A frame of a host fork's parent: only the descriptor is ours. */
			if (mln_unlikely(frames_inherited(v[i]->data))) {
				free(v[i]);
				continue;
			}
			v[slab++] = v[i];
			continue;
		}
		frame_t f = frame_of(v[i]->data);

		free(v[i]);
		frames_put(&f, 1);
	}
	if (slab)
		pages_free(v, slab);
}

void page_put(struct page *p)
{
	if (page_put_testzero(p))
		pages_release(&p, 1);
}

/* page_put() each of @v[0..n), freeing the last references in one batch. */
static void pages_put(struct page **v, size_t n)
{
	size_t dead = 0;

	for (size_t i = 0; i < n; i++)
		if (page_put_testzero(v[i]))
			v[dead++] = v[i];
	if (dead)
		pages_release(v, dead);
}

/* ------------------------------------------------------------------------
 * Tables.
 */

#define PT_BITS		9
#define PTE_SHIFT	MLN_PAGE_SHIFT		/* 12: a PTE maps 4 KiB */
#define PMD_SHIFT	(PTE_SHIFT + PT_BITS)	/* 21: a leaf table maps 2 MiB */
#define PUD_SHIFT	(PMD_SHIFT + PT_BITS)	/* 30: a level-2 directory maps 1 GiB */
#define PGD_SHIFT	(PUD_SHIFT + PT_BITS)	/* 39: a level-3 directory maps 512 GiB */
#define VA_END		(1ull << MLN_VA_BITS)

_Static_assert(PGD_SHIFT + PT_BITS == MLN_VA_BITS, "four levels cover the address space");
_Static_assert(MLN_PTRS_PER_TABLE == 1 << PT_BITS, "9 bits of index per level");

/* Levels 3 and 2: the leaf's layout, so that every table has one size. */
struct pt_dir {
	uint32_t unused[2];
	void *_Atomic slot[MLN_PTRS_PER_TABLE] __attribute__((aligned(64)));
};

_Static_assert(sizeof(struct pt_dir) == sizeof(struct pte_table), "one size for every table");
_Static_assert(sizeof(void *_Atomic) == sizeof(_Atomic pte_t), "slots are pointers");

static inline unsigned int pt_index(uint64_t addr, unsigned int shift)
{
	return (unsigned int)(addr >> shift) & (MLN_PTRS_PER_TABLE - 1);
}

/* The end of @addr's aligned 2^@shift span, or @limit if that comes first. */
static inline uint64_t span_end(uint64_t addr, unsigned int shift, uint64_t limit)
{
	uint64_t end = (addr | ((1ull << shift) - 1)) + 1;

	return end < limit ? end : limit;
}

static inline void *slot_load(void *_Atomic *slot)
{
	/* Acquire: pairs with the installer's release, so the table's zeroes are visible. */
	return atomic_load_explicit(slot, memory_order_acquire);
}

/* The table in @slot, installing a zeroed one if it is empty. */
static void *slot_install(struct pgtable *pt, void *_Atomic *slot)
{
	void *cur = slot_load(slot), *t;

	if (cur)
		return cur;
	/* Cache-line aligned: the PTEs start a line of their own. */
	if (posix_memalign(&t, 64, sizeof(struct pte_table)))
		return NULL;
	memset(t, 0, sizeof(struct pte_table));
	/*
	 * Release on success: the zeroed contents are visible before the
	 * pointer.  Acquire on failure: so are the winner's, which we return.
	 */
	if (atomic_compare_exchange_strong_explicit(slot, &cur, t, memory_order_acq_rel,
						    memory_order_acquire)) {
		atomic_fetch_add_explicit(&pt->nr_tables, 1, memory_order_relaxed);
		return t;
	}
	free(t);
	return cur;
}

int pgtable_init(struct pgtable *pt)
{
	for (int i = 0; i < MLN_PTRS_PER_TABLE; i++)
		atomic_init(&pt->top[i], NULL);
	atomic_init(&pt->nr_tables, 0);
	if (posix_memalign((void **)&pt->nr_pages, 64,
			   (MLN_THREAD_OVERFLOW + 1) * sizeof(*pt->nr_pages)))
		return -ENOMEM;
	memset(pt->nr_pages, 0, (MLN_THREAD_OVERFLOW + 1) * sizeof(*pt->nr_pages));
	return 0;
}

/* Add @n to the calling thread's count of @pt's pages. */
static void nr_pages_add(struct pgtable *pt, int64_t n)
{
	unsigned int t = mln_thread_index();
	_Atomic int64_t *c = &pt->nr_pages[t].pages;

	if (mln_unlikely(t == MLN_THREAD_OVERFLOW))
		atomic_fetch_add_explicit(c, n, memory_order_relaxed);
	else	/* its only writer: no read-modify-write */
		atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
				      memory_order_relaxed);
}

struct pte_table *pgtable_leaf(struct pgtable *pt, uint64_t addr, int alloc)
{
	void *_Atomic *slot;
	struct pt_dir *dir;
	unsigned int shift;

	if (mln_unlikely(addr >= VA_END))
		return NULL;
	slot = &pt->top[pt_index(addr, PGD_SHIFT)];
	for (shift = PUD_SHIFT;; shift -= PT_BITS) {
		dir = alloc ? slot_install(pt, slot) : slot_load(slot);
		if (!dir || shift < PMD_SHIFT)
			return (struct pte_table *)dir;
		slot = &dir->slot[pt_index(addr, shift)];
	}
}

void pte_table_lock(struct pte_table *t)
{
	mln_mutex_lock(&t->lock, 0);
}

void pte_table_unlock(struct pte_table *t)
{
	mln_mutex_unlock(&t->lock, 0);
}

/*
 * PTE stores under the lock are releases although the lock orders them for
 * locked readers: a lockless peek (acquire) that sees a page then also sees
 * its contents, as the kernel's barrier before set_pte_at() provides.  It is
 * a plain store on x86 and an stlr on arm64.
 */
void pte_install_locked(struct pgtable *pt, struct pte_table *t, uint64_t addr, pte_t pte)
{
	_Atomic pte_t *slot = pte_slot(t, addr);

	if (mln_unlikely(!pte || atomic_load_explicit(slot, memory_order_relaxed)))
		pgtable_bug("pte_install_locked: no page, or the PTE is in use", (void *)pte);
	atomic_store_explicit(slot, pte, memory_order_release);
	t->nr_present++;
	nr_pages_add(pt, 1);
}

pte_t pte_replace_locked(struct pte_table *t, uint64_t addr, pte_t pte)
{
	_Atomic pte_t *slot = pte_slot(t, addr);
	pte_t old = atomic_load_explicit(slot, memory_order_relaxed);

	/* Either side empty would change the counts, which need the pgtable. */
	if (mln_unlikely(!pte || !old))
		pgtable_bug("pte_replace_locked: empty PTE, or no page", (void *)pte);
	atomic_store_explicit(slot, pte, memory_order_release);
	return old;
}

pte_t pte_clear_locked(struct pgtable *pt, struct pte_table *t, uint64_t addr)
{
	_Atomic pte_t *slot = pte_slot(t, addr);
	pte_t old = atomic_load_explicit(slot, memory_order_relaxed);

	if (old) {
		atomic_store_explicit(slot, 0, memory_order_relaxed);
		t->nr_present--;
		nr_pages_add(pt, -1);
	}
	return old;
}

/* ------------------------------------------------------------------------
 * Range operations.
 */

struct walk {
	struct pgtable *pt;
	pgtable_leaf_fn fn;	/* pgtable_walk */
	void *arg;
	/* Called on each present leaf with its slots [lo, hi); < 0 stops the walk. */
	long (*leaf)(struct walk *w, struct pte_table *t, uint64_t base, unsigned int lo,
		     unsigned int hi);
	uint64_t tables, slots;
	struct pgtable *dst;	/* copy */
	int cow;		/* copy */
	uint64_t delta;		/* move: destination - source */
};

static long walk_range(struct walk *w, uint64_t start, uint64_t end)
{
	struct pgtable *pt = w->pt;
	uint64_t addr, end4, end3, end2;
	long total = 0, r = 0;

	if (end > VA_END)
		end = VA_END;
	start &= MLN_PAGE_MASK;
	end = (end + MLN_PAGE_SIZE - 1) & MLN_PAGE_MASK;
	for (addr = start; addr < end && r >= 0; addr = end4) {
		struct pt_dir *pud = slot_load(&pt->top[pt_index(addr, PGD_SHIFT)]);

		end4 = span_end(addr, PGD_SHIFT, end);
		w->slots++;
		if (!pud)
			continue;
		w->tables++;
		for (; addr < end4 && r >= 0; addr = end3) {
			struct pt_dir *pmd = slot_load(&pud->slot[pt_index(addr, PUD_SHIFT)]);

			end3 = span_end(addr, PUD_SHIFT, end4);
			w->slots++;
			if (!pmd)
				continue;
			w->tables++;
			for (; addr < end3; addr = end2) {
				struct pte_table *t = slot_load(&pmd->slot[pt_index(addr, PMD_SHIFT)]);

				end2 = span_end(addr, PMD_SHIFT, end3);
				w->slots++;
				if (!t)
					continue;
				w->tables++;
				r = w->leaf(w, t, addr & ~((1ull << PMD_SHIFT) - 1),
					    pt_index(addr, PTE_SHIFT),
					    pt_index(end2 - 1, PTE_SHIFT) + 1);
				if (r < 0)
					break;
				total += r;
			}
		}
	}
	walk_tables += w->tables;
	walk_slots += w->slots;
	return r < 0 ? r : total;
}

static long fn_leaf(struct walk *w, struct pte_table *t, uint64_t base, unsigned int lo,
		    unsigned int hi)
{
	return w->fn(w->arg, t, base, lo, hi);
}

int pte_slots_alloc(struct pte_table *t)
{
	if (!t->slots)
		t->slots = calloc(MLN_PTRS_PER_TABLE, sizeof(*t->slots));
	return t->slots ? 0 : -ENOMEM;
}

/*
 * Unmap the window pages of released slots (a run of contiguous host
 * addresses with one munmap), and only then drop their frame references:
 * a frame given back and handed out again must show through no old window.
 */
static void slots_release(struct host_slot *v, size_t n)
{
	frame_t frames[MLN_PTRS_PER_TABLE];
	size_t nput = 0;

	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && v[j].host == v[j - 1].host + MLN_PAGE_SIZE; j++)
			;
		/* A lone page whose frame dies with it may stay mapped as a spare. */
		if (j == i + 1 && frame_refs(v[i].frame) == 1 &&
		    frames_spare_put(v[i].host, v[i].frame))
			continue;
		munmap((void *)v[i].host, (j - i) << MLN_PAGE_SHIFT);
		for (size_t k = i; k < j; k++)
			frames[nput++] = v[k].frame;
	}
	frames_put(frames, nput);
}

static long zap_leaf(struct walk *w, struct pte_table *t, uint64_t base, unsigned int lo,
		     unsigned int hi)
{
	struct page *put[MLN_PTRS_PER_TABLE];
	struct host_slot gone[MLN_PTRS_PER_TABLE];
	size_t n = 0, ngone = 0;
	unsigned int i;

	(void)base;
	pte_table_lock(t);
	for (i = lo; i < hi && (t->nr_present || t->nr_slots); i++) {
		pte_t pte = atomic_load_explicit(&t->pte[i], memory_order_relaxed);

		if (t->slots && t->slots[i].host) {
			gone[ngone++] = t->slots[i];
			t->slots[i].host = 0;
			t->nr_slots--;
		}
		if (!pte)
			continue;
		atomic_store_explicit(&t->pte[i], 0, memory_order_relaxed);
		t->nr_present--;
		put[n++] = pte_page(pte);
	}
	pte_table_unlock(t);
	w->slots += i - lo;
	if (n) {
		nr_pages_add(w->pt, -(int64_t)n);
		pages_put(put, n);	/* after the unlock: freeing need not hold up faults */
	}
	/* The slots still hold their frames: none was given back by pages_put(). */
	if (ngone)
		slots_release(gone, ngone);
	return (long)n;
}

size_t pgtable_zap(struct pgtable *pt, uint64_t start, uint64_t end)
{
	struct walk w = { .pt = pt, .leaf = zap_leaf };

	return (size_t)walk_range(&w, start, end);
}

static long wrprotect_leaf(struct walk *w, struct pte_table *t, uint64_t base, unsigned int lo,
			   unsigned int hi)
{
	unsigned int i, left;
	long n = 0;

	(void)base;
	pte_table_lock(t);
	left = t->nr_present;
	for (i = lo; i < hi && left; i++) {
		pte_t pte = atomic_load_explicit(&t->pte[i], memory_order_relaxed);

		if (!pte)
			continue;
		left--;
		if (pte & PTE_WRITE) {
			atomic_store_explicit(&t->pte[i], pte & ~(pte_t)PTE_WRITE,
					      memory_order_relaxed);
			n++;
		}
	}
	pte_table_unlock(t);
	w->slots += i - lo;
	return n;
}

/*
 * Move the present PTEs of a leaf to the same slots @w->delta bytes up
 * (mremap's move_page_tables()).  The destination leaves exist already
 * (pgtable_move() made them), so nothing here can fail.  Each PTE keeps its
 * page reference and its flags; pins stay with the page.
 */
static long move_leaf(struct walk *w, struct pte_table *t, uint64_t base, unsigned int lo,
		      unsigned int hi)
{
	unsigned int i;
	long n = 0;

	for (i = lo; i < hi; i++) {
		uint64_t from = base + ((uint64_t)i << MLN_PAGE_SHIFT), to = from + w->delta;
		struct host_slot slot = { 0, 0, 0 };
		struct pte_table *d;
		pte_t pte;

		pte_table_lock(t);
		pte = pte_clear_locked(w->pt, t, from);
		if (t->slots && t->slots[i].host) {
			/* The window stays where it is: only the guest address changes. */
			slot = t->slots[i];
			t->slots[i].host = 0;
			t->nr_slots--;
		}
		pte_table_unlock(t);
		if (!pte && !slot.host)
			continue;
		d = pgtable_leaf(w->pt, to, 0);
		pte_table_lock(d);
		if (pte)
			pte_install_locked(w->pt, d, to, pte);
		if (slot.host) {
			*host_slot_of(d, to) = slot;	/* pgtable_move() made the array */
			d->nr_slots++;
		}
		pte_table_unlock(d);
		n += pte != 0;
	}
	w->slots += hi - lo;
	return n;
}

int pgtable_move(struct pgtable *pt, uint64_t src, uint64_t dst, uint64_t len)
{
	struct walk w = { .pt = pt, .leaf = move_leaf, .delta = dst - src };

	const uint64_t leaf_span = MLN_PTRS_PER_TABLE * MLN_PAGE_SIZE;
	bool slots = false;

	/* Host-backed: the source has slots, and they move with the PTEs. */
	for (uint64_t a = src & ~(leaf_span - 1); a < src + len && !slots; a += leaf_span) {
		struct pte_table *t = pgtable_leaf(pt, a, 0);

		if (!t)
			continue;
		/* Locked: a fault on another VMA of the leaf may be making the array. */
		pte_table_lock(t);
		slots = t->slots != NULL;
		pte_table_unlock(t);
	}
	/* Every destination leaf (and slot array) first: then the move cannot fail half done. */
	for (uint64_t a = dst; a < dst + len; a = (a | (leaf_span - 1)) + 1) {
		struct pte_table *d = pgtable_leaf(pt, a, 1);
		int err = d ? 0 : -ENOMEM;

		if (d && slots) {
			pte_table_lock(d);
			err = pte_slots_alloc(d);
			pte_table_unlock(d);
		}
		if (err)
			return err;
	}
	walk_range(&w, src, src + len);
	return 0;
}

size_t pgtable_wrprotect(struct pgtable *pt, uint64_t start, uint64_t end)
{
	struct walk w = { .pt = pt, .leaf = wrprotect_leaf };

	return (size_t)walk_range(&w, start, end);
}

/*
 * Copy one leaf in two steps, never holding two leaf locks: snapshot the
 * source's PTEs (taking a reference on each page, and write-protecting them
 * for COW) under its lock, then install them under the destination's.  So
 * there is no lock order between page tables, and a copy within one table
 * works too.  A destination PTE already in use is replaced (its page put).
 */
static long copy_leaf(struct walk *w, struct pte_table *t, uint64_t base, unsigned int lo,
		      unsigned int hi)
{
	pte_t snap[MLN_PTRS_PER_TABLE];
	bool pinned[MLN_PTRS_PER_TABLE];
	struct page *put[MLN_PTRS_PER_TABLE];
	struct pte_table *d;
	size_t n = 0, nput = 0, added = 0, npinned = 0;
	unsigned int i, left, last = lo;

	pte_table_lock(t);
	left = t->nr_present;
	for (i = lo; i < hi && left; i++) {
		pte_t pte = atomic_load_explicit(&t->pte[i], memory_order_relaxed);

		snap[i] = pte;
		pinned[i] = false;
		if (!pte)
			continue;
		left--;
		/*
		 * A pinned private page stays the source's, writable, and the
		 * copy gets its own copy now (Linux's page_needs_cow_for_dma):
		 * sharing it copy-on-write would leave the pin behind on the
		 * source's next write.
		 */
		if (w->cow && atomic_load_explicit(&pte_page(pte)->pincount, memory_order_relaxed)) {
			pinned[i] = true;
			npinned++;
		} else if (w->cow && (pte & PTE_WRITE)) {
			pte &= ~(pte_t)PTE_WRITE;
			atomic_store_explicit(&t->pte[i], pte, memory_order_relaxed);
			snap[i] = pte;
		}
		page_get(pte_page(pte));
		n++;
		last = i + 1;
	}
	pte_table_unlock(t);
	w->slots += i - lo;
	if (!n)
		return 0;

	for (i = lo; i < last && npinned; i++) {
		struct page *c;

		if (!pinned[i])
			continue;
		npinned--;
		c = page_alloc(pte_page(snap[i]));
		page_put(pte_page(snap[i]));
		if (!c) {
			snap[i] = 0;	/* its reference is gone already */
			d = NULL;
			goto nomem;
		}
		snap[i] = (pte_t)c | (snap[i] & PTE_WRITE);
	}

	d = pgtable_leaf(w->dst, base, 1);
nomem:
	if (!d) {
		for (i = lo; i < last; i++)
			if (snap[i])
				put[nput++] = pte_page(snap[i]);
		pages_put(put, nput);
		return -ENOMEM;
	}
	pte_table_lock(d);
	for (i = lo; i < last; i++) {
		pte_t old;

		if (!snap[i])
			continue;
		old = atomic_load_explicit(&d->pte[i], memory_order_relaxed);
		atomic_store_explicit(&d->pte[i], snap[i], memory_order_release);
		if (old)
			put[nput++] = pte_page(old);
		else
			added++;
	}
	d->nr_present += (uint32_t)added;
	pte_table_unlock(d);
	if (added)
		nr_pages_add(w->dst, (int64_t)added);
	if (nput)
		pages_put(put, nput);
	return 0;
}

int pgtable_copy(struct pgtable *dst, struct pgtable *src, uint64_t start, uint64_t end, int cow)
{
	struct walk w = { .pt = src, .leaf = copy_leaf, .dst = dst, .cow = cow };

	return walk_range(&w, start, end) < 0 ? -ENOMEM : 0;
}

long pgtable_walk(struct pgtable *pt, uint64_t start, uint64_t end, pgtable_leaf_fn fn,
		  void *arg)
{
	struct walk w = { .pt = pt, .leaf = fn_leaf, .fn = fn, .arg = arg };

	return walk_range(&w, start, end);
}

void pgtable_walk_counts(uint64_t *tables, uint64_t *slots)
{
	*tables = walk_tables;
	*slots = walk_slots;
}

/* ------------------------------------------------------------------------
 * Teardown and accounting.
 */

static void leaf_destroy(struct pte_table *t)
{
	struct page *put[MLN_PTRS_PER_TABLE];
	size_t n = 0;

	struct host_slot gone[MLN_PTRS_PER_TABLE];
	size_t ngone = 0;

	for (unsigned int i = 0; i < MLN_PTRS_PER_TABLE && n < t->nr_present; i++) {
		pte_t pte = atomic_load_explicit(&t->pte[i], memory_order_relaxed);

		if (pte)
			put[n++] = pte_page(pte);
	}
	pages_put(put, n);
	for (unsigned int i = 0; t->slots && i < MLN_PTRS_PER_TABLE && ngone < t->nr_slots; i++)
		if (t->slots[i].host)
			gone[ngone++] = t->slots[i];
	if (ngone)
		slots_release(gone, ngone);
	free(t->slots);
	free(t);
}

/* The caller serialises this against every other use of @pt, so nothing is locked. */
void pgtable_destroy(struct pgtable *pt)
{
	for (unsigned int i = 0; i < MLN_PTRS_PER_TABLE; i++) {
		struct pt_dir *pud = atomic_load_explicit(&pt->top[i], memory_order_relaxed);

		if (!pud)
			continue;
		for (unsigned int j = 0; j < MLN_PTRS_PER_TABLE; j++) {
			struct pt_dir *pmd = atomic_load_explicit(&pud->slot[j],
								  memory_order_relaxed);

			if (!pmd)
				continue;
			for (unsigned int k = 0; k < MLN_PTRS_PER_TABLE; k++) {
				struct pte_table *t = atomic_load_explicit(&pmd->slot[k],
									   memory_order_relaxed);

				if (t)
					leaf_destroy(t);
			}
			free(pmd);
		}
		free(pud);
		atomic_store_explicit(&pt->top[i], NULL, memory_order_relaxed);
	}
	atomic_store_explicit(&pt->nr_tables, 0, memory_order_relaxed);
	free(pt->nr_pages);
	pt->nr_pages = NULL;
}

size_t pgtable_bytes(const struct pgtable *pt)
{
	return atomic_load_explicit(&pt->nr_tables, memory_order_relaxed) *
	       sizeof(struct pte_table);
}

size_t pgtable_nr_pages(const struct pgtable *pt)
{
	int64_t sum = 0;

	if (!pt->nr_pages)
		return 0;
	for (unsigned int t = 0; t <= MLN_THREAD_OVERFLOW; t++)
		sum += atomic_load_explicit(&pt->nr_pages[t].pages, memory_order_relaxed);
	return sum > 0 ? (size_t)sum : 0;	/* a racing reader may see a transient negative */
}
