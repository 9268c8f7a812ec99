/* SPDX-License-Identifier: MIT */
/*
 * test_pgtable.c - pages and the 4-level page table (pgtable.h): refcounts,
 * the PTE helpers, the range operations and their accounting, and the
 * concurrency contract (racing table installs agree, one PTE gets one page,
 * readers holding a page reference survive a concurrent zap).
 *
 * Leaks and uses after free are left to the sanitizer builds (ASan poisons
 * free slab pages); page_nr_live() lets every test also check the exact
 * number of pages alive, and pgtable_walk_counts() bounds what a range
 * walk looked at.  Both are test hooks of pgtable.c, declared here.
 *
 *   test_pgtable [--only NAME]... [--list]
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtable.h"
#include "test_util.h"

size_t page_nr_live(void);
void pgtable_walk_counts(uint64_t *tables, uint64_t *slots);

#define KB 1024ull
#define MB (1024 * KB)
#define GB (1024 * MB)
#define PG MLN_PAGE_SIZE
#define LEAF_SPAN (2 * MB)
#define VA_END (1ull << MLN_VA_BITS)
#define PTE_OTHER 4u		/* a flag bit pgtable.c does not interpret */

/*
 * Page-sized memset/memcpy through a pointer: GCC expands fixed-size calls
 * inline, out of ThreadSanitizer's sight, and the races on page contents are
 * what the concurrency tests are about.
 */
static void *(*volatile fill_bytes)(void *, int, size_t) = memset;
static void *(*volatile copy_bytes)(void *, const void *, size_t) = memcpy;

static size_t nr_tables(struct pgtable *pt)
{
	return atomic_load(&pt->nr_tables);
}

static uint32_t refs(struct page *p)
{
	return atomic_load(&p->refcount);
}

/* A new page filled with @fill, installed at @addr (which must be empty). */
static struct page *map(struct pgtable *pt, uint64_t addr, unsigned int flags, uint8_t fill)
{
	struct page *p = page_alloc(NULL);
	struct pte_table *t = pgtable_leaf(pt, addr, 1);

	CHECK(p && t);
	memset(p->data, fill, PG);
	pte_table_lock(t);
	pte_install_locked(pt, t, addr, (pte_t)p | flags);
	pte_table_unlock(t);
	return p;
}

/* The PTE at @addr, read under its leaf lock (0 if no table). */
static pte_t pte_at(struct pgtable *pt, uint64_t addr)
{
	struct pte_table *t = pgtable_leaf(pt, addr, 0);
	pte_t pte;

	if (!t)
		return 0;
	pte_table_lock(t);
	pte = atomic_load_explicit(pte_slot(t, addr), memory_order_relaxed);
	pte_table_unlock(t);
	return pte;
}

/* Tables a 4-level table needs below its top to reach every address in @a. */
static size_t tables_for(const uint64_t *a, size_t n)
{
	size_t count = 0;

	for (unsigned int shift = 39; shift >= 21; shift -= 9) {
		for (size_t i = 0; i < n; i++) {
			size_t j;

			for (j = 0; j < i; j++)
				if (a[j] >> shift == a[i] >> shift)
					break;
			count += j == i;
		}
	}
	return count;
}

static void walk_counts(uint64_t *tables, uint64_t *slots)
{
	pgtable_walk_counts(tables, slots);
}

/* ------------------------------------------------------------------------
 * Pages.
 */

static void t_page_alloc_copy_refcount(void)
{
	size_t base = page_nr_live();
	struct page *p = page_alloc(NULL), *q;
	size_t zero = 0;

	CHECK(p != NULL);
	CHECK(((uintptr_t)p->data & (PG - 1)) == 0);
	CHECK(((uintptr_t)p & 7) == 0);
	for (size_t i = 0; i < PG; i++)
		zero += p->data[i] == 0;
	CHECK_EQ(zero, PG);
	CHECK_EQ(refs(p), 1);
	CHECK_EQ(atomic_load(&p->pincount), 0);
	for (size_t i = 0; i < PG; i++)
		p->data[i] = (uint8_t)(i * 7 + 1);
	q = page_alloc(p);
	CHECK(q != NULL && q != p && q->data != p->data);
	CHECK(memcmp(q->data, p->data, PG) == 0);
	CHECK_EQ(refs(q), 1);
	CHECK_EQ(page_nr_live(), base + 2);
	page_get(p);
	page_get(p);
	CHECK_EQ(refs(p), 3);
	page_put(p);
	page_put(p);
	CHECK_EQ(refs(p), 1);
	CHECK_EQ(page_nr_live(), base + 2);
	page_put(p);
	CHECK_EQ(page_nr_live(), base + 1);	/* freed exactly at the last put */
	page_put(q);
	CHECK_EQ(page_nr_live(), base);
}

/* Enough pages for several slabs: distinct, aligned, zeroed also when recycled. */
static void t_page_many(void)
{
	enum { N = 3000 };
	static struct page *v[N];
	size_t base = page_nr_live();
	uint64_t rnd = 42;

	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < N; i++) {
			v[i] = page_alloc(NULL);
			CHECK(v[i] != NULL);
			CHECK(((uintptr_t)v[i]->data & (PG - 1)) == 0);
			/* Recycled pages come back zeroed: check a few words, write others. */
			CHECK(v[i]->data[0] == 0 && v[i]->data[PG - 1] == 0 && v[i]->data[PG / 2] == 0);
			memset(v[i]->data, 0xa5, PG);
			memcpy(v[i]->data, &i, sizeof(i));
		}
		CHECK_EQ(page_nr_live(), base + N);
		for (int i = 0; i < N; i++) {
			int j;

			memcpy(&j, v[i]->data, sizeof(j));
			CHECK_EQ(j, i);	/* no two pages share data */
		}
		for (int i = N - 1; i > 0; i--) {	/* free in random order */
			int j = (int)(tu_rand(&rnd) % (uint64_t)(i + 1));
			struct page *tmp = v[i];

			v[i] = v[j];
			v[j] = tmp;
		}
		for (int i = 0; i < N; i++)
			page_put(v[i]);
		CHECK_EQ(page_nr_live(), base);
	}
}

/* ------------------------------------------------------------------------
 * Tables and PTEs.
 */

static void t_leaf_addresses(void)
{
	static const uint64_t fixed[] = {
		0, PG, LEAF_SPAN - PG, LEAF_SPAN, LEAF_SPAN + PG, GB - PG, GB, 512 * GB - PG,
		512 * GB, (1ull << 47) - PG, 1ull << 47, VA_END - LEAF_SPAN, VA_END - LEAF_SPAN - PG,
		VA_END - PG,
	};
	enum { NF = sizeof(fixed) / sizeof(fixed[0]), N = NF + 64 };
	uint64_t a[N], rnd = 7;
	struct pte_table *t[N];
	struct pgtable pt;

	for (int i = 0; i < NF; i++)
		a[i] = fixed[i];
	for (int i = NF; i < N; i++) {
		/* Random pages, half of them near an earlier address (same or next leaf). */
		a[i] = tu_rand(&rnd) % VA_END & MLN_PAGE_MASK;
		if (i & 1)
			a[i] = (a[i - 1] + (tu_rand(&rnd) % (4 * LEAF_SPAN))) % VA_END & MLN_PAGE_MASK;
	}
	CHECK_EQ(pgtable_init(&pt), 0);
	CHECK(pgtable_leaf(&pt, 0, 0) == NULL);
	CHECK(pgtable_leaf(&pt, VA_END - PG, 0) == NULL);
	CHECK_EQ(nr_tables(&pt), 0);
	CHECK_EQ(pgtable_bytes(&pt), 0);
	for (int i = 0; i < N; i++) {
		t[i] = pgtable_leaf(&pt, a[i], 1);
		CHECK_MSG(t[i] != NULL, "leaf for 0x%llx", (unsigned long long)a[i]);
		CHECK_EQ(nr_tables(&pt), tables_for(a, (size_t)i + 1));
		CHECK_EQ(pgtable_bytes(&pt), nr_tables(&pt) * sizeof(struct pte_table));
	}
	for (int i = 0; i < N; i++) {
		CHECK(pgtable_leaf(&pt, a[i], 0) == t[i]);
		CHECK(pgtable_leaf(&pt, a[i], 1) == t[i]);	/* present: nothing new */
		CHECK(pgtable_leaf(&pt, a[i] | (LEAF_SPAN - PG), 0) == t[i]);
		for (int j = 0; j < i; j++)
			CHECK((a[i] / LEAF_SPAN == a[j] / LEAF_SPAN) == (t[i] == t[j]));
	}
	CHECK_EQ(nr_tables(&pt), tables_for(a, N));
	/* The leaf's slots are its own 512 PTEs, in address order. */
	CHECK(pte_slot(t[0], 0) == &t[0]->pte[0]);
	CHECK(pte_slot(t[0], PG) == &t[0]->pte[1]);
	CHECK(pte_slot(t[2], LEAF_SPAN - PG) == &t[2]->pte[511]);
	/* Beyond 48 bits there is nothing. */
	CHECK(pgtable_leaf(&pt, VA_END, 1) == NULL);
	CHECK(pgtable_leaf(&pt, UINT64_MAX, 1) == NULL);
	CHECK_EQ(nr_tables(&pt), tables_for(a, N));
	pgtable_destroy(&pt);
	CHECK_EQ(nr_tables(&pt), 0);
	CHECK_EQ(pgtable_bytes(&pt), 0);
}

static void t_install_replace_clear(void)
{
	size_t base = page_nr_live();
	uint64_t addr = 5 * GB + 3 * LEAF_SPAN + 7 * PG;
	struct pgtable pt;
	struct pte_table *t;
	struct page *p, *q;
	pte_t old;

	pgtable_init(&pt);
	t = pgtable_leaf(&pt, addr, 1);
	p = page_alloc(NULL);
	q = page_alloc(NULL);
	CHECK(t && p && q);
	CHECK_EQ(nr_tables(&pt), 3);
	pte_table_lock(t);
	CHECK_EQ(t->nr_present, 0);
	pte_install_locked(&pt, t, addr, (pte_t)p | PTE_WRITE);
	CHECK_EQ(atomic_load(pte_slot(t, addr)), (pte_t)p | PTE_WRITE);
	CHECK(pte_page(atomic_load(pte_slot(t, addr))) == p);
	CHECK_EQ(atomic_load(pte_slot(t, addr + PG)), 0);	/* neighbours untouched */
	CHECK_EQ(atomic_load(pte_slot(t, addr - PG)), 0);
	CHECK_EQ(t->nr_present, 1);
	CHECK_EQ(pgtable_nr_pages(&pt), 1);
	CHECK_EQ(refs(p), 1);				/* the PTE took over our reference */

	old = pte_replace_locked(t, addr, (pte_t)q);
	CHECK_EQ(old, (pte_t)p | PTE_WRITE);
	CHECK_EQ(atomic_load(pte_slot(t, addr)), (pte_t)q);
	CHECK_EQ(t->nr_present, 1);
	CHECK_EQ(pgtable_nr_pages(&pt), 1);
	page_put(pte_page(old));			/* the old PTE's reference is ours now */
	CHECK_EQ(page_nr_live(), base + 1);

	old = pte_clear_locked(&pt, t, addr);
	CHECK(pte_page(old) == q);
	CHECK_EQ(atomic_load(pte_slot(t, addr)), 0);
	CHECK_EQ(t->nr_present, 0);
	CHECK_EQ(pgtable_nr_pages(&pt), 0);
	CHECK_EQ(pte_clear_locked(&pt, t, addr), 0);	/* clearing nothing changes nothing */
	CHECK_EQ(pgtable_nr_pages(&pt), 0);
	pte_table_unlock(t);
	CHECK_EQ(refs(q), 1);
	page_put(q);
	CHECK_EQ(page_nr_live(), base);
	CHECK_EQ(nr_tables(&pt), 3);			/* tables stay until destroy */
	pgtable_destroy(&pt);
}

/* ------------------------------------------------------------------------
 * Range operations.
 */

static void t_copy_shares_pages(void)
{
	size_t base = page_nr_live();
	const uint64_t a[3] = { 4 * GB - PG, 4 * GB, 4 * GB + 9 * PG };	/* two leaves */
	const unsigned int fl[3] = { PTE_WRITE, 0, PTE_WRITE | PTE_OTHER };
	struct pgtable src, dst, cow;
	struct page *p[3];

	pgtable_init(&src);
	pgtable_init(&dst);
	pgtable_init(&cow);
	for (int i = 0; i < 3; i++)
		p[i] = map(&src, a[i], fl[i], (uint8_t)(i + 1));
	CHECK_EQ(pgtable_nr_pages(&src), 3);
	CHECK_EQ(nr_tables(&src), 5);	/* 4 GiB is a directory boundary too */

	/* Plain copy: the same pages and flags, one more reference each. */
	CHECK_EQ(pgtable_copy(&dst, &src, 4 * GB - LEAF_SPAN, 4 * GB + LEAF_SPAN, 0), 0);
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(pte_at(&dst, a[i]), (pte_t)p[i] | fl[i]);
		CHECK_EQ(pte_at(&src, a[i]), (pte_t)p[i] | fl[i]);
		CHECK_EQ(refs(p[i]), 2);
	}
	CHECK_EQ(pgtable_nr_pages(&dst), 3);
	CHECK_EQ(nr_tables(&dst), 5);
	CHECK_EQ(pgtable_bytes(&dst), 5 * sizeof(struct pte_table));
	CHECK_EQ(pgtable_leaf(&dst, a[1] + LEAF_SPAN, 0), NULL);	/* no table without PTEs */

	/* COW copy: write bits go in both, the other bits stay. */
	CHECK_EQ(pgtable_copy(&cow, &src, 0, 8 * GB, 1), 0);
	for (int i = 0; i < 3; i++) {
		pte_t want = (pte_t)p[i] | (fl[i] & ~PTE_WRITE);

		CHECK_EQ(pte_at(&cow, a[i]), want);
		CHECK_EQ(pte_at(&src, a[i]), want);
		CHECK_EQ(pte_at(&dst, a[i]), (pte_t)p[i] | fl[i]);	/* untouched */
		CHECK_EQ(refs(p[i]), 3);
	}
	CHECK_EQ(pgtable_nr_pages(&cow), 3);

	/* Zapping each table drops one reference; the last zap frees. */
	CHECK_EQ(pgtable_zap(&src, 0, 8 * GB), 3);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(refs(p[i]), 2);
	CHECK_EQ(pgtable_zap(&cow, 0, 8 * GB), 3);
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(refs(p[i]), 1);
		CHECK_EQ(p[i]->data[PG - 1], i + 1);	/* still alive and intact */
	}
	CHECK_EQ(page_nr_live(), base + 3);
	CHECK_EQ(pgtable_zap(&dst, a[0], a[1] + PG), 2);
	CHECK_EQ(page_nr_live(), base + 1);
	CHECK_EQ(pgtable_zap(&dst, 0, VA_END), 1);
	CHECK_EQ(page_nr_live(), base);
	CHECK_EQ(pgtable_nr_pages(&src) + pgtable_nr_pages(&dst) + pgtable_nr_pages(&cow), 0);
	CHECK_EQ(nr_tables(&src) + nr_tables(&dst) + nr_tables(&cow), 15);
	pgtable_destroy(&src);
	pgtable_destroy(&dst);
	pgtable_destroy(&cow);
}

/* Copying over PTEs in use replaces them; a copy of part of a range copies that part. */
static void t_copy_replaces_and_partial(void)
{
	size_t base = page_nr_live();
	struct pgtable src, dst;
	struct page *x, *y, *z;

	pgtable_init(&src);
	pgtable_init(&dst);
	x = map(&dst, 10 * MB, PTE_WRITE, 1);
	y = map(&src, 10 * MB, 0, 2);
	z = map(&src, 10 * MB + PG, PTE_WRITE, 3);
	CHECK_EQ(pgtable_copy(&dst, &src, 10 * MB, 10 * MB + PG, 0), 0);	/* only y */
	CHECK_EQ(pte_at(&dst, 10 * MB), (pte_t)y);
	CHECK_EQ(pte_at(&dst, 10 * MB + PG), 0);
	CHECK_EQ(pgtable_nr_pages(&dst), 1);
	CHECK_EQ(refs(y), 2);
	CHECK_EQ(refs(z), 1);
	CHECK_EQ(page_nr_live(), base + 2);	/* x went with its PTE */
	(void)x;
	/* A copy onto itself changes nothing. */
	CHECK_EQ(pgtable_copy(&src, &src, 0, 1 * GB, 0), 0);
	CHECK_EQ(pte_at(&src, 10 * MB + PG), (pte_t)z | PTE_WRITE);
	CHECK_EQ(refs(z), 1);
	CHECK_EQ(pgtable_nr_pages(&src), 2);
	pgtable_destroy(&src);
	pgtable_destroy(&dst);
	CHECK_EQ(page_nr_live(), base);
}

static void t_wrprotect(void)
{
	size_t base = page_nr_live();
	const unsigned int fl[4] = { PTE_WRITE, PTE_WRITE | PTE_OTHER, 0, PTE_OTHER };
	struct page *p[8];
	struct pgtable pt;

	pgtable_init(&pt);
	for (int i = 0; i < 8; i++)
		p[i] = map(&pt, 3 * GB - 4 * PG + (uint64_t)i * PG, fl[i % 4], 0);
	/* The upper half only (it starts a new leaf). */
	CHECK_EQ(pgtable_wrprotect(&pt, 3 * GB, 3 * GB + 4 * PG), 2);
	for (int i = 0; i < 8; i++) {
		unsigned int want = i < 4 ? fl[i % 4] : fl[i % 4] & ~PTE_WRITE;

		CHECK_EQ(pte_at(&pt, 3 * GB - 4 * PG + (uint64_t)i * PG), (pte_t)p[i] | want);
		CHECK_EQ(refs(p[i]), 1);
	}
	CHECK_EQ(pgtable_wrprotect(&pt, 0, VA_END), 2);
	CHECK_EQ(pgtable_wrprotect(&pt, 0, VA_END), 0);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(pte_at(&pt, 3 * GB - 4 * PG + (uint64_t)i * PG),
			 (pte_t)p[i] | (fl[i % 4] & ~PTE_WRITE));
	CHECK_EQ(pgtable_nr_pages(&pt), 8);
	CHECK_EQ(page_nr_live(), base + 8);
	pgtable_destroy(&pt);
	CHECK_EQ(page_nr_live(), base);
}

/*
 * Random maps, zaps and wrprotects over 10 MiB straddling leaf and 1 GiB
 * boundaries, against a model: holes, partial leaves, whole leaves.
 */
static void t_zap_wrprotect_model(void)
{
	enum { NP = 2560 };	/* 10 MiB */
	static pte_t model[NP];
	const uint64_t start = 1 * GB - 3 * MB - 5 * PG;
	size_t base = page_nr_live(), mapped = 0;
	uint64_t rnd = 99;
	struct pgtable pt;

	memset(model, 0, sizeof(model));
	pgtable_init(&pt);
	for (int op = 0; op < 300; op++) {
		unsigned int kind = (unsigned int)(tu_rand(&rnd) % 4);
		uint64_t lo = tu_rand(&rnd) % NP, hi = lo + tu_rand(&rnd) % (NP - lo) + 1;
		size_t want = 0, got;

		if (kind <= 1) {	/* map a sprinkle of pages */
			for (uint64_t i = lo; i < hi; i += 1 + tu_rand(&rnd) % 7) {
				if (model[i])
					continue;
				model[i] = (pte_t)map(&pt, start + i * PG, PTE_WRITE, (uint8_t)i) | PTE_WRITE;
				mapped++;
			}
			CHECK_EQ(pgtable_nr_pages(&pt), mapped);
			continue;
		}
		for (uint64_t i = lo; i < hi; i++) {
			if (kind == 2 && model[i]) {
				want++;
				model[i] = 0;
			} else if (kind == 3 && (model[i] & PTE_WRITE)) {
				want++;
				model[i] &= ~(pte_t)PTE_WRITE;
			}
		}
		if (kind == 2) {
			got = pgtable_zap(&pt, start + lo * PG, start + hi * PG);
			mapped -= want;
		} else {
			got = pgtable_wrprotect(&pt, start + lo * PG, start + hi * PG);
		}
		CHECK_EQ(got, want);
		CHECK_EQ(pgtable_nr_pages(&pt), mapped);
		CHECK_EQ(page_nr_live(), base + mapped);
	}
	for (uint64_t i = 0; i < NP; i++)
		CHECK_EQ(pte_at(&pt, start + i * PG), model[i]);
	/* Tables: two 1 GiB directories' worth around the boundary, six leaves. */
	CHECK_EQ(nr_tables(&pt), 1 + 2 + 6);
	CHECK_EQ(pgtable_zap(&pt, 0, VA_END), mapped);
	CHECK_EQ(pgtable_nr_pages(&pt), 0);
	CHECK_EQ(page_nr_live(), base);
	CHECK_EQ(nr_tables(&pt), 9);
	pgtable_destroy(&pt);
}

/* A walk over a huge, nearly empty range looks only at what is there. */
static void t_sparse_range_walk_is_cheap(void)
{
	const uint64_t a[3] = { PG, 0x123456789000ull, (1ull << 47) - PG };
	/* The top's 256 slots of [0, 2^47), then 512 slots of each present table. */
	const uint64_t max_slots = 256 + 3 * 3 * MLN_PTRS_PER_TABLE;
	size_t base = page_nr_live();
	uint64_t t0, s0, t1, s1;
	struct pgtable pt, copy;

	pgtable_init(&pt);
	pgtable_init(&copy);
	for (int i = 0; i < 3; i++)
		map(&pt, a[i], PTE_WRITE, 0);
	CHECK_EQ(nr_tables(&pt), 9);

	walk_counts(&t0, &s0);
	CHECK_EQ(pgtable_wrprotect(&pt, 0, 1ull << 47), 3);
	walk_counts(&t1, &s1);
	CHECK_EQ(t1 - t0, 9);
	CHECK_MSG(s1 - s0 <= max_slots, "wrprotect looked at %llu slots",
		  (unsigned long long)(s1 - s0));

	walk_counts(&t0, &s0);
	CHECK_EQ(pgtable_copy(&copy, &pt, 0, 1ull << 47, 1), 0);
	walk_counts(&t1, &s1);
	CHECK_EQ(t1 - t0, 9);
	CHECK(s1 - s0 <= max_slots);
	CHECK_EQ(nr_tables(&copy), 9);
	CHECK_EQ(pgtable_nr_pages(&copy), 3);

	walk_counts(&t0, &s0);
	CHECK_EQ(pgtable_zap(&pt, 0, 1ull << 47), 3);
	walk_counts(&t1, &s1);
	CHECK_EQ(t1 - t0, 9);
	CHECK_MSG(s1 - s0 <= max_slots, "zap looked at %llu slots", (unsigned long long)(s1 - s0));

	/* The whole space, nothing mapped: the top's 512 slots and the empty tables. */
	walk_counts(&t0, &s0);
	CHECK_EQ(pgtable_zap(&pt, 0, VA_END), 0);
	walk_counts(&t1, &s1);
	CHECK(s1 - s0 <= 512 + 6 * MLN_PTRS_PER_TABLE);
	/* Empty table, whole space: 512 top slots, nothing else. */
	pgtable_destroy(&pt);
	walk_counts(&t0, &s0);
	CHECK_EQ(pgtable_zap(&pt, 0, UINT64_MAX), 0);
	walk_counts(&t1, &s1);
	CHECK_EQ(t1 - t0, 0);
	CHECK_EQ(s1 - s0, 512);

	CHECK_EQ(page_nr_live(), base + 3);	/* the copy holds them */
	pgtable_destroy(&copy);
	CHECK_EQ(page_nr_live(), base);
}

/* Destroy puts every PTE's page; a page with another reference outlives it. */
static void t_destroy_and_accounting(void)
{
	size_t base = page_nr_live();
	struct pgtable pt;
	struct page *pinned;

	pgtable_init(&pt);
	CHECK_EQ(pgtable_bytes(&pt), 0);
	map(&pt, 0, PTE_WRITE, 1);
	CHECK_EQ(nr_tables(&pt), 3);
	CHECK_EQ(pgtable_bytes(&pt), 3 * sizeof(struct pte_table));
	for (uint64_t i = 1; i < 512; i++)
		map(&pt, i * PG, PTE_WRITE, 1);
	CHECK_EQ(nr_tables(&pt), 3);
	CHECK_EQ(pgtable_nr_pages(&pt), 512);
	pinned = map(&pt, 512 * PG, PTE_WRITE, 0x77);
	CHECK_EQ(nr_tables(&pt), 4);
	CHECK_EQ(pgtable_bytes(&pt), 4 * sizeof(struct pte_table));
	page_get(pinned);
	atomic_fetch_add(&pinned->pincount, 1);
	CHECK_EQ(page_nr_live(), base + 513);
	pgtable_destroy(&pt);
	CHECK_EQ(nr_tables(&pt), 0);
	CHECK_EQ(pgtable_bytes(&pt), 0);
	CHECK_EQ(pgtable_nr_pages(&pt), 0);
	CHECK_EQ(page_nr_live(), base + 1);
	CHECK_EQ(refs(pinned), 1);
	CHECK_EQ(pinned->data[123], 0x77);
	atomic_fetch_sub(&pinned->pincount, 1);
	page_put(pinned);
	CHECK_EQ(page_nr_live(), base);
	/* A destroyed table is empty, and usable again once initialised. */
	CHECK_EQ(pgtable_init(&pt), 0);
	map(&pt, VA_END - PG, 0, 0);
	CHECK_EQ(nr_tables(&pt), 3);
	pgtable_destroy(&pt);
	CHECK_EQ(page_nr_live(), base);
}

/* ------------------------------------------------------------------------
 * Concurrency.
 */

#define NT 8

struct race {
	struct pgtable pt;
	pthread_barrier_t go;
	const uint64_t *addrs;
	int n;
	struct pte_table *got[NT][16];
	atomic_int winners;
	_Atomic(struct page *) winner;
};

struct race_arg {
	struct race *r;
	int id;
};

static void *leaf_racer(void *p)
{
	struct race_arg *a = p;
	struct race *r = a->r;

	pthread_barrier_wait(&r->go);
	for (int k = 0; k < r->n; k++) {
		int i = (k + a->id) % r->n;	/* each thread its own order */

		r->got[a->id][i] = pgtable_leaf(&r->pt, r->addrs[i], 1);
	}
	return NULL;
}

static void t_race_leaf_alloc(void)
{
	const int rounds = 200;
	struct race_arg args[NT];
	pthread_t th[NT];
	static struct race r;

	for (int round = 0; round < rounds; round++) {
		/* Same page, same leaf, neighbouring leaves and directories, all fresh. */
		uint64_t b = (uint64_t)(round % 200 + 1) * 512 * GB - LEAF_SPAN;
		const uint64_t addrs[] = {
			b, b, b + PG, b + LEAF_SPAN - PG, b + LEAF_SPAN, b + 2 * LEAF_SPAN,
			b - LEAF_SPAN, b + GB, b + GB + LEAF_SPAN, b + 512 * GB, b - GB,
		};

		memset(&r, 0, sizeof(r));
		pgtable_init(&r.pt);
		pthread_barrier_init(&r.go, NULL, NT);
		r.addrs = addrs;
		r.n = (int)(sizeof(addrs) / sizeof(addrs[0]));
		for (int i = 0; i < NT; i++) {
			args[i] = (struct race_arg){ &r, i };
			tu_create(&th[i], leaf_racer, &args[i]);
		}
		for (int i = 0; i < NT; i++)
			JOIN(th[i], "leaf racer");
		for (int k = 0; k < r.n; k++) {
			CHECK(r.got[0][k] != NULL);
			CHECK(pgtable_leaf(&r.pt, addrs[k], 0) == r.got[0][k]);
			for (int i = 1; i < NT; i++)
				CHECK(r.got[i][k] == r.got[0][k]);
		}
		CHECK_EQ(nr_tables(&r.pt), tables_for(addrs, (size_t)r.n));
		pthread_barrier_destroy(&r.go);
		pgtable_destroy(&r.pt);
		if (atomic_load(&tu_test_failures))
			break;
	}
}

static void *install_racer(void *p)
{
	struct race_arg *a = p;
	struct race *r = a->r;
	uint64_t addr = r->addrs[0];
	struct page *pg = page_alloc(NULL);
	struct pte_table *t;

	CHECK(pg != NULL);
	pg->data[0] = (uint8_t)a->id;
	pthread_barrier_wait(&r->go);
	t = pgtable_leaf(&r->pt, addr, 1);
	pte_table_lock(t);
	if (!atomic_load_explicit(pte_slot(t, addr), memory_order_relaxed)) {
		pte_install_locked(&r->pt, t, addr, (pte_t)pg | PTE_WRITE);
		atomic_fetch_add(&r->winners, 1);
		atomic_store(&r->winner, pg);
		pg = NULL;
	}
	pte_table_unlock(t);
	if (pg)
		page_put(pg);	/* lost: someone else's page is there */
	return NULL;
}

static void t_race_install_one_winner(void)
{
	const uint64_t addr[1] = { 77 * GB + 5 * PG };
	size_t base = page_nr_live();
	struct race_arg args[NT];
	pthread_t th[NT];
	static struct race r;

	for (int round = 0; round < 200; round++) {
		memset(&r, 0, sizeof(r));
		pgtable_init(&r.pt);
		pthread_barrier_init(&r.go, NULL, NT);
		r.addrs = addr;
		for (int i = 0; i < NT; i++) {
			args[i] = (struct race_arg){ &r, i };
			tu_create(&th[i], install_racer, &args[i]);
		}
		for (int i = 0; i < NT; i++)
			JOIN(th[i], "install racer");
		CHECK_EQ(atomic_load(&r.winners), 1);
		CHECK_EQ(pte_at(&r.pt, addr[0]), (pte_t)atomic_load(&r.winner) | PTE_WRITE);
		CHECK_EQ(pgtable_nr_pages(&r.pt), 1);
		CHECK_EQ(nr_tables(&r.pt), 3);
		CHECK_EQ(page_nr_live(), base + 1);
		pthread_barrier_destroy(&r.go);
		pgtable_destroy(&r.pt);
		CHECK_EQ(page_nr_live(), base);
		if (atomic_load(&tu_test_failures))
			break;
	}
}

/*
 * Two holders write the page and drop their references at once.  If the
 * second thread drops the last, it frees the page and gets it straight back
 * from the slab (which reuses the newest free page) and writes it: nothing
 * but the refcount orders that after the first thread's writes, so TSan sees
 * a race unless the last put acquires what the other put released.
 */
struct put_race {
	pthread_barrier_t go;
	struct page *page;
};

static void *put_first(void *p)
{
	struct put_race *r = p;

	pthread_barrier_wait(&r->go);
	fill_bytes(r->page->data, 0x5a, PG / 2);
	page_put(r->page);
	return NULL;
}

static void *put_and_reuse(void *p)
{
	struct put_race *r = p;
	struct page *q;

	pthread_barrier_wait(&r->go);
	fill_bytes(r->page->data + PG / 2, 0x5a, PG / 2);
	page_put(r->page);
	q = page_alloc(NULL);
	CHECK(q != NULL);
	fill_bytes(q->data, 0xa5, PG);
	page_put(q);
	return NULL;
}

static void t_race_last_put(void)
{
	size_t base = page_nr_live();
	static struct put_race r;
	pthread_t a, b;

	for (int round = 0; round < 300; round++) {
		pthread_barrier_init(&r.go, NULL, 2);
		r.page = page_alloc(NULL);
		page_get(r.page);
		/* The last to reach the barrier runs on at once: let that be the first putter. */
		tu_create(&b, put_and_reuse, &r);
		tu_create(&a, put_first, &r);
		JOIN(a, "first putter");
		JOIN(b, "second putter");
		pthread_barrier_destroy(&r.go);
	}
	CHECK_EQ(page_nr_live(), base);
}

/*
 * A zapper maps, replaces, clears and zaps pages over a range straddling two
 * leaves while readers take page references under the leaf lock and read the
 * data after unlocking, and a copier copies the range (COW) into a second
 * table and zaps that.  Every page is filled with one word naming its
 * address and generation before it is installed and never written after, so
 * a reader sees one word throughout, or ASan/TSan see a page reused under it.
 */
#define ZR_PAGES 48
#define ZR_BUDGET_MS 3000	/* well under the join's TU_WAIT_MS */
#define ZR_START (6 * GB - 24 * PG)	/* two leaves, two 1 GiB directories */

struct zap_race {
	struct pgtable pt, copy;
	atomic_bool stop;
	atomic_long hits, reads;
};

static uint64_t page_word(uint64_t idx, uint64_t gen)
{
	return idx << 40 | gen;
}

static void fill(struct page *p, uint64_t word)
{
	for (size_t i = 0; i < PG / sizeof(word); i++)
		memcpy(p->data + i * sizeof(word), &word, sizeof(word));
}

static void *zapper(void *p)
{
	struct zap_race *z = p;
	uint64_t rnd = 5;
	const int iters = 1500;
	/*
	 * And at most this long: a sanitizer build on a loaded machine may be
	 * 20x slower, and the join's bound must stay a hang detector.
	 */
	const uint64_t deadline = tu_now_ns() + ZR_BUDGET_MS * TU_NS_PER_MS;

	for (uint64_t gen = 1; gen <= (uint64_t)iters && tu_now_ns() < deadline; gen++) {
		for (uint64_t i = 0; i < ZR_PAGES; i++) {
			uint64_t addr = ZR_START + i * PG;
			struct pte_table *t = pgtable_leaf(&z->pt, addr, 1);
			struct page *pg = page_alloc(NULL);
			pte_t old = 0;

			CHECK(t && pg);
			fill(pg, page_word(i, gen));
			pte_table_lock(t);
			if (!atomic_load_explicit(pte_slot(t, addr), memory_order_relaxed)) {
				pte_install_locked(&z->pt, t, addr, (pte_t)pg | PTE_WRITE);
				pg = NULL;
			} else if (tu_rand(&rnd) & 1) {
				old = pte_replace_locked(t, addr, (pte_t)pg);
				pg = NULL;
			} else {
				old = pte_clear_locked(&z->pt, t, addr);
			}
			pte_table_unlock(t);
			if (old)
				page_put(pte_page(old));
			if (pg)
				page_put(pg);
		}
		if (gen % 3 == 0) {
			uint64_t lo = tu_rand(&rnd) % ZR_PAGES, hi = lo + tu_rand(&rnd) % (ZR_PAGES - lo + 1);

			pgtable_zap(&z->pt, ZR_START + lo * PG, ZR_START + hi * PG);
		}
		if (atomic_load(&tu_test_failures))
			break;
	}
	atomic_store(&z->stop, true);
	return NULL;
}

static void *reader(void *p)
{
	struct zap_race *z = p;
	uint64_t rnd = (uint64_t)(uintptr_t)&rnd | 1;
	static _Thread_local uint64_t buf[PG / sizeof(uint64_t)];
	long hits = 0, reads = 0;

	while (!atomic_load_explicit(&z->stop, memory_order_relaxed)) {
		uint64_t i = tu_rand(&rnd) % ZR_PAGES, addr = ZR_START + i * PG;
		struct pgtable *pt = tu_rand(&rnd) % 4 ? &z->pt : &z->copy;
		struct pte_table *t = pgtable_leaf(pt, addr, 0);
		struct page *pg = NULL;
		pte_t pte;

		reads++;
		if (!t)
			continue;
		pte_table_lock(t);
		pte = atomic_load_explicit(pte_slot(t, addr), memory_order_relaxed);
		if (pte) {
			pg = pte_page(pte);
			page_get(pg);
		}
		pte_table_unlock(t);
		if (!pg)
			continue;
		copy_bytes(buf, pg->data, PG);	/* unlocked: our reference keeps the page */
		page_put(pg);
		hits++;
		CHECK_MSG(buf[0] >> 40 == i, "page at index %llu has word %llx",
			  (unsigned long long)i, (unsigned long long)buf[0]);
		for (size_t w = 1; w < PG / sizeof(uint64_t); w += 61)
			CHECK(buf[w] == buf[0]);
	}
	atomic_fetch_add(&z->hits, hits);
	atomic_fetch_add(&z->reads, reads);
	return NULL;
}

static void *copier(void *p)
{
	struct zap_race *z = p;
	int n = 0;

	while (!atomic_load_explicit(&z->stop, memory_order_relaxed)) {
		CHECK_EQ(pgtable_copy(&z->copy, &z->pt, ZR_START, ZR_START + ZR_PAGES * PG, n & 1), 0);
		pgtable_zap(&z->copy, ZR_START + (uint64_t)(n % 7) * PG, ZR_START + ZR_PAGES * PG);
		n++;
	}
	return NULL;
}

static void t_zap_vs_readers(void)
{
	enum { NR = 3 };
	size_t base = page_nr_live(), left;
	static struct zap_race z;
	pthread_t zt, ct, rt[NR];

	memset(&z, 0, sizeof(z));
	pgtable_init(&z.pt);
	pgtable_init(&z.copy);
	for (int i = 0; i < NR; i++)
		tu_create(&rt[i], reader, &z);
	tu_create(&ct, copier, &z);
	tu_create(&zt, zapper, &z);
	JOIN(zt, "zapper");
	JOIN(ct, "copier");
	for (int i = 0; i < NR; i++)
		JOIN(rt[i], "reader");
	CHECK(atomic_load(&z.hits) > 0);
	/* Every table's count matches its PTEs. */
	left = pgtable_nr_pages(&z.copy);
	CHECK_EQ(pgtable_zap(&z.copy, 0, VA_END), left);
	CHECK_EQ(pgtable_nr_pages(&z.copy), 0);
	left = pgtable_nr_pages(&z.pt);

	CHECK_EQ(page_nr_live(), base + left);
	CHECK_EQ(pgtable_zap(&z.pt, 0, VA_END), left);
	CHECK_EQ(pgtable_nr_pages(&z.pt), 0);
	CHECK_EQ(page_nr_live(), base);
	CHECK_EQ(nr_tables(&z.pt), 5);	/* the range straddles 1 GiB: 2 leaves, 2 + 1 directories */
	printf("  zap race: %ld page reads of %ld lookups\n", atomic_load(&z.hits),
	       atomic_load(&z.reads));
	pgtable_destroy(&z.pt);
	pgtable_destroy(&z.copy);
}

static const struct tu_test tests[] = {
	TU_TEST(t_page_alloc_copy_refcount),
	TU_TEST(t_page_many),
	TU_TEST(t_leaf_addresses),
	TU_TEST(t_install_replace_clear),
	TU_TEST(t_copy_shares_pages),
	TU_TEST(t_copy_replaces_and_partial),
	TU_TEST(t_wrprotect),
	TU_TEST(t_zap_wrprotect_model),
	TU_TEST(t_sparse_range_walk_is_cheap),
	TU_TEST(t_destroy_and_accounting),
	TU_TEST(t_race_leaf_alloc),
	TU_TEST(t_race_install_one_winner),
	TU_TEST(t_race_last_put),
	TU_TEST(t_zap_vs_readers),
};

int main(int argc, char **argv)
{
	return tu_run("test_pgtable", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc, argv,
		      NULL);
}
