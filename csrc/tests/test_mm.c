/* SPDX-License-Identifier: MIT */
/*
 * test_mm.c - the emulated address space (mm.h): every mm_* call on its own
 * (placement and merging, splits, protections, brk, madvise, fork's
 * copy-on-write, guest access, get_user_pages, MMU notifiers, maps,
 * exit_mmap, the max_map_count rule, the errno cases), then the races the
 * read-mode mmap_lock allows: faults, accesses and pins against munmap (whose
 * teardown runs under the downgraded lock), mprotect, MAP_FIXED, madvise,
 * fork and exit_mmap on the same pages.
 *
 * Every test also checks the invariants it can see from outside: the VMA
 * tree (vma_tree_check), the page table against the VMAs (no PTE outside a
 * VMA, no writable PTE in a VMA without PROT_WRITE, mm_nr_pages() equal to
 * the PTEs present, one reference per PTE), and page_nr_live() (a
 * pgtable.c test hook) back at its starting value once the mm is freed, so
 * a leaked or doubly freed page fails in every build, not only under ASan.
 *
 * Threads touching one page each use their own 8-byte slot in it: two guest
 * threads racing on the same bytes would be a data race of the guest, which
 * ThreadSanitizer would rightly report, not one of the emulator.
 *
 *   test_mm [--list] [--only NAME]
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lockdep.h"
#include "mm.h"
#include "mmap_lock.h"
#include "pgtable.h"
#include "vma.h"
#include "test_designs.h"
#include "test_util.h"

/* Test hook of pgtable.c: pages allocated and not yet freed (process-wide). */
size_t page_nr_live(void);

#define PG ((uint64_t)MM_PAGE_SIZE)
#define RW (PROT_READ | PROT_WRITE)
#define ANON_PRIV (MAP_ANONYMOUS | MAP_PRIVATE)
#define ANON_SHARED (MAP_ANONYMOUS | MAP_SHARED)
#define BASE 0x100000000ull		/* where the tests map MAP_FIXED */

/* ------------------------------------------------------------ helpers */

static struct mm_struct *new_mm_flags(unsigned int flags)
{
	struct mm_struct *mm = tu_mm_alloc(flags);

	if (!mm) {
		fprintf(stderr, "mm_alloc failed\n");
		exit(2);
	}
	return mm;
}

static struct mm_struct *new_mm(void)
{
	return new_mm_flags(0);
}

static void free_mm(struct mm_struct *mm)
{
	CHECK_EQ(mm_free(mm), 0);
}

/* mmap(MAP_FIXED) of @npages at @addr, which must succeed. */
static void map_at(struct mm_struct *mm, uint64_t addr, uint64_t npages, int prot, int flags)
{
	CHECK_EQ(mm_mmap(mm, addr, npages * PG, prot, flags | MAP_FIXED), (int64_t)addr);
}

static int put64(struct mm_struct *mm, uint64_t addr, uint64_t v)
{
	uint64_t fa = 0;

	return mm_access(mm, addr, &v, sizeof(v), 1, &fa);
}

static int get64(struct mm_struct *mm, uint64_t addr, uint64_t *v)
{
	uint64_t fa = 0;

	return mm_access(mm, addr, v, sizeof(*v), 0, &fa);
}

/* The 8 bytes at @addr, which must be readable. */
static uint64_t peek64(struct mm_struct *mm, uint64_t addr)
{
	uint64_t v = 0xdeadbeefdeadbeefull;

	CHECK_EQ(get64(mm, addr, &v), 0);
	return v;
}

static size_t get_maps(struct mm_struct *mm, struct mm_vma_info *out, size_t cap)
{
	size_t n = 0;

	CHECK_EQ(mm_maps(mm, out, cap, &n), 0);
	return n;
}

/* The PTE at @addr, read under its leaf lock; 0 if none. */
static pte_t pte_of(struct mm_struct *mm, uint64_t addr)
{
	struct pte_table *t = pgtable_leaf(&mm->pgt, addr, 0);
	pte_t pte;

	if (!t)
		return 0;
	pte_table_lock(t);
	pte = atomic_load_explicit(pte_slot(t, addr), memory_order_relaxed);
	pte_table_unlock(t);
	return pte;
}

static struct page *page_of(struct mm_struct *mm, uint64_t addr)
{
	return pte_page(pte_of(mm, addr));
}

/*
 * With no other thread in @mm: the VMA tree's invariants, and the page table
 * over [start, end) against the VMAs.  @refs_per_pte: each private page's
 * expected refcount (1 unless shared with a fork), or 0 not to check.
 */
static void check_consistent(struct mm_struct *mm, uint64_t start, uint64_t end,
			     uint32_t refs_per_pte)
{
	struct mm_vma_info v[256];
	size_t n = get_maps(mm, v, 256), k = 0, present = 0;
	const char *why = NULL;
	int rc;

	CHECK(mmap_read_lock(mm) == 0);
	rc = vma_tree_check(&mm->mm_vmas, &why);
	mmap_read_unlock(mm);
	CHECK_MSG(rc == 0, "VMA tree: %s", why ? why : "?");
	CHECK(n <= 256);
	for (size_t i = 1; i < n && i < 256; i++)
		CHECK_MSG(v[i - 1].end <= v[i].start, "maps out of order at %zu", i);
	for (uint64_t a = start; a < end; a += PG) {
		pte_t pte = pte_of(mm, a);
		struct page *p = pte_page(pte);

		while (k < n && k < 256 && v[k].end <= a)
			k++;
		bool mapped = k < n && k < 256 && v[k].start <= a;

		if (!pte)
			continue;
		present++;
		CHECK_MSG(mapped, "PTE at %#llx outside every VMA", (unsigned long long)a);
		if (!mapped)
			continue;
		CHECK_MSG(!(pte & PTE_WRITE) || (v[k].prot & PROT_WRITE),
			  "writable PTE at %#llx in a VMA of prot %u", (unsigned long long)a,
			  v[k].prot);
		CHECK_EQ(atomic_load(&p->pincount), 0);
		if (refs_per_pte)
			CHECK_MSG(atomic_load(&p->refcount) == refs_per_pte + !!v[k].flags,
				  "page at %#llx: refcount %u, want %u", (unsigned long long)a,
				  atomic_load(&p->refcount), refs_per_pte + !!v[k].flags);
	}
	/* The tests keep every page of an mm in [start, end). */
	CHECK_EQ(mm_nr_pages(mm), present);
}

struct want {
	uint64_t start, end;
	uint32_t prot;
};

static void expect_layout_at(struct mm_struct *mm, const struct want *w, size_t nw,
			     const char *file, int line)
{
	struct mm_vma_info v[64];
	size_t n = get_maps(mm, v, 64);
	bool ok = n == nw;

	for (size_t i = 0; ok && i < n; i++)
		ok = v[i].start == w[i].start && v[i].end == w[i].end && v[i].prot == w[i].prot;
	if (ok)
		return;
	tu_fail(file, line, "VMA layout differs: %zu VMAs, want %zu", n, nw);
	for (size_t i = 0; i < n && i < 64; i++)
		fprintf(stderr, "    have [%#llx, %#llx) prot %u flags %u\n",
			(unsigned long long)v[i].start, (unsigned long long)v[i].end, v[i].prot,
			v[i].flags);
	for (size_t i = 0; i < nw; i++)
		fprintf(stderr, "    want [%#llx, %#llx) prot %u\n", (unsigned long long)w[i].start,
			(unsigned long long)w[i].end, w[i].prot);
}
#define EXPECT_LAYOUT(mm, ...)                                                       \
	expect_layout_at((mm), (const struct want[]){ __VA_ARGS__ },                 \
			 sizeof((const struct want[]){ __VA_ARGS__ }) / sizeof(struct want), \
			 __FILE__, __LINE__)
#define EXPECT_NO_VMAS(mm) CHECK_EQ(mm_map_count(mm), 0)

/* Spin (yielding) until @cond holds or the usual bound passes; whether it held. */
#define SPIN_UNTIL(cond)                                                             \
	__extension__({                                                              \
		uint64_t _dl = tu_now_ns() + (uint64_t)TU_WAIT_MS * TU_NS_PER_MS;     \
		unsigned int _k = 0;                                                 \
		bool _ok;                                                            \
		while (!(_ok = (cond))) {                                            \
			sched_yield();                                               \
			if ((++_k & 63) == 0 && tu_now_ns() > _dl)                   \
				break;                                               \
		}                                                                    \
		_ok;                                                                 \
	})
#define EXPECT_SPIN(cond)                                                            \
	do {                                                                         \
		if (!SPIN_UNTIL(cond))                                               \
			tu_fail(__FILE__, __LINE__, "timed out waiting for %s", #cond); \
	} while (0)

/*
 * Pacing for the races: a thread that has done @done operations waits (yielding)
 * until the driving thread's step count lets it do more, @per_step per step,
 * so that the races interleave with every step of the driver and the total
 * work is bounded whatever the scheduler does (a 2-core box, TSan).  False
 * once @stop is set.
 */
static bool pace(uint64_t done, uint64_t per_step, _Atomic uint64_t *steps, _Atomic int *stop)
{
	while (done >= per_step * (atomic_load_explicit(steps, memory_order_relaxed) + 1)) {
		if (atomic_load_explicit(stop, memory_order_relaxed))
			return false;
		sched_yield();
	}
	return !atomic_load_explicit(stop, memory_order_relaxed);
}

/* ------------------------------------------------------------ mmap */

static void t_mmap_placement_and_merging(void)
{
	struct mm_struct *mm = new_mm();
	int64_t a, b, c, d, e, f, g, h;

	/* Top-down below mmap_base; a touching private range of one protection merges. */
	a = mm_mmap(mm, 0, 4 * PG, RW, ANON_PRIV);
	CHECK_EQ(a, MM_MMAP_BASE - 4 * PG);
	b = mm_mmap(mm, 0, 2 * PG - 100, RW, ANON_PRIV);	/* rounded up to 2 pages */
	CHECK_EQ(b, a - 2 * (int64_t)PG);
	CHECK_EQ(mm_map_count(mm), 1);
	c = mm_mmap(mm, 0, PG, PROT_READ, ANON_PRIV);	/* another protection: no merge */
	CHECK_EQ(c, b - (int64_t)PG);
	d = mm_mmap(mm, 0, PG, RW, ANON_SHARED);	/* shared mappings never merge */
	e = mm_mmap(mm, 0, PG, RW, ANON_SHARED);
	CHECK_EQ(d, c - (int64_t)PG);
	CHECK_EQ(e, d - (int64_t)PG);
	CHECK_EQ(mm_map_count(mm), 4);
	EXPECT_LAYOUT(mm, { (uint64_t)e, (uint64_t)d, RW }, { (uint64_t)d, (uint64_t)c, RW },
		      { (uint64_t)c, (uint64_t)b, PROT_READ }, { (uint64_t)b, MM_MMAP_BASE, RW });

	/*
	 * A free hint is honoured, rounded down to a page; a taken one is not;
	 * a low one is lifted to mmap_min_addr (the kernel's round_hint_to_min).
	 */
	f = mm_mmap(mm, BASE + PG + 123, PG, RW, ANON_PRIV);
	CHECK_EQ(f, (int64_t)(BASE + PG));
	g = mm_mmap(mm, BASE + PG, PG, PROT_READ, ANON_PRIV);
	CHECK_EQ(g, e - (int64_t)PG);
	h = mm_mmap(mm, 4096, PG, PROT_EXEC, ANON_PRIV);
	CHECK_EQ(h, (int64_t)MM_MMAP_MIN_ADDR);

	/* The highest gap that fits: a freed page is reused, a bigger request goes lower. */
	CHECK_EQ(mm_munmap(mm, (uint64_t)c, PG), 0);
	CHECK_EQ(mm_mmap(mm, 0, 2 * PG, PROT_READ, ANON_PRIV), g - 2 * (int64_t)PG);
	CHECK_EQ(mm_mmap(mm, 0, PG, PROT_EXEC, ANON_PRIV), c);

	/* MAP_FIXED_NOREPLACE: EEXIST over anything mapped, else as MAP_FIXED. */
	CHECK_EQ(mm_mmap(mm, BASE, 2 * PG, RW, ANON_PRIV | MAP_FIXED_NOREPLACE), -EEXIST);
	CHECK_EQ(mm_mmap(mm, BASE + PG, PG, RW, ANON_PRIV | MAP_FIXED_NOREPLACE | MAP_FIXED),
		 -EEXIST);
	CHECK_EQ(mm_mmap(mm, BASE, PG, RW, ANON_PRIV | MAP_FIXED_NOREPLACE), (int64_t)BASE);
	check_consistent(mm, BASE, BASE + 4 * PG, 0);
	free_mm(mm);
}

static void t_mmap_fixed_replaces(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live();

	map_at(mm, BASE, 8, RW, ANON_PRIV);
	for (uint64_t i = 0; i < 8; i++)
		CHECK_EQ(put64(mm, BASE + i * PG, 100 + i), 0);
	CHECK_EQ(mm_nr_pages(mm), 8);
	CHECK_EQ(page_nr_live(), live0 + 8);

	/* Another protection over the middle: three VMAs, the middle pages new and zero. */
	map_at(mm, BASE + 3 * PG, 2, PROT_READ, ANON_PRIV);
	EXPECT_LAYOUT(mm, { BASE, BASE + 3 * PG, RW }, { BASE + 3 * PG, BASE + 5 * PG, PROT_READ },
		      { BASE + 5 * PG, BASE + 8 * PG, RW });
	CHECK_EQ(mm_nr_pages(mm), 6);
	CHECK_EQ(page_nr_live(), live0 + 6);
	CHECK_EQ(peek64(mm, BASE + 3 * PG), 0);
	CHECK_EQ(peek64(mm, BASE + 2 * PG), 102);
	CHECK_EQ(peek64(mm, BASE + 5 * PG), 105);

	/* The same protection again: replaced, and merged back into one. */
	map_at(mm, BASE + 3 * PG, 2, RW, ANON_PRIV);
	EXPECT_LAYOUT(mm, { BASE, BASE + 8 * PG, RW });

	/* Over several VMAs and a hole at once. */
	map_at(mm, BASE + 10 * PG, 2, PROT_READ, ANON_PRIV);
	map_at(mm, BASE + 6 * PG, 5, PROT_NONE, ANON_PRIV);
	EXPECT_LAYOUT(mm, { BASE, BASE + 6 * PG, RW }, { BASE + 6 * PG, BASE + 11 * PG, PROT_NONE },
		      { BASE + 11 * PG, BASE + 12 * PG, PROT_READ });
	CHECK_EQ(peek64(mm, BASE + 5 * PG), 105);

	/* A shared mapping over private pages. */
	map_at(mm, BASE + PG, 2, RW, ANON_SHARED);
	CHECK_EQ(mm_map_count(mm), 5);
	CHECK_EQ(peek64(mm, BASE + PG), 0);
	CHECK_EQ(peek64(mm, BASE), 100);
	check_consistent(mm, BASE, BASE + 16 * PG, 1);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
}

static void t_mmap_errors(void)
{
	struct mm_struct *mm = new_mm();
	struct mm_vma_info v[4];
	uint64_t low = MM_MMAP_MIN_ADDR;

	CHECK_EQ(mm_mmap(mm, 0, PG, RW, MAP_PRIVATE), -EBADF);		/* a file mapping */
	CHECK_EQ(mm_mmap(mm, 0, 0, RW, ANON_PRIV), -EINVAL);
	CHECK_EQ(mm_mmap(mm, 0, UINT64_MAX, RW, ANON_PRIV), -ENOMEM);	/* rounds to 0 */
	CHECK_EQ(mm_mmap(mm, 0, MM_TASK_SIZE + PG, RW, ANON_PRIV), -ENOMEM);
	CHECK_EQ(mm_mmap(mm, BASE + 1, PG, RW, ANON_PRIV | MAP_FIXED), -EINVAL);
	CHECK_EQ(mm_mmap(mm, MM_TASK_SIZE - PG, 2 * PG, RW, ANON_PRIV | MAP_FIXED), -ENOMEM);
	CHECK_EQ(mm_mmap(mm, UINT64_MAX & ~(PG - 1), 2 * PG, RW, ANON_PRIV | MAP_FIXED), -ENOMEM);
	CHECK_EQ(mm_mmap(mm, 0, PG, RW, MAP_ANONYMOUS), -EINVAL);			/* no type */
	CHECK_EQ(mm_mmap(mm, 0, PG, RW, MAP_ANONYMOUS | MAP_SHARED | MAP_PRIVATE), -EINVAL);
	CHECK_EQ(mm_mmap(mm, low - PG, PG, RW, ANON_PRIV | MAP_FIXED), -EPERM);
	CHECK_EQ(mm_mmap(mm, 0, PG, RW, ANON_PRIV | MAP_FIXED), -EPERM);
	EXPECT_NO_VMAS(mm);
	/* Unknown protection bits are ignored by mmap (not by mprotect). */
	CHECK_EQ(mm_mmap(mm, low, PG, 0xf0 | RW, ANON_PRIV | MAP_FIXED), (int64_t)low);
	CHECK_EQ(get_maps(mm, v, 4), 1);
	CHECK_EQ(v[0].prot, RW);
	CHECK_EQ(mm_mmap(mm, MM_TASK_SIZE - PG, PG, RW, ANON_PRIV | MAP_FIXED),
		 (int64_t)(MM_TASK_SIZE - PG));

	/* Below mmap_base full: the search goes on above it, then gives up. */
	map_at(mm, low + PG, (MM_MMAP_BASE - low - PG) / PG, PROT_NONE, ANON_PRIV);
	CHECK_EQ(mm_mmap(mm, 0, PG, RW, ANON_PRIV), (int64_t)(MM_TASK_SIZE - 2 * PG));
	CHECK_EQ(mm_mmap(mm, 0, MM_TASK_SIZE - MM_MMAP_BASE, RW, ANON_PRIV), -ENOMEM);
	EXPECT_LAYOUT(mm, { low, low + PG, RW }, { low + PG, MM_MMAP_BASE, PROT_NONE },
		      { MM_TASK_SIZE - 2 * PG, MM_TASK_SIZE, RW });
	free_mm(mm);
}

/* ------------------------------------------------------------ munmap */

static void t_munmap_splits(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live();
	struct mm_vma_info v[8];
	uint64_t fa = 0, buf[2];

	map_at(mm, BASE, 8, RW, ANON_PRIV);
	for (uint64_t i = 0; i < 8; i++)
		CHECK_EQ(put64(mm, BASE + i * PG, 100 + i), 0);

	CHECK_EQ(mm_munmap(mm, BASE + 2 * PG, 2 * PG), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + 2 * PG, RW }, { BASE + 4 * PG, BASE + 8 * PG, RW });
	CHECK_EQ(mm_nr_pages(mm), 6);
	CHECK_EQ(page_nr_live(), live0 + 6);
	CHECK_EQ(mm_fault(mm, BASE + 2 * PG, 0), SEGV_MAPERR);
	CHECK_EQ(mm_access(mm, BASE + 2 * PG + 8, buf, 8, 0, &fa), SEGV_MAPERR);
	CHECK_EQ(fa, BASE + 2 * PG + 8);
	CHECK_EQ(peek64(mm, BASE + PG), 101);
	CHECK_EQ(peek64(mm, BASE + 4 * PG), 104);

	/* Across a VMA end, a hole and into the next VMA; a partial page counts whole. */
	CHECK_EQ(mm_munmap(mm, BASE + PG, 4 * PG - 1), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + PG, RW }, { BASE + 5 * PG, BASE + 8 * PG, RW });
	CHECK_EQ(mm_nr_pages(mm), 4);
	CHECK_EQ(mm_munmap(mm, BASE + 16 * PG, 4 * PG), 0);	/* nothing there: fine */
	CHECK_EQ(mm_munmap(mm, BASE + 1, PG), -EINVAL);
	CHECK_EQ(mm_munmap(mm, BASE, 0), -EINVAL);
	CHECK_EQ(mm_munmap(mm, BASE, UINT64_MAX), -EINVAL);
	CHECK_EQ(mm_munmap(mm, MM_TASK_SIZE - PG, 2 * PG), -EINVAL);
	EXPECT_LAYOUT(mm, { BASE, BASE + PG, RW }, { BASE + 5 * PG, BASE + 8 * PG, RW });

	/* A shared mapping split keeps each piece's offset into the shared pages. */
	map_at(mm, BASE + 32 * PG, 4, RW, ANON_SHARED);
	for (uint64_t i = 0; i < 4; i++)
		CHECK_EQ(put64(mm, BASE + (32 + i) * PG, 200 + i), 0);
	CHECK_EQ(mm_munmap(mm, BASE + 33 * PG, PG), 0);
	CHECK_EQ(get_maps(mm, v, 8), 4);
	CHECK_EQ(v[2].start, BASE + 32 * PG);
	CHECK_EQ(v[2].pgoff, 0);
	CHECK_EQ(v[2].flags, VM_SHARED);
	CHECK_EQ(v[3].start, BASE + 34 * PG);
	CHECK_EQ(v[3].pgoff, 2);
	CHECK_EQ(peek64(mm, BASE + 34 * PG), 202);
	CHECK_EQ(peek64(mm, BASE + 35 * PG), 203);
	check_consistent(mm, BASE, BASE + 64 * PG, 1);

	CHECK_EQ(mm_munmap(mm, BASE, 64 * PG), 0);
	EXPECT_NO_VMAS(mm);
	CHECK_EQ(mm_nr_pages(mm), 0);
	CHECK_EQ(page_nr_live(), live0);	/* the shared object went with its last VMA */
	free_mm(mm);
}

/* ------------------------------------------------------------ mprotect */

static void t_mprotect(void)
{
	struct mm_struct *mm = new_mm();
	struct page *p;

	map_at(mm, BASE, 8, RW, ANON_PRIV);
	for (uint64_t i = 0; i < 8; i++)
		CHECK_EQ(put64(mm, BASE + i * PG, 100 + i), 0);
	CHECK(pte_of(mm, BASE + 2 * PG) & PTE_WRITE);
	p = page_of(mm, BASE + 2 * PG);

	CHECK_EQ(mm_mprotect(mm, BASE + 2 * PG, 2 * PG, PROT_READ), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + 2 * PG, RW }, { BASE + 2 * PG, BASE + 4 * PG, PROT_READ },
		      { BASE + 4 * PG, BASE + 8 * PG, RW });
	CHECK(!(pte_of(mm, BASE + 2 * PG) & PTE_WRITE));		/* write-protected */
	CHECK(pte_of(mm, BASE + 4 * PG) & PTE_WRITE);
	CHECK_EQ(put64(mm, BASE + 2 * PG, 1), SEGV_ACCERR);
	CHECK_EQ(mm_fault(mm, BASE + 3 * PG, 1), SEGV_ACCERR);
	CHECK_EQ(mm_fault(mm, BASE + 3 * PG, 0), 0);
	CHECK_EQ(peek64(mm, BASE + 2 * PG), 102);

	/* Back to read-write: merged, and the first write reuses the sole page. */
	CHECK_EQ(mm_mprotect(mm, BASE + 2 * PG, 2 * PG, RW), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + 8 * PG, RW });
	CHECK_EQ(mm_fault(mm, BASE + 2 * PG, 1), 0);
	CHECK(pte_of(mm, BASE + 2 * PG) & PTE_WRITE);
	CHECK(page_of(mm, BASE + 2 * PG) == p);
	CHECK_EQ(peek64(mm, BASE + 2 * PG), 102);

	/* PROT_NONE forbids reads; PROT_EXEC alone permits them (as x86). */
	CHECK_EQ(mm_mprotect(mm, BASE, 8 * PG, PROT_NONE), 0);
	CHECK_EQ(mm_fault(mm, BASE, 0), SEGV_ACCERR);
	CHECK_EQ(mm_fault(mm, BASE + 7 * PG, 1), SEGV_ACCERR);
	CHECK_EQ(mm_mprotect(mm, BASE, PG, PROT_EXEC), 0);
	CHECK_EQ(peek64(mm, BASE), 100);
	CHECK_EQ(mm_mprotect(mm, BASE, 8 * PG, RW), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + 8 * PG, RW });
	CHECK_EQ(peek64(mm, BASE + 7 * PG), 107);

	/* Errors; a hole at the start changes nothing. */
	CHECK_EQ(mm_mprotect(mm, BASE + 1, PG, PROT_READ), -EINVAL);
	CHECK_EQ(mm_mprotect(mm, BASE, 0, 0x100), 0);			/* length 0 first */
	CHECK_EQ(mm_mprotect(mm, BASE, PG, 0x100), -EINVAL);
	CHECK_EQ(mm_mprotect(mm, BASE, UINT64_MAX, PROT_READ), -ENOMEM);
	CHECK_EQ(mm_mprotect(mm, MM_TASK_SIZE - PG, 2 * PG, PROT_READ), -ENOMEM);
	CHECK_EQ(mm_mprotect(mm, BASE - PG, 2 * PG, PROT_READ), -ENOMEM);
	EXPECT_LAYOUT(mm, { BASE, BASE + 8 * PG, RW });
	/* As Linux, a hole later on: the part before it changes, then ENOMEM. */
	CHECK_EQ(mm_mprotect(mm, BASE + 6 * PG, 4 * PG, PROT_READ), -ENOMEM);
	EXPECT_LAYOUT(mm, { BASE, BASE + 6 * PG, RW }, { BASE + 6 * PG, BASE + 8 * PG, PROT_READ });
	CHECK_EQ(mm_mprotect(mm, BASE + 6 * PG, 2 * PG, RW), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + 8 * PG, RW });

	/* Over several VMAs: one result, merged with the neighbours it matches. */
	map_at(mm, BASE + 8 * PG, 2, PROT_READ, ANON_PRIV);
	map_at(mm, BASE + 10 * PG, 2, PROT_EXEC, ANON_PRIV);
	CHECK_EQ(mm_mprotect(mm, BASE + 4 * PG, 8 * PG, PROT_READ), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + 4 * PG, RW }, { BASE + 4 * PG, BASE + 12 * PG, PROT_READ });

	/* A shared page faulted read-only is made writable in place, never copied. */
	map_at(mm, BASE + 16 * PG, 1, PROT_READ, ANON_SHARED);
	CHECK_EQ(mm_fault(mm, BASE + 16 * PG, 0), 0);
	CHECK(!(pte_of(mm, BASE + 16 * PG) & PTE_WRITE));
	p = page_of(mm, BASE + 16 * PG);
	CHECK_EQ(mm_mprotect(mm, BASE + 16 * PG, PG, RW), 0);
	CHECK_EQ(put64(mm, BASE + 16 * PG, 116), 0);
	CHECK(page_of(mm, BASE + 16 * PG) == p);
	CHECK_EQ(atomic_load(&p->refcount), 2);		/* the PTE and the shared object */
	check_consistent(mm, BASE, BASE + 32 * PG, 1);
	free_mm(mm);
}

/* ------------------------------------------------------------ brk */

static void t_brk(void)
{
	struct mm_struct *mm = new_mm();
	const uint64_t s = MM_START_BRK;
	struct mm_vma_info v[4];

	CHECK_EQ(mm_get_brk(mm), s);
	CHECK_EQ(mm_brk(mm, 0), s);			/* the query form */
	CHECK_EQ(mm_brk(mm, s + 100), s + 100);
	CHECK_EQ(get_maps(mm, v, 4), 1);
	CHECK_EQ(v[0].start, s);
	CHECK_EQ(v[0].end, s + PG);
	CHECK_EQ(v[0].prot, RW);
	CHECK_EQ(v[0].heap, 1);
	CHECK_EQ(put64(mm, s + 64, 7), 0);
	CHECK_EQ(mm_brk(mm, s + 50), s + 50);		/* within the page: no change */
	CHECK_EQ(mm_brk(mm, s + 3 * PG + 5), s + 3 * PG + 5);
	EXPECT_LAYOUT(mm, { s, s + 4 * PG, RW });
	CHECK_EQ(mm_get_brk(mm), s + 3 * PG + 5);
	for (uint64_t i = 0; i < 4; i++)
		CHECK_EQ(put64(mm, s + i * PG + 8, i), 0);
	CHECK_EQ(mm_nr_pages(mm), 4);

	/* Shrinking frees the pages above the new break. */
	CHECK_EQ(mm_brk(mm, s + PG), s + PG);
	EXPECT_LAYOUT(mm, { s, s + PG, RW });
	CHECK_EQ(mm_nr_pages(mm), 1);
	CHECK_EQ(peek64(mm, s + 64), 7);
	CHECK_EQ(mm_fault(mm, s + PG, 0), SEGV_MAPERR);
	CHECK_EQ(mm_brk(mm, s - PG), s + PG);		/* below the start: refused */
	CHECK_EQ(mm_brk(mm, MM_TASK_SIZE + PG), s + PG);

	/* Growth stops a guard page short of the next mapping. */
	map_at(mm, s + 4 * PG, 1, PROT_READ, ANON_PRIV);
	CHECK_EQ(mm_brk(mm, s + 4 * PG), s + PG);
	CHECK_EQ(mm_brk(mm, s + 3 * PG + 1), s + PG);
	CHECK_EQ(mm_brk(mm, s + 3 * PG), s + 3 * PG);
	EXPECT_LAYOUT(mm, { s, s + 3 * PG, RW }, { s + 4 * PG, s + 5 * PG, PROT_READ });
	CHECK_EQ(get_maps(mm, v, 4), 2);
	CHECK_EQ(v[0].heap, 1);
	CHECK_EQ(v[1].heap, 0);

	/* A read-only heap end: growth adds a new VMA rather than widening it. */
	CHECK_EQ(mm_munmap(mm, s + 4 * PG, PG), 0);
	CHECK_EQ(mm_mprotect(mm, s + 2 * PG, PG, PROT_READ), 0);
	CHECK_EQ(mm_brk(mm, s + 4 * PG), s + 4 * PG);
	EXPECT_LAYOUT(mm, { s, s + 2 * PG, RW }, { s + 2 * PG, s + 3 * PG, PROT_READ },
		      { s + 3 * PG, s + 4 * PG, RW });

	/* Back to the start: no heap left. */
	CHECK_EQ(mm_brk(mm, s), s);
	EXPECT_NO_VMAS(mm);
	CHECK_EQ(mm_nr_pages(mm), 0);
	free_mm(mm);
}

/* ------------------------------------------------------------ madvise */

static void t_madvise(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live();

	map_at(mm, BASE, 4, RW, ANON_PRIV);
	for (uint64_t i = 0; i < 4; i++)
		CHECK_EQ(put64(mm, BASE + i * PG, 100 + i), 0);
	CHECK_EQ(mm_madvise(mm, BASE + PG, 2 * PG, MADV_DONTNEED), 0);
	CHECK_EQ(mm_nr_pages(mm), 2);
	CHECK_EQ(page_nr_live(), live0 + 2);
	CHECK_EQ(peek64(mm, BASE + PG), 0);		/* zero-filled on the next touch */
	CHECK_EQ(peek64(mm, BASE + 2 * PG), 0);
	CHECK_EQ(peek64(mm, BASE), 100);
	CHECK_EQ(peek64(mm, BASE + 3 * PG), 103);
	EXPECT_LAYOUT(mm, { BASE, BASE + 4 * PG, RW });	/* the VMA stays */

	/* The hints: checked, no effect. */
	for (int adv = MADV_NORMAL; adv <= MADV_WILLNEED; adv++) {
		CHECK_EQ(mm_madvise(mm, BASE, 4 * PG, adv), 0);
		CHECK_EQ(mm_madvise(mm, BASE, 5 * PG, adv), -ENOMEM);
	}
	CHECK_EQ(peek64(mm, BASE + 3 * PG), 103);

	/* A hole: the mapped parts are done, ENOMEM reported. */
	map_at(mm, BASE + 6 * PG, 1, RW, ANON_PRIV);
	CHECK_EQ(put64(mm, BASE + 6 * PG, 106), 0);
	CHECK_EQ(mm_madvise(mm, BASE + 3 * PG, 4 * PG, MADV_DONTNEED), -ENOMEM);
	CHECK_EQ(peek64(mm, BASE + 3 * PG), 0);
	CHECK_EQ(peek64(mm, BASE + 6 * PG), 0);
	CHECK_EQ(mm_madvise(mm, BASE + 8 * PG, PG, MADV_DONTNEED), -ENOMEM);

	/* Errors. */
	CHECK_EQ(mm_madvise(mm, BASE, PG, 5), -EINVAL);
	CHECK_EQ(mm_madvise(mm, BASE, PG, -1), -EINVAL);
	CHECK_EQ(mm_madvise(mm, BASE + 1, PG, MADV_DONTNEED), -EINVAL);
	CHECK_EQ(mm_madvise(mm, BASE, 0, MADV_DONTNEED), 0);
	CHECK_EQ(mm_madvise(mm, BASE, UINT64_MAX, MADV_DONTNEED), -EINVAL);
	CHECK_EQ(mm_madvise(mm, MM_TASK_SIZE - PG, 2 * PG, MADV_DONTNEED), -ENOMEM);	/* unmapped */

	/* DONTNEED on a shared mapping drops the PTEs, not the shared pages. */
	map_at(mm, BASE + 16 * PG, 2, RW, ANON_SHARED);
	CHECK_EQ(put64(mm, BASE + 16 * PG, 116), 0);
	CHECK_EQ(put64(mm, BASE + 17 * PG, 117), 0);
	CHECK_EQ(mm_madvise(mm, BASE + 16 * PG, 2 * PG, MADV_DONTNEED), 0);
	CHECK_EQ(pte_of(mm, BASE + 16 * PG), 0);
	CHECK_EQ(peek64(mm, BASE + 16 * PG), 116);
	CHECK_EQ(peek64(mm, BASE + 17 * PG), 117);
	check_consistent(mm, BASE, BASE + 32 * PG, 1);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
}

/* A fork of @mm that must succeed. */
static struct mm_struct *fork_ok(struct mm_struct *mm)
{
	int err = 1;
	struct mm_struct *child = mm_fork(mm, &err);

	CHECK_EQ(err, 0);
	if (!child) {
		fprintf(stderr, "mm_fork failed: %d\n", err);
		exit(1);
	}
	return child;
}

/*
 * MADV_DONTFORK / MADV_DOFORK: a flag change splits at the range's edges
 * (only a VMA it changes), fork leaves the range unmapped in the child and
 * the parent's pages there untouched; DOFORK over the whole range merges
 * the VMAs back.  A hole: the mapped parts change, ENOMEM.
 */
static void t_madvise_dontfork(void)
{
	struct mm_struct *mm = new_mm(), *child;
	size_t live0 = page_nr_live();
	uint64_t v;

	map_at(mm, BASE, 8, RW, ANON_PRIV);
	for (uint64_t i = 0; i < 8; i++)
		CHECK_EQ(put64(mm, BASE + i * PG, 100 + i), 0);
	CHECK_EQ(mm_madvise(mm, BASE + 2 * PG, 3 * PG, MADV_DONTFORK), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + 2 * PG, RW }, { BASE + 2 * PG, BASE + 5 * PG, RW },
		      { BASE + 5 * PG, BASE + 8 * PG, RW });
	/* Again, or inside: nothing to change, nothing split. */
	CHECK_EQ(mm_madvise(mm, BASE + 3 * PG, PG, MADV_DONTFORK), 0);
	CHECK_EQ(mm_map_count(mm), 3);

	child = fork_ok(mm);
	EXPECT_LAYOUT(child, { BASE, BASE + 2 * PG, RW }, { BASE + 5 * PG, BASE + 8 * PG, RW });
	CHECK_EQ(get64(child, BASE + 2 * PG, &v), SEGV_MAPERR);
	CHECK_EQ(get64(child, BASE + 4 * PG, &v), SEGV_MAPERR);
	CHECK_EQ(peek64(child, BASE + PG), 101);
	CHECK_EQ(peek64(child, BASE + 5 * PG), 105);
	CHECK_EQ(mm_nr_pages(child), 5);
	/* The parent's pages there were not shared: still writable, same data. */
	CHECK(pte_of(mm, BASE + 2 * PG) & PTE_WRITE);
	CHECK(!(pte_of(mm, BASE) & PTE_WRITE));		/* copied ones are copy-on-write */
	CHECK_EQ(peek64(mm, BASE + 3 * PG), 103);
	/* The child can map there afresh. */
	map_at(child, BASE + 2 * PG, 1, RW, ANON_PRIV);
	CHECK_EQ(peek64(child, BASE + 2 * PG), 0);
	free_mm(child);

	/* DOFORK over the whole range: one VMA again, copied by fork. */
	CHECK_EQ(mm_madvise(mm, BASE, 8 * PG, MADV_DOFORK), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + 8 * PG, RW });
	child = fork_ok(mm);
	EXPECT_LAYOUT(child, { BASE, BASE + 8 * PG, RW });
	CHECK_EQ(peek64(child, BASE + 3 * PG), 103);
	free_mm(child);

	/* A hole: the mapped part changes, then ENOMEM; all unmapped: ENOMEM. */
	CHECK_EQ(mm_madvise(mm, BASE + 6 * PG, 4 * PG, MADV_DONTFORK), -ENOMEM);
	EXPECT_LAYOUT(mm, { BASE, BASE + 6 * PG, RW }, { BASE + 6 * PG, BASE + 8 * PG, RW });
	CHECK_EQ(mm_madvise(mm, BASE + 8 * PG, 2 * PG, MADV_DONTFORK), -ENOMEM);
	CHECK_EQ(mm_madvise(mm, BASE + 8 * PG, 2 * PG, MADV_DOFORK), -ENOMEM);
	/* A shared mapping may be left out too. */
	map_at(mm, BASE + 16 * PG, 2, RW, ANON_SHARED);
	CHECK_EQ(put64(mm, BASE + 16 * PG, 116), 0);
	CHECK_EQ(mm_madvise(mm, BASE + 17 * PG, PG, MADV_DONTFORK), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + 6 * PG, RW }, { BASE + 6 * PG, BASE + 8 * PG, RW },
		      { BASE + 16 * PG, BASE + 17 * PG, RW }, { BASE + 17 * PG, BASE + 18 * PG, RW });
	child = fork_ok(mm);
	EXPECT_LAYOUT(child, { BASE, BASE + 6 * PG, RW }, { BASE + 16 * PG, BASE + 17 * PG, RW });
	CHECK_EQ(peek64(child, BASE + 16 * PG), 116);
	free_mm(child);

	/* A split past max_map_count: EAGAIN (as madvise since Linux 5.18), nothing done. */
	CHECK_EQ(mm_set_max_map_count(mm, 4), 0);
	CHECK_EQ(mm_madvise(mm, BASE + PG, PG, MADV_DONTFORK), -EAGAIN);
	CHECK_EQ(mm_map_count(mm), 4);
	CHECK_EQ(mm_madvise(mm, BASE, 6 * PG, MADV_DONTFORK), 0);	/* merges: 3 VMAs */
	EXPECT_LAYOUT(mm, { BASE, BASE + 8 * PG, RW }, { BASE + 16 * PG, BASE + 17 * PG, RW },
		      { BASE + 17 * PG, BASE + 18 * PG, RW });
	/* A new mapping next to a DONTFORK one does not merge with it. */
	map_at(mm, BASE + 8 * PG, 1, RW, ANON_PRIV);
	CHECK_EQ(mm_map_count(mm), 4);
	/* Nor does the heap grow into one: brk makes a VMA of its own. */
	CHECK_EQ(mm_set_max_map_count(mm, 100), 0);
	CHECK_EQ(mm_brk(mm, MM_START_BRK + PG), MM_START_BRK + PG);
	CHECK_EQ(mm_madvise(mm, MM_START_BRK, PG, MADV_DONTFORK), 0);
	CHECK_EQ(mm_brk(mm, MM_START_BRK + 2 * PG), MM_START_BRK + 2 * PG);
	CHECK_EQ(mm_map_count(mm), 6);
	check_consistent(mm, BASE, BASE + 32 * PG, 1);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
}

/*
 * MADV_WIPEONFORK / MADV_KEEPONFORK: the child gets the VMA, empty; the
 * parent keeps its pages, writable (not shared copy-on-write); EINVAL at a
 * shared VMA, the private ones before it changed; the flag is inherited.
 */
static void t_madvise_wipeonfork(void)
{
	struct mm_struct *mm = new_mm(), *child, *grandchild;
	size_t live0 = page_nr_live();

	map_at(mm, BASE, 4, RW, ANON_PRIV);
	map_at(mm, BASE + 8 * PG, 2, RW, ANON_SHARED);
	for (uint64_t i = 0; i < 4; i++)
		CHECK_EQ(put64(mm, BASE + i * PG, 100 + i), 0);
	CHECK_EQ(mm_madvise(mm, BASE + PG, 2 * PG, MADV_WIPEONFORK), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + PG, RW }, { BASE + PG, BASE + 3 * PG, RW },
		      { BASE + 3 * PG, BASE + 4 * PG, RW }, { BASE + 8 * PG, BASE + 10 * PG, RW });
	/* Shared: EINVAL; the private VMA before it (past a hole) has changed. */
	CHECK_EQ(mm_madvise(mm, BASE + 8 * PG, PG, MADV_WIPEONFORK), -EINVAL);
	CHECK_EQ(mm_madvise(mm, BASE + 3 * PG, 7 * PG, MADV_WIPEONFORK), -EINVAL);
	EXPECT_LAYOUT(mm, { BASE, BASE + PG, RW }, { BASE + PG, BASE + 4 * PG, RW },
		      { BASE + 8 * PG, BASE + 10 * PG, RW });
	CHECK_EQ(mm_madvise(mm, BASE + 8 * PG, PG, MADV_KEEPONFORK), 0);	/* nothing to undo */
	CHECK_EQ(mm_madvise(mm, BASE + 4 * PG, PG, MADV_WIPEONFORK), -ENOMEM);

	child = fork_ok(mm);
	EXPECT_LAYOUT(child, { BASE, BASE + PG, RW }, { BASE + PG, BASE + 4 * PG, RW },
		      { BASE + 8 * PG, BASE + 10 * PG, RW });
	CHECK_EQ(mm_nr_pages(child), 1);			/* page 0 alone, shared */
	CHECK_EQ(page_nr_live(), live0 + 4);			/* nothing copied */
	CHECK_EQ(peek64(child, BASE), 100);
	for (uint64_t i = 1; i < 4; i++)
		CHECK_EQ(peek64(child, BASE + i * PG), 0);
	/* The parent's wiped-for-the-child pages stay writable and keep their data. */
	for (uint64_t i = 1; i < 4; i++) {
		CHECK(pte_of(mm, BASE + i * PG) & PTE_WRITE);
		CHECK_EQ(peek64(mm, BASE + i * PG), 100 + i);
	}
	CHECK(!(pte_of(mm, BASE) & PTE_WRITE));
	CHECK_EQ(put64(child, BASE + PG, 7), 0);
	CHECK_EQ(peek64(mm, BASE + PG), 101);
	/* The child's VMA keeps the flag: its own fork wipes it again. */
	grandchild = fork_ok(child);
	CHECK_EQ(peek64(grandchild, BASE + PG), 0);
	CHECK_EQ(peek64(child, BASE + PG), 7);
	free_mm(grandchild);
	free_mm(child);

	/* KEEPONFORK over the whole VMA: merged back, copied again. */
	CHECK_EQ(mm_madvise(mm, BASE, 4 * PG, MADV_KEEPONFORK), 0);
	EXPECT_LAYOUT(mm, { BASE, BASE + 4 * PG, RW }, { BASE + 8 * PG, BASE + 10 * PG, RW });
	child = fork_ok(mm);
	CHECK_EQ(peek64(child, BASE + 2 * PG), 102);
	free_mm(child);
	check_consistent(mm, BASE, BASE + 16 * PG, 1);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
}

/*
 * MADV_POPULATE_READ / WRITE (Linux 5.14): the range faulted in under the
 * read lock; holes ENOMEM (the mapped parts done), a VMA that does not
 * allow the access EINVAL (5.14's faultin_vma_page_range: check_vma_flags
 * wants PROT_READ for a read, PROT_WRITE for a write); a write populate of
 * a page shared copy-on-write breaks the sharing.
 */
static void t_madvise_populate(void)
{
	struct mm_struct *mm = new_mm(), *child;
	size_t live0 = page_nr_live();

	map_at(mm, BASE, 4, RW, ANON_PRIV);
	CHECK_EQ(mm_madvise(mm, BASE, 2 * PG, MADV_POPULATE_READ), 0);
	CHECK_EQ(mm_nr_pages(mm), 2);
	CHECK(pte_of(mm, BASE + PG) != 0);
	CHECK_EQ(pte_of(mm, BASE + 2 * PG), 0);
	CHECK_EQ(mm_madvise(mm, BASE, 4 * PG, MADV_POPULATE_WRITE), 0);
	CHECK_EQ(mm_nr_pages(mm), 4);
	CHECK(pte_of(mm, BASE + 3 * PG) & PTE_WRITE);
	EXPECT_LAYOUT(mm, { BASE, BASE + 4 * PG, RW });		/* no split, no flag */

	/* Protections. */
	map_at(mm, BASE + 8 * PG, 1, PROT_READ, ANON_PRIV);
	map_at(mm, BASE + 10 * PG, 1, PROT_NONE, ANON_PRIV);
	map_at(mm, BASE + 12 * PG, 1, PROT_WRITE, ANON_PRIV);
	CHECK_EQ(mm_madvise(mm, BASE + 8 * PG, PG, MADV_POPULATE_WRITE), -EINVAL);
	CHECK_EQ(pte_of(mm, BASE + 8 * PG), 0);
	CHECK_EQ(mm_madvise(mm, BASE + 8 * PG, PG, MADV_POPULATE_READ), 0);
	CHECK(pte_of(mm, BASE + 8 * PG) != 0);
	CHECK(!(pte_of(mm, BASE + 8 * PG) & PTE_WRITE));
	CHECK_EQ(mm_madvise(mm, BASE + 10 * PG, PG, MADV_POPULATE_READ), -EINVAL);
	CHECK_EQ(mm_madvise(mm, BASE + 10 * PG, PG, MADV_POPULATE_WRITE), -EINVAL);
	CHECK_EQ(pte_of(mm, BASE + 10 * PG), 0);
	CHECK_EQ(mm_madvise(mm, BASE + 12 * PG, PG, MADV_POPULATE_READ), -EINVAL);
	CHECK_EQ(mm_madvise(mm, BASE + 12 * PG, PG, MADV_POPULATE_WRITE), 0);
	CHECK(pte_of(mm, BASE + 12 * PG) & PTE_WRITE);

	/* Holes: the mapped parts done, ENOMEM; a refused VMA after a hole: EINVAL. */
	map_at(mm, BASE + 16 * PG, 2, RW, ANON_PRIV);
	map_at(mm, BASE + 19 * PG, 2, RW, ANON_PRIV);
	map_at(mm, BASE + 22 * PG, 1, PROT_NONE, ANON_PRIV);
	map_at(mm, BASE + 23 * PG, 1, RW, ANON_PRIV);
	CHECK_EQ(mm_madvise(mm, BASE + 16 * PG, 5 * PG, MADV_POPULATE_READ), -ENOMEM);
	CHECK(pte_of(mm, BASE + 16 * PG) && pte_of(mm, BASE + 20 * PG));
	CHECK_EQ(mm_madvise(mm, BASE + 30 * PG, 2 * PG, MADV_POPULATE_READ), -ENOMEM);
	CHECK_EQ(mm_madvise(mm, BASE + 21 * PG, 3 * PG, MADV_POPULATE_WRITE), -EINVAL);
	CHECK_EQ(pte_of(mm, BASE + 23 * PG), 0);	/* past the refused VMA: not reached */

	/* After fork: a write populate breaks copy-on-write, a read one does not. */
	CHECK_EQ(put64(mm, BASE, 42), 0);
	CHECK_EQ(put64(mm, BASE + PG, 43), 0);
	child = fork_ok(mm);
	CHECK(!(pte_of(mm, BASE) & PTE_WRITE));
	CHECK_EQ(mm_madvise(mm, BASE, PG, MADV_POPULATE_READ), 0);
	CHECK(!(pte_of(mm, BASE) & PTE_WRITE));
	CHECK(page_of(mm, BASE) == page_of(child, BASE));
	CHECK_EQ(mm_madvise(mm, BASE, PG, MADV_POPULATE_WRITE), 0);
	CHECK(pte_of(mm, BASE) & PTE_WRITE);
	CHECK(page_of(mm, BASE) != page_of(child, BASE));
	CHECK_EQ(peek64(mm, BASE), 42);
	CHECK_EQ(mm_madvise(child, BASE + PG, PG, MADV_POPULATE_WRITE), 0);
	CHECK(page_of(mm, BASE + PG) != page_of(child, BASE + PG));
	CHECK_EQ(put64(child, BASE + PG, 99), 0);
	CHECK_EQ(peek64(mm, BASE + PG), 43);
	free_mm(child);

	/* Shared memory: the pages of the backing, present. */
	map_at(mm, BASE + 26 * PG, 2, RW, ANON_SHARED);
	CHECK_EQ(mm_madvise(mm, BASE + 26 * PG, 2 * PG, MADV_POPULATE_WRITE), 0);
	CHECK(pte_of(mm, BASE + 27 * PG) & PTE_WRITE);
	check_consistent(mm, BASE, BASE + 32 * PG, 0);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
}

/* ------------------------------------------------------------ fork */

static void t_fork_cow(void)
{
	struct mm_struct *mm = new_mm(), *child;
	size_t live0 = page_nr_live();
	struct mm_vma_info pv[8], cv[8];
	struct page *p2;
	size_t n;
	int err = 1;

	map_at(mm, BASE, 4, RW, ANON_PRIV);		/* pages 0..2 touched, 3 not */
	map_at(mm, BASE + 8 * PG, 2, RW, ANON_SHARED);
	map_at(mm, BASE + 12 * PG, 1, RW, ANON_PRIV);
	for (uint64_t i = 0; i < 3; i++)
		CHECK_EQ(put64(mm, BASE + i * PG, 100 + i), 0);
	CHECK_EQ(put64(mm, BASE + 8 * PG, 108), 0);
	CHECK_EQ(put64(mm, BASE + 12 * PG, 112), 0);
	CHECK_EQ(mm_mprotect(mm, BASE + 12 * PG, PG, PROT_READ), 0);
	CHECK_EQ(mm_brk(mm, MM_START_BRK + PG), MM_START_BRK + PG);
	CHECK_EQ(mm_set_max_map_count(mm, 1000), 0);

	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	CHECK_EQ(err, 0);
	if (!child) {
		free_mm(mm);
		return;
	}
	n = get_maps(mm, pv, 8);
	CHECK_EQ(get_maps(child, cv, 8), n);
	CHECK(memcmp(pv, cv, n * sizeof(pv[0])) == 0);
	CHECK_EQ(mm_get_brk(child), MM_START_BRK + PG);
	CHECK_EQ(child->max_map_count, 1000);
	CHECK_EQ(mm_nr_pages(child), mm_nr_pages(mm));
	CHECK_EQ(page_nr_live(), live0 + 5);			/* shared, not copied */

	/* Private pages: write-protected in both, the same page until one writes. */
	CHECK(!(pte_of(mm, BASE) & PTE_WRITE));
	CHECK(!(pte_of(child, BASE) & PTE_WRITE));
	CHECK(page_of(mm, BASE) == page_of(child, BASE));
	CHECK_EQ(peek64(child, BASE + 2 * PG), 102);
	CHECK_EQ(put64(child, BASE, 1000), 0);
	CHECK_EQ(put64(mm, BASE + PG, 1001), 0);
	CHECK_EQ(peek64(mm, BASE), 100);
	CHECK_EQ(peek64(child, BASE), 1000);
	CHECK_EQ(peek64(child, BASE + PG), 101);
	CHECK_EQ(peek64(mm, BASE + PG), 1001);
	CHECK(page_of(mm, BASE) != page_of(child, BASE));
	CHECK_EQ(page_nr_live(), live0 + 7);
	CHECK_EQ(put64(child, BASE + 3 * PG, 3), 0);		/* untouched at fork */
	CHECK_EQ(peek64(mm, BASE + 3 * PG), 0);
	CHECK_EQ(put64(child, BASE + 12 * PG, 1), SEGV_ACCERR);

	/* Shared pages: writable in both, one page. */
	CHECK(pte_of(child, BASE + 8 * PG) & PTE_WRITE);
	CHECK_EQ(put64(child, BASE + 8 * PG, 2008), 0);
	CHECK_EQ(peek64(mm, BASE + 8 * PG), 2008);
	CHECK_EQ(put64(mm, BASE + 9 * PG, 2009), 0);		/* faulted after the fork */
	CHECK_EQ(peek64(child, BASE + 9 * PG), 2009);

	/* Once the child is gone, the parent's write reuses its page: no copy. */
	p2 = page_of(mm, BASE + 2 * PG);
	free_mm(child);
	CHECK_EQ(put64(mm, BASE + 2 * PG, 1002), 0);
	CHECK(page_of(mm, BASE + 2 * PG) == p2);
	check_consistent(mm, BASE, BASE + 16 * PG, 1);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);

	/* A closed mm does not fork. */
	mm = new_mm();
	CHECK_EQ(mm_exit_mmap(mm), 0);
	err = 0;
	CHECK(mm_fork(mm, &err) == NULL);
	CHECK_EQ(err, -EINVAL);
	free_mm(mm);
}

/* In debug mode fork's nested child lock is legal, and everything is released. */
static void t_fork_debug_lockdep(void)
{
	struct mm_struct *mm = new_mm_flags(MMAP_LOCK_DEBUG), *child, *grandchild;
	int err = 1, mode = mln_lockdep_get_mode();

	mln_lockdep_reset();
	CHECK_EQ(mln_lockdep_set_mode(MLN_LOCKDEP_RAISE), 0);
	map_at(mm, BASE, 2, RW, ANON_PRIV);
	CHECK_EQ(put64(mm, BASE, 5), 0);
	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	if (child) {
		CHECK_EQ(mmap_lock_is_debug(child), 1);
		grandchild = mm_fork(child, &err);
		CHECK(grandchild != NULL);
		if (grandchild) {
			CHECK_EQ(peek64(grandchild, BASE), 5);
			CHECK_EQ(mm_munmap(grandchild, BASE, PG), 0);	/* the downgrade path */
			free_mm(grandchild);
		}
		free_mm(child);
	}
	CHECK_EQ(mln_lockdep_last_report_kind(), 0);
	CHECK_EQ(mln_lockdep_depth(), 0);
	free_mm(mm);
	mln_lockdep_set_mode(mode);
	mln_lockdep_reset();
}

/* ------------------------------------------------------------ access, faults */

static void t_access_and_fault(void)
{
	struct mm_struct *mm = new_mm();
	uint8_t in[3 * MM_PAGE_SIZE], out[3 * MM_PAGE_SIZE];
	uint64_t fa = 0;

	map_at(mm, BASE, 2, RW, ANON_PRIV);			/* hole at page 2 */
	map_at(mm, BASE + 3 * PG, 1, PROT_READ, ANON_PRIV);
	map_at(mm, BASE + 4 * PG, 1, PROT_NONE, ANON_PRIV);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 7 + 1);

	/* Across a page boundary, both ways. */
	CHECK_EQ(mm_access(mm, BASE + 100, in, 6000, 1, &fa), 0);
	memset(out, 0, sizeof(out));
	CHECK_EQ(mm_access(mm, BASE + 100, out, 6000, 0, &fa), 0);
	CHECK(memcmp(in, out, 6000) == 0);
	CHECK_EQ(mm_nr_pages(mm), 2);

	/* Into the hole: the bytes before it are copied, fault_addr is the first not. */
	fa = 0;
	CHECK_EQ(mm_access(mm, BASE + PG, in, 2 * PG, 1, &fa), SEGV_MAPERR);
	CHECK_EQ(fa, BASE + 2 * PG);
	CHECK_EQ(mm_access(mm, BASE + PG, out, PG, 0, &fa), 0);
	CHECK(memcmp(in, out, PG) == 0);
	CHECK_EQ(mm_access(mm, BASE + 2 * PG + 5, out, 1, 0, &fa), SEGV_MAPERR);
	CHECK_EQ(fa, BASE + 2 * PG + 5);

	/* Protections: read-only, none. */
	CHECK_EQ(mm_access(mm, BASE + 3 * PG + 8, in, 8, 1, &fa), SEGV_ACCERR);
	CHECK_EQ(fa, BASE + 3 * PG + 8);
	CHECK_EQ(peek64(mm, BASE + 3 * PG + 8), 0);
	CHECK_EQ(mm_access(mm, BASE + 4 * PG, out, 8, 0, &fa), SEGV_ACCERR);
	CHECK_EQ(mm_access(mm, BASE + 4 * PG - 4, out, 8, 0, &fa), SEGV_ACCERR);
	CHECK_EQ(fa, BASE + 4 * PG);

	/* Degenerate ranges. */
	CHECK_EQ(mm_access(mm, BASE, out, 0, 0, &fa), 0);
	fa = 0;
	CHECK_EQ(mm_access(mm, UINT64_MAX - 3, out, 8, 0, &fa), SEGV_MAPERR);	/* wraps */
	CHECK_EQ(fa, UINT64_MAX - 3);
	CHECK_EQ(mm_access(mm, MM_TASK_SIZE, out, 8, 0, &fa), SEGV_MAPERR);
	CHECK_EQ(mm_access(mm, 1ull << 60, out, 8, 1, &fa), SEGV_MAPERR);

	/* mm_fault's codes. */
	CHECK_EQ(mm_fault(mm, BASE + 2 * PG, 0), SEGV_MAPERR);
	CHECK_EQ(mm_fault(mm, 0, 0), SEGV_MAPERR);
	CHECK_EQ(mm_fault(mm, UINT64_MAX, 1), SEGV_MAPERR);
	CHECK_EQ(mm_fault(mm, BASE + 3 * PG, 1), SEGV_ACCERR);
	CHECK_EQ(mm_fault(mm, BASE + 3 * PG, 0), 0);
	CHECK_EQ(mm_fault(mm, BASE + 4 * PG, 0), SEGV_ACCERR);
	CHECK_EQ(mm_fault(mm, BASE + 4 * PG + 17, 1), SEGV_ACCERR);
	CHECK_EQ(mm_fault(mm, BASE + 1, 1), 0);
	CHECK(!(pte_of(mm, BASE + 3 * PG) & PTE_WRITE));
	check_consistent(mm, BASE, BASE + 8 * PG, 1);
	free_mm(mm);
}

/* ------------------------------------------------------------ get_user_pages */

static void t_get_user_pages(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live();
	struct page *pg[8], *again[8];
	uint64_t fa = 0, v;

	map_at(mm, BASE, 4, RW, ANON_PRIV);
	for (uint64_t i = 0; i < 4; i++)
		CHECK_EQ(put64(mm, BASE + i * PG + 16, 500 + i), 0);
	CHECK_EQ(mm_get_user_pages(mm, BASE, 4, 1, pg, &fa), 0);
	CHECK_EQ(mm_get_user_pages(mm, BASE, 4, 0, again, &fa), 0);
	for (int i = 0; i < 4; i++) {
		CHECK(pg[i] == again[i]);
		CHECK(pg[i] == page_of(mm, BASE + (uint64_t)i * PG));
		CHECK_EQ(atomic_load(&pg[i]->pincount), 2);
		CHECK_EQ(atomic_load(&pg[i]->refcount), 3);
		memcpy(&v, mm_page_data(pg[i]) + 16, 8);
		CHECK_EQ(v, 500 + (uint64_t)i);
		mm_unpin_page(again[i]);
	}
	for (int i = 1; i < 4; i++)
		CHECK(pg[i] != pg[0]);

	/* A pinned page outlives munmap, data intact, until the unpin frees it. */
	CHECK_EQ(mm_munmap(mm, BASE, 4 * PG), 0);
	CHECK_EQ(mm_nr_pages(mm), 0);
	CHECK_EQ(page_nr_live(), live0 + 4);
	for (int i = 0; i < 4; i++) {
		memcpy(&v, mm_page_data(pg[i]) + 16, 8);
		CHECK_EQ(v, 500 + (uint64_t)i);
		CHECK_EQ(atomic_load(&pg[i]->refcount), 1);
		mm_unpin_page(pg[i]);
	}
	CHECK_EQ(page_nr_live(), live0);

	/* A failure part way leaves nothing pinned; fault_addr names the page. */
	map_at(mm, BASE, 2, RW, ANON_PRIV);
	map_at(mm, BASE + 3 * PG, 1, PROT_READ, ANON_PRIV);
	fa = 0;
	CHECK_EQ(mm_get_user_pages(mm, BASE, 4, 0, pg, &fa), SEGV_MAPERR);
	CHECK_EQ(fa, BASE + 2 * PG);
	CHECK_EQ(atomic_load(&page_of(mm, BASE)->pincount), 0);
	CHECK_EQ(atomic_load(&page_of(mm, BASE)->refcount), 1);
	CHECK_EQ(mm_get_user_pages(mm, BASE + 3 * PG, 1, 1, pg, &fa), SEGV_ACCERR);
	CHECK_EQ(fa, BASE + 3 * PG);
	CHECK_EQ(mm_get_user_pages(mm, BASE + 3 * PG, 1, 0, pg, &fa), 0);	/* read pin: fine */
	mm_unpin_page(pg[0]);
	CHECK_EQ(mm_get_user_pages(mm, BASE + 1, 1, 0, pg, &fa), -EINVAL);
	CHECK_EQ(mm_get_user_pages(mm, BASE, 0, 0, pg, &fa), 0);

	/* A write pin of a COW page breaks the sharing first. */
	{
		int err;
		struct mm_struct *child = mm_fork(mm, &err);

		CHECK(child != NULL);
		if (child) {
			CHECK_EQ(mm_get_user_pages(mm, BASE, 1, 1, pg, &fa), 0);
			CHECK(pg[0] != page_of(child, BASE));
			CHECK(pg[0] == page_of(mm, BASE));
			CHECK(pte_of(mm, BASE) & PTE_WRITE);
			mm_unpin_page(pg[0]);
			free_mm(child);
		}
	}

	/* A pin outlives the whole mm as well. */
	CHECK_EQ(mm_get_user_pages(mm, BASE, 2, 0, pg, &fa), 0);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0 + 2);
	mm_unpin_page(pg[0]);
	mm_unpin_page(pg[1]);
	CHECK_EQ(page_nr_live(), live0);
}

/* ------------------------------------------------------------ notifiers */

#define NEV 256
struct nevent {
	char kind;		/* 's' start, 'e' end, 'r' release */
	int who;
	uint64_t start, end;
};
static struct {
	pthread_mutex_t lock;
	int n;
	struct nevent ev[NEV];
} nlog = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void nlog_add(char kind, void *arg, uint64_t start, uint64_t end)
{
	pthread_mutex_lock(&nlog.lock);
	if (nlog.n < NEV)
		nlog.ev[nlog.n] = (struct nevent){ kind, (int)(intptr_t)arg, start, end };
	nlog.n++;
	pthread_mutex_unlock(&nlog.lock);
}

static void n_start(struct mm_struct *mm, uint64_t start, uint64_t end, void *arg)
{
	CHECK_EQ(mmap_lock_check_held(mm, 0), MMAP_CHECK_OK);	/* whatever the design */
	nlog_add('s', arg, start, end);
}

static void n_end(struct mm_struct *mm, uint64_t start, uint64_t end, void *arg)
{
	CHECK_EQ(mmap_lock_check_held(mm, 0), MMAP_CHECK_OK);	/* whatever the design */
	nlog_add('e', arg, start, end);
}

static void n_release(struct mm_struct *mm, void *arg)
{
	CHECK_EQ(mmap_lock_check_held(mm, 0), MMAP_CHECK_OK);	/* whatever the design */
	nlog_add('r', arg, 0, 0);
}

static const struct mmu_notifier_ops ops_full = { n_start, n_end, n_release };
static const struct mmu_notifier_ops ops_noretire = { n_start, n_end, NULL };

static void nlog_reset(void)
{
	pthread_mutex_lock(&nlog.lock);
	nlog.n = 0;
	pthread_mutex_unlock(&nlog.lock);
}

/*
 * The log since the last reset must be @want, a string of "kind who" pairs
 * ("s1 s2 e1 e2"), each start/end over [@start, @end) (release: any).
 */
static void expect_events_at(const char *want, uint64_t start, uint64_t end, const char *file,
			     int line)
{
	char have[3 * NEV + 1] = "";
	size_t len = 0;
	bool ranges = true;

	pthread_mutex_lock(&nlog.lock);
	for (int i = 0; i < nlog.n && i < NEV; i++) {
		len += (size_t)snprintf(have + len, sizeof(have) - len, "%s%c%d", i ? " " : "",
					nlog.ev[i].kind, nlog.ev[i].who);
		if (nlog.ev[i].kind != 'r' && (nlog.ev[i].start != start || nlog.ev[i].end != end))
			ranges = false;
	}
	nlog.n = 0;
	pthread_mutex_unlock(&nlog.lock);
	if (strcmp(have, want) || !ranges)
		tu_fail(file, line, "notifier events \"%s\"%s, want \"%s\" over [%#llx, %#llx)", have,
			ranges ? "" : " (ranges differ)", want, (unsigned long long)start,
			(unsigned long long)end);
}
#define EXPECT_EVENTS(want, s, e) expect_events_at((want), (s), (e), __FILE__, __LINE__)

static void t_notifiers(void)
{
	struct mm_struct *mm = new_mm(), *child;
	int id1, id2, err;

	nlog_reset();
	CHECK_EQ(mm_register_notifier(mm, NULL, NULL), -EINVAL);
	id1 = mm_register_notifier(mm, &ops_full, (void *)1);
	id2 = mm_register_notifier(mm, &ops_noretire, (void *)2);
	CHECK(id1 > 0 && id2 > 0 && id1 != id2);

	/* Creating and populating mappings invalidates nothing. */
	map_at(mm, BASE, 4, RW, ANON_PRIV);
	for (uint64_t i = 0; i < 4; i++)
		CHECK_EQ(put64(mm, BASE + i * PG, i), 0);
	EXPECT_EVENTS("", 0, 0);

	/* Each removal or write-protection: every start, in registration order, then every end. */
	CHECK_EQ(mm_mprotect(mm, BASE + PG, PG, PROT_READ), 0);
	EXPECT_EVENTS("s1 s2 e1 e2", BASE + PG, BASE + 2 * PG);
	CHECK_EQ(mm_munmap(mm, BASE + 3 * PG, PG), 0);
	EXPECT_EVENTS("s1 s2 e1 e2", BASE + 3 * PG, BASE + 4 * PG);
	CHECK_EQ(mm_munmap(mm, BASE + 8 * PG, PG), 0);		/* nothing mapped there */
	EXPECT_EVENTS("", 0, 0);
	CHECK_EQ(mm_madvise(mm, BASE, PG, MADV_DONTNEED), 0);
	EXPECT_EVENTS("s1 s2 e1 e2", BASE, BASE + PG);
	map_at(mm, BASE + 2 * PG, 1, RW, ANON_PRIV);		/* MAP_FIXED over a page */
	EXPECT_EVENTS("s1 s2 e1 e2", BASE + 2 * PG, BASE + 3 * PG);
	CHECK_EQ(put64(mm, BASE + 2 * PG, 2), 0);

	/* fork write-protects each private VMA of the parent: [0,1) RW, [1,2) R, [2,3) RW. */
	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	pthread_mutex_lock(&nlog.lock);
	CHECK_EQ(nlog.n, 12);
	for (int i = 0; i < 12 && i < nlog.n; i++) {
		struct nevent *e = &nlog.ev[i];
		uint64_t vs = BASE + (uint64_t)(i / 4) * PG;

		CHECK_EQ(e->kind, i % 4 < 2 ? 's' : 'e');
		CHECK_EQ(e->who, i % 2 + 1);
		CHECK_EQ(e->start, vs);
		CHECK_EQ(e->end, vs + PG);
	}
	nlog.n = 0;
	pthread_mutex_unlock(&nlog.lock);
	/* The COW break of one page invalidates that page (under the read lock). */
	CHECK_EQ(put64(mm, BASE + 2 * PG, 22), 0);
	EXPECT_EVENTS("s1 s2 e1 e2", BASE + 2 * PG, BASE + 3 * PG);
	CHECK_EQ(put64(child, BASE + 2 * PG, 23), 0);		/* the child has no notifiers */
	EXPECT_EVENTS("", 0, 0);
	free_mm(child);

	/* Unregistered: gone; an unknown id: ENOENT. */
	CHECK_EQ(mm_unregister_notifier(mm, id2), 0);
	CHECK_EQ(mm_unregister_notifier(mm, id2), -ENOENT);
	CHECK_EQ(mm_unregister_notifier(mm, 0), -ENOENT);
	CHECK_EQ(mm_munmap(mm, BASE, PG), 0);
	EXPECT_EVENTS("s1 e1", BASE, BASE + PG);

	/* exit_mmap: release first, then the whole address space. */
	id2 = mm_register_notifier(mm, &ops_noretire, (void *)2);
	CHECK(id2 > id1);
	CHECK_EQ(mm_exit_mmap(mm), 0);
	EXPECT_EVENTS("r1 s1 s2 e1 e2", 0, MM_TASK_SIZE);
	CHECK_EQ(mm_register_notifier(mm, &ops_full, (void *)3), -EINVAL);
	CHECK_EQ(mm_unregister_notifier(mm, id1), 0);
	free_mm(mm);
	EXPECT_EVENTS("", 0, 0);				/* freed: no second release */
}

/*
 * exit_mmap of an mm with no mapping left: the notifiers' invalidations must
 * still come in start/end pairs (a secondary MMU counting them would
 * otherwise see an end without a start).
 */
static void t_notifier_exit_empty_mm_pairs(void)
{
	struct mm_struct *mm = new_mm();
	int starts = 0, ends = 0;

	nlog_reset();
	CHECK(mm_register_notifier(mm, &ops_full, (void *)1) > 0);
	map_at(mm, BASE, 1, RW, ANON_PRIV);
	CHECK_EQ(mm_munmap(mm, BASE, PG), 0);
	nlog_reset();
	CHECK_EQ(mm_exit_mmap(mm), 0);
	pthread_mutex_lock(&nlog.lock);
	for (int i = 0; i < nlog.n && i < NEV; i++) {
		starts += nlog.ev[i].kind == 's';
		ends += nlog.ev[i].kind == 'e';
	}
	pthread_mutex_unlock(&nlog.lock);
	CHECK_MSG(starts == ends, "exit_mmap of an empty mm: %d invalidate_range_start, "
		  "%d invalidate_range_end", starts, ends);
	nlog_reset();
	free_mm(mm);
}

/* ------------------------------------------------------------ maps */

static void t_maps(void)
{
	struct mm_struct *mm = new_mm();
	struct mm_vma_info v[8];
	size_t n = 99;

	CHECK_EQ(mm_maps(mm, v, 8, &n), 0);
	CHECK_EQ(n, 0);
	CHECK_EQ(mm_brk(mm, MM_START_BRK + 2 * PG), MM_START_BRK + 2 * PG);
	map_at(mm, BASE, 2, PROT_READ | PROT_EXEC, ANON_PRIV);
	map_at(mm, BASE + 4 * PG, 4, RW, ANON_SHARED);
	CHECK_EQ(mm_munmap(mm, BASE + 5 * PG, PG), 0);

	/* Too small an array: the count is still the whole. */
	CHECK_EQ(mm_maps(mm, NULL, 0, &n), 0);
	CHECK_EQ(n, 4);
	memset(v, 0xab, sizeof(v));
	CHECK_EQ(mm_maps(mm, v, 2, &n), 0);
	CHECK_EQ(n, 4);
	CHECK_EQ(v[2].start, 0xababababababababull);	/* not written past @cap */
	CHECK_EQ(get_maps(mm, v, 8), 4);
	CHECK_EQ(v[0].start, BASE);
	CHECK_EQ(v[0].end, BASE + 2 * PG);
	CHECK_EQ(v[0].prot, PROT_READ | PROT_EXEC);
	CHECK_EQ(v[0].flags, 0);
	CHECK_EQ(v[0].heap, 0);
	CHECK_EQ(v[1].start, BASE + 4 * PG);
	CHECK_EQ(v[1].end, BASE + 5 * PG);
	CHECK_EQ(v[1].flags, VM_SHARED);
	CHECK_EQ(v[1].pgoff, 0);
	CHECK_EQ(v[2].start, BASE + 6 * PG);
	CHECK_EQ(v[2].flags, VM_SHARED);
	CHECK_EQ(v[2].pgoff, 2);
	CHECK_EQ(v[3].start, MM_START_BRK);
	CHECK_EQ(v[3].end, MM_START_BRK + 2 * PG);
	CHECK_EQ(v[3].prot, RW);
	CHECK_EQ(v[3].heap, 1);
	CHECK_EQ(mm_map_count(mm), 4);
	free_mm(mm);
}

/* ------------------------------------------------------------ exit_mmap */

static void t_exit_mmap(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live(), n = 9;
	struct page *pg[2];
	uint64_t fa, v = 0;
	int err = 0;

	map_at(mm, BASE, 4, RW, ANON_PRIV);
	CHECK_EQ(put64(mm, BASE, 1), 0);
	CHECK_EQ(mm_brk(mm, MM_START_BRK + PG), MM_START_BRK + PG);
	CHECK_EQ(mm_get_user_pages(mm, BASE, 1, 0, pg, &fa), 0);

	/* Busy while the lock is held. */
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mm_free(mm), -EBUSY);
	CHECK_EQ(mmap_read_unlock(mm), 0);

	CHECK_EQ(mm_exit_mmap(mm), 0);
	CHECK_EQ(mm_exit_mmap(mm), -EINVAL);
	CHECK_EQ(mm_nr_pages(mm), 0);
	CHECK_EQ(page_nr_live(), live0 + 1);	/* the pinned one */
	EXPECT_NO_VMAS(mm);
	CHECK_EQ(mm_maps(mm, NULL, 0, &n), 0);
	CHECK_EQ(n, 0);
	CHECK_EQ(mm_mmap(mm, 0, PG, RW, ANON_PRIV), -EINVAL);
	CHECK_EQ(mm_mmap(mm, BASE, PG, RW, ANON_PRIV | MAP_FIXED), -EINVAL);
	CHECK_EQ(mm_munmap(mm, BASE, PG), -EINVAL);
	CHECK_EQ(mm_mprotect(mm, BASE, PG, PROT_READ), -EINVAL);
	CHECK_EQ(mm_madvise(mm, BASE, PG, MADV_DONTNEED), -EINVAL);
	CHECK_EQ(mm_madvise(mm, BASE, PG, MADV_WILLNEED), -EINVAL);
	CHECK_EQ(mm_madvise(mm, BASE, PG, MADV_DONTFORK), -EINVAL);
	CHECK_EQ(mm_madvise(mm, BASE, PG, MADV_POPULATE_READ), -EINVAL);
	CHECK_EQ(mm_brk(mm, MM_START_BRK + 4 * PG), MM_START_BRK + PG);	/* unchanged */
	CHECK_EQ(mm_fault(mm, BASE, 0), SEGV_MAPERR);
	CHECK_EQ(mm_access(mm, BASE, &v, 8, 0, &fa), SEGV_MAPERR);
	CHECK_EQ(mm_get_user_pages(mm, BASE, 1, 0, pg + 1, &fa), SEGV_MAPERR);
	CHECK(mm_fork(mm, &err) == NULL);
	CHECK_EQ(err, -EINVAL);
	memcpy(&v, mm_page_data(pg[0]), 8);
	CHECK_EQ(v, 1);
	free_mm(mm);
	mm_unpin_page(pg[0]);
	CHECK_EQ(page_nr_live(), live0);
	CHECK_EQ(mm_free(NULL), 0);
}

/*
 * A notifier runs under its mm's lock: a call into that mm from it is
 * refused (-EDEADLK), whatever the operation and the lock mode it runs in,
 * and the operation under way completes.  (munmap or close from one used to
 * free the VMAs mprotect was walking; munmap from a copy-on-write break
 * deadlocked on the read lock the break held.)  Another mm is fair game.
 */
static struct {
	struct mm_struct *other;
	int calls;
	int rc[14];
	int other_ok;
} reent;

static void reent_start(struct mm_struct *mm, uint64_t start, uint64_t end, void *arg)
{
	struct page *pg;
	uint64_t fa, v = 0;
	int err, i = 0;

	(void)start; (void)end; (void)arg;
	if (reent.calls++)
		return;
	reent.rc[i++] = mm_munmap(mm, BASE, PG);
	reent.rc[i++] = mm_exit_mmap(mm);
	reent.rc[i++] = (int)mm_mmap(mm, 0, PG, RW, ANON_PRIV);
	reent.rc[i++] = mm_mprotect(mm, BASE, PG, PROT_READ);
	reent.rc[i++] = (int)mm_brk(mm, MM_START_BRK + PG);
	reent.rc[i++] = mm_madvise(mm, BASE, PG, MADV_DONTNEED);
	reent.rc[i++] = mm_madvise(mm, BASE, PG, MADV_DONTFORK);	/* the write lock */
	reent.rc[i++] = mm_madvise(mm, BASE, PG, MADV_POPULATE_WRITE);
	reent.rc[i++] = mm_fault(mm, BASE, 0);
	reent.rc[i++] = mm_access(mm, BASE, &v, 8, 0, &fa);
	reent.rc[i++] = mm_get_user_pages(mm, BASE, 1, 0, &pg, &fa);
	reent.rc[i++] = mm_fork(mm, &err) ? 0 : err;
	reent.rc[i++] = mm_unregister_notifier(mm, 1);
	reent.rc[i++] = mm_free(mm) == -EBUSY ? -EDEADLK : 0;	/* held: refused too */
	reent.other_ok = mm_mmap(reent.other, BASE, PG, RW, ANON_PRIV | MAP_FIXED) == (int64_t)BASE &&
			 mm_fault(reent.other, BASE, 1) == 0;
}

static void t_notifier_reentry_refused(void)
{
	static const struct mmu_notifier_ops ops = { reent_start, NULL, NULL };
	struct mm_struct *mm = new_mm(), *child;
	uint64_t v = 7, fa;
	int err;

	memset(&reent, 0, sizeof(reent));
	reent.other = new_mm();
	map_at(mm, BASE, 4, RW, ANON_PRIV);
	CHECK_EQ(mm_access(mm, BASE, &v, 8, 1, &fa), 0);
	CHECK(mm_register_notifier(mm, &ops, NULL) > 0);

	/* Under the write lock (mprotect). */
	CHECK_EQ(mm_mprotect(mm, BASE, 2 * PG, PROT_READ), 0);
	for (int i = 0; i < 14; i++)
		CHECK_MSG(reent.rc[i] == -EDEADLK, "re-entry %d gave %d", i, reent.rc[i]);
	CHECK(reent.other_ok);
	EXPECT_LAYOUT(mm, { BASE, BASE + 2 * PG, PROT_READ }, { BASE + 2 * PG, BASE + 4 * PG, RW });

	/* Under the read lock (a copy-on-write break). */
	CHECK_EQ(mm_access(mm, BASE + 2 * PG, &v, 8, 1, &fa), 0);
	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	memset(reent.rc, 0, sizeof(reent.rc));
	reent.calls = 0;
	v = 8;
	CHECK_EQ(mm_access(mm, BASE + 2 * PG, &v, 8, 1, &fa), 0);
	CHECK(reent.calls > 0);
	for (int i = 0; i < 14; i++)
		CHECK_MSG(reent.rc[i] == -EDEADLK, "re-entry %d under read gave %d", i, reent.rc[i]);
	CHECK_EQ(mm_map_count(mm), 2);
	free_mm(child);
	free_mm(mm);
	free_mm(reent.other);
}

/* ------------------------------------------------------------ max_map_count */

static void t_max_map_count(void)
{
	struct mm_struct *mm = new_mm();

	CHECK_EQ(mm_set_max_map_count(mm, 0), -EINVAL);
	CHECK_EQ(mm_set_max_map_count(mm, 4), 0);
	for (uint64_t i = 0; i < 4; i++)
		map_at(mm, BASE + i * 4 * PG, 3, RW, ANON_PRIV);	/* [0,3) [4,7) [8,11) [12,15) */
	CHECK_EQ(mm_map_count(mm), 4);

	/* Anything that would make a fifth fails with ENOMEM and changes nothing. */
	CHECK_EQ(mm_mmap(mm, 0, PG, RW, ANON_PRIV), -ENOMEM);
	CHECK_EQ(mm_mmap(mm, BASE + 32 * PG, PG, RW, ANON_PRIV | MAP_FIXED), -ENOMEM);
	CHECK_EQ(mm_munmap(mm, BASE + PG, PG), -ENOMEM);		/* a split */
	CHECK_EQ(mm_mprotect(mm, BASE + PG, PG, PROT_READ), -ENOMEM);
	CHECK_EQ(mm_mprotect(mm, BASE + 2 * PG, PG, PROT_READ), -ENOMEM);
	CHECK_EQ(mm_brk(mm, MM_START_BRK + PG), MM_START_BRK);
	CHECK_EQ(mm_mmap(mm, BASE + PG, PG, PROT_READ, ANON_PRIV | MAP_FIXED), -ENOMEM);
	EXPECT_LAYOUT(mm, { BASE, BASE + 3 * PG, RW }, { BASE + 4 * PG, BASE + 7 * PG, RW },
		      { BASE + 8 * PG, BASE + 11 * PG, RW }, { BASE + 12 * PG, BASE + 15 * PG, RW });

	/* What keeps the count is fine: no split, or a replacement one for one. */
	CHECK_EQ(mm_munmap(mm, BASE + 2 * PG, PG), 0);
	CHECK_EQ(mm_mprotect(mm, BASE + 4 * PG, 3 * PG, PROT_READ), 0);
	map_at(mm, BASE + 8 * PG, 3, PROT_EXEC, ANON_PRIV);
	map_at(mm, BASE + 12 * PG, 4, RW, ANON_PRIV);			/* one VMA and a gap */
	CHECK_EQ(mm_map_count(mm), 4);

	/* One whole VMA gone: room for exactly one more split. */
	CHECK_EQ(mm_munmap(mm, BASE + 12 * PG, 4 * PG), 0);
	CHECK_EQ(mm_mprotect(mm, BASE + 5 * PG, PG, RW), -ENOMEM);	/* two splits */
	CHECK_EQ(mm_mprotect(mm, BASE + 4 * PG, PG, RW), 0);		/* one */
	CHECK_EQ(mm_map_count(mm), 4);

	/* A limit below the count: what shrinks the count still works. */
	CHECK_EQ(mm_set_max_map_count(mm, 2), 0);
	CHECK_EQ(mm_munmap(mm, BASE, 2 * PG), 0);
	CHECK_EQ(mm_mprotect(mm, BASE + 4 * PG, PG, PROT_READ), 0);	/* merges: 4 -> 2 */
	CHECK_EQ(mm_map_count(mm), 2);
	check_consistent(mm, BASE, BASE + 64 * PG, 0);
	free_mm(mm);
}

/*
 * The rule in mm_mmap.c: "An operation that would leave more VMAs than
 * max_map_count (and more than before) fails with ENOMEM".  At the limit, an
 * operation whose result merges back into as many VMAs as before must
 * succeed, as it does on Linux (mprotect to the protection a range already
 * has is a no-op there; mmap checks map_count > max_map_count, then merges).
 */
static void t_max_map_count_merging_at_limit(void)
{
	struct mm_struct *mm = new_mm();

	map_at(mm, BASE, 2, RW, ANON_PRIV);
	map_at(mm, BASE + 8 * PG, 2, PROT_READ, ANON_PRIV);
	CHECK_EQ(mm_set_max_map_count(mm, 2), 0);

	/* The protection it already has: nothing to change. */
	CHECK_EQ(mm_mprotect(mm, BASE, PG, RW), 0);
	CHECK_EQ(mm_mprotect(mm, BASE + 9 * PG, PG, PROT_READ), 0);
	/* A new range that merges into a neighbour: still two VMAs. */
	CHECK_EQ(mm_mmap(mm, BASE + 2 * PG, PG, RW, ANON_PRIV | MAP_FIXED), (int64_t)(BASE + 2 * PG));
	CHECK_EQ(mm_mmap(mm, BASE + 7 * PG, PG, PROT_READ, ANON_PRIV | MAP_FIXED),
		 (int64_t)(BASE + 7 * PG));
	CHECK_EQ(mm_map_count(mm), 2);
	free_mm(mm);
}

/* ================================================================ races */

/*
 * Accessors on random pages of a 64-page range, one mutator cycling munmap,
 * mmap(MAP_FIXED) and mprotect(PROT_READ / PROT_READ|PROT_WRITE) over
 * sub-ranges of it.  Every fault, access or pin either succeeds or gives
 * SEGV_MAPERR (no VMA) or SEGV_ACCERR (a write to a read-only VMA: never a
 * read); every successful read of a thread's own slot finds 0 (a page new
 * since its last write there) or the last value it wrote there.
 */
#define RACE_PAGES 64
#define RACE_ACCESSORS 3
#define RACE_MUTATIONS 20000
/*
 * And at most this long: on an oversubscribed machine every write-lock
 * handoff can cost a scheduler time slice (a reader preempted inside its
 * read section), which would take the run past the watchdog.  Unloaded,
 * every build does all the steps well within it.
 */
#define RACE_BUDGET_MS 3000
#define RACE_MIN_STEPS 200
#define RACE_OPS_PER_MUTATION 16	/* per accessor */

enum { RC_OK, RC_MAPERR, RC_ACCERR, RC_NOENT, RC_NOUT };
struct race {
	struct mm_struct *mm;
	uint64_t base;
	_Atomic int stop, started;
	_Atomic uint64_t steps;
	_Atomic uint64_t outcome[RC_NOUT], zero_reads, value_reads, bad;
};

struct accessor {
	pthread_t th;
	struct race *r;
	int id;
	uint64_t seed;
	uint64_t last[RACE_PAGES];
};

static void race_count(struct race *r, int rc, bool write, const char *what, uint64_t addr)
{
	int o = rc == 0 ? RC_OK : rc == SEGV_MAPERR ? RC_MAPERR : rc == SEGV_ACCERR ? RC_ACCERR : -1;

	if (o < 0 || (o == RC_ACCERR && !write)) {
		atomic_fetch_add(&r->bad, 1);
		CHECK_MSG(0, "%s %s at %#llx: %d", what, write ? "write" : "read",
			  (unsigned long long)addr, rc);
		return;
	}
	atomic_fetch_add_explicit(&r->outcome[o], 1, memory_order_relaxed);
}

/* A read of the thread's own slot of page @p gave @v (a successful access). */
static void check_own_slot(struct accessor *a, unsigned int p, uint64_t v)
{
	if (v == 0) {
		atomic_fetch_add_explicit(&a->r->zero_reads, 1, memory_order_relaxed);
		return;
	}
	atomic_fetch_add_explicit(&a->r->value_reads, 1, memory_order_relaxed);
	CHECK_MSG(v == a->last[p], "thread %d page %u: read %#llx, last wrote %#llx", a->id, p,
		  (unsigned long long)v, (unsigned long long)a->last[p]);
}

static void check_maps_snapshot(struct mm_struct *mm)
{
	struct mm_vma_info v[RACE_PAGES + 8];
	size_t n = get_maps(mm, v, RACE_PAGES + 8);

	CHECK(n <= RACE_PAGES + 8);
	for (size_t i = 0; i < n && i < RACE_PAGES + 8; i++) {
		CHECK(v[i].start < v[i].end);
		CHECK(!(v[i].start & (PG - 1)) && !(v[i].end & (PG - 1)));
		CHECK(!i || v[i - 1].end <= v[i].start);
		CHECK(v[i].prot == PROT_READ || v[i].prot == RW);
	}
}

static void *accessor_main(void *arg)
{
	struct accessor *a = arg;
	struct race *r = a->r;
	struct mm_struct *mm = r->mm;
	uint64_t ctr = 0;

	atomic_fetch_add(&r->started, 1);
	for (uint64_t it = 0; pace(it, RACE_OPS_PER_MUTATION, &r->steps, &r->stop); it++) {
		uint64_t x = tu_rand(&a->seed), fa = 0, v = 0;
		unsigned int p = (unsigned int)(x % RACE_PAGES);
		uint64_t addr = r->base + p * PG + (uint64_t)a->id * 8;
		struct page *pg;
		int rc;

		switch ((x >> 8) % 8) {
		case 0:
			race_count(r, mm_fault(mm, addr, 0), false, "fault", addr);
			break;
		case 1:
			race_count(r, mm_fault(mm, addr, 1), true, "fault", addr);
			break;
		case 2:
		case 3:
			rc = mm_access(mm, addr, &v, 8, 0, &fa);
			race_count(r, rc, false, "access", addr);
			if (!rc)
				check_own_slot(a, p, v);
			else
				CHECK_EQ(fa, addr);
			break;
		case 4:
		case 5:
			v = ((uint64_t)(a->id + 1) << 56) | ((uint64_t)p << 40) | ++ctr;
			rc = mm_access(mm, addr, &v, 8, 1, &fa);
			race_count(r, rc, true, "access", addr);
			if (!rc)
				a->last[p] = v;
			else
				CHECK_EQ(fa, addr);
			break;
		case 6: {
			bool write = (x >> 20) & 1;

			rc = mm_get_user_pages(mm, addr & ~(PG - 1), 1, write, &pg, &fa);
			race_count(r, rc, write, "gup", addr);
			if (!rc) {
				memcpy(&v, mm_page_data(pg) + a->id * 8, 8);
				check_own_slot(a, p, v);
				mm_unpin_page(pg);
			}
			break;
		}
		case 7:
			check_maps_snapshot(mm);
			break;
		}
	}
	return NULL;
}

static void t_race_faults_vs_munmap_mprotect(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live();
	struct race r = { .mm = mm, .base = BASE };
	struct accessor acc[RACE_ACCESSORS];
	uint64_t seed = 0x9e3779b97f4a7c15ull, enomem = 0, ops[4] = { 0 };
	uint64_t deadline = tu_now_ns() + RACE_BUDGET_MS * TU_NS_PER_MS;
	int done = 0;

	map_at(mm, BASE, RACE_PAGES, RW, ANON_PRIV);
	for (int i = 0; i < RACE_ACCESSORS; i++) {
		acc[i] = (struct accessor){ .r = &r, .id = i, .seed = 0x1234567ull * (uint64_t)(i + 1) };
		tu_create(&acc[i].th, accessor_main, &acc[i]);
	}
	EXPECT_SPIN(atomic_load(&r.started) == RACE_ACCESSORS);
	for (int i = 0; i < RACE_MUTATIONS && tu_now_ns() < deadline; i++, done++) {
		uint64_t x = tu_rand(&seed);
		uint64_t first = x % RACE_PAGES, n = 1 + (x >> 8) % 8;
		uint64_t start = BASE + first * PG, len;
		int op = (int)((x >> 16) % 4), rc;

		if (first + n > RACE_PAGES)
			n = RACE_PAGES - first;
		len = n * PG;
		ops[op]++;
		switch (op) {
		case 0:
			CHECK_EQ(mm_munmap(mm, start, len), 0);
			break;
		case 1:
			CHECK_EQ(mm_mmap(mm, start, len, RW,
					 ((x >> 24) % 8 ? ANON_PRIV : ANON_SHARED) | MAP_FIXED),
				 (int64_t)start);
			break;
		case 2:
		case 3:
			rc = mm_mprotect(mm, start, len, op == 2 ? PROT_READ : RW);
			CHECK_MSG(rc == 0 || rc == -ENOMEM, "mprotect: %d", rc);
			enomem += rc == -ENOMEM;
			break;
		}
		atomic_fetch_add(&r.steps, 1);
		sched_yield();		/* let the accessors see this layout */
	}
	atomic_store(&r.stop, 1);
	for (int i = 0; i < RACE_ACCESSORS; i++)
		JOIN(acc[i].th, "accessor");
	printf("    %d of %d mutations in the time budget (munmap %llu, mmap %llu, mprotect R %llu, "
	       "RW %llu; %llu ENOMEM on holes)\n    accesses: ok %llu, SEGV_MAPERR %llu, "
	       "SEGV_ACCERR %llu (writes); own-slot reads: %llu values, %llu zeroes\n",
	       done, RACE_MUTATIONS, (unsigned long long)ops[0], (unsigned long long)ops[1],
	       (unsigned long long)ops[2], (unsigned long long)ops[3], (unsigned long long)enomem,
	       (unsigned long long)r.outcome[RC_OK], (unsigned long long)r.outcome[RC_MAPERR],
	       (unsigned long long)r.outcome[RC_ACCERR], (unsigned long long)r.value_reads,
	       (unsigned long long)r.zero_reads);
	CHECK_EQ(atomic_load(&r.bad), 0);
	CHECK(done >= RACE_MIN_STEPS);
	CHECK(r.outcome[RC_OK] > 0);
	CHECK(r.outcome[RC_MAPERR] + r.outcome[RC_ACCERR] > 0);
	check_consistent(mm, BASE, BASE + RACE_PAGES * PG, 1);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
}

/*
 * First touch of one page by N threads at once (faults of both kinds, writes,
 * pins): exactly one page is installed, every pin gets it, and every
 * thread's write is in it.
 */
#define FT_THREADS 8
#define FT_ROUNDS 256

struct first_touch {
	struct mm_struct *mm;
	uint64_t priv, shared;		/* FT_ROUNDS / 2 pages each */
	_Atomic int round;		/* released rounds */
	_Atomic int done;
	struct page *got[FT_THREADS];
	int rc[FT_THREADS];
};

struct ft_thread {
	pthread_t th;
	struct first_touch *f;
	int id;
};

static uint64_t ft_addr(struct first_touch *f, int round)
{
	return (round % 2 ? f->shared : f->priv) + (uint64_t)(round / 2) * PG;
}

static void *ft_main(void *arg)
{
	struct ft_thread *t = arg;
	struct first_touch *f = t->f;

	for (int round = 0; round < FT_ROUNDS; round++) {
		uint64_t addr = ft_addr(f, round), fa, v = (uint64_t)round << 8 | (uint64_t)t->id;
		int rc = 0;

		if (!SPIN_UNTIL(atomic_load(&f->round) > round)) {
			CHECK_MSG(0, "thread %d: round %d never started", t->id, round);
			return NULL;
		}
		switch ((t->id + round) % 4) {
		case 0: rc = mm_fault(f->mm, addr, 1); break;
		case 1: rc = mm_fault(f->mm, addr, 0); break;
		case 2: rc = mm_access(f->mm, addr + (uint64_t)t->id * 8, &v, 8, 1, &fa); break;
		case 3: break;	/* straight to the pin */
		}
		if (!rc)
			rc = mm_get_user_pages(f->mm, addr, 1, t->id % 2, &f->got[t->id], &fa);
		f->rc[t->id] = rc;
		atomic_fetch_add(&f->done, 1);
	}
	return NULL;
}

static void t_race_first_touch_one_page(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live();
	struct first_touch f = { .mm = mm, .priv = BASE, .shared = BASE + FT_ROUNDS * PG };
	struct ft_thread th[FT_THREADS];

	map_at(mm, f.priv, FT_ROUNDS / 2, RW, ANON_PRIV);
	map_at(mm, f.shared, FT_ROUNDS / 2, RW, ANON_SHARED);
	for (int i = 0; i < FT_THREADS; i++) {
		th[i] = (struct ft_thread){ .f = &f, .id = i };
		tu_create(&th[i].th, ft_main, &th[i]);
	}
	for (int round = 0; round < FT_ROUNDS; round++) {
		uint64_t addr = ft_addr(&f, round);
		struct page *p;

		atomic_store(&f.round, round + 1);
		if (!SPIN_UNTIL(atomic_load(&f.done) == (round + 1) * FT_THREADS)) {
			CHECK_MSG(0, "round %d: not every thread finished", round);
			break;
		}
		CHECK_EQ(mm_nr_pages(mm), (size_t)round + 1);
		p = page_of(mm, addr);
		CHECK(p != NULL);
		for (int i = 0; i < FT_THREADS; i++) {
			CHECK_EQ(f.rc[i], 0);
			CHECK_MSG(f.got[i] == p, "round %d thread %d pinned %p, the PTE has %p", round,
				  i, (void *)f.got[i], (void *)p);
			if ((i + round) % 4 == 2) {
				uint64_t v;

				memcpy(&v, mm_page_data(p) + i * 8, 8);
				CHECK_EQ(v, (uint64_t)round << 8 | (uint64_t)i);
			}
		}
		/* The PTE, the pins, and for a shared page its backing object. */
		CHECK_EQ(atomic_load(&p->refcount), 1 + FT_THREADS + round % 2);
		CHECK_EQ(atomic_load(&p->pincount), FT_THREADS);
		for (int i = 0; i < FT_THREADS; i++)
			if (!f.rc[i])
				mm_unpin_page(f.got[i]);
	}
	for (int i = 0; i < FT_THREADS; i++)
		JOIN(th[i].th, "first-touch thread");
	printf("    %d rounds x %d threads: one page each round\n", FT_ROUNDS, FT_THREADS);
	check_consistent(mm, BASE, BASE + 2 * FT_ROUNDS * PG, 1);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
}

/*
 * Pins against munmap.  In lock step: the pinner writes its marker, pins
 * the range and keeps reading the pinned pages while the mutator unmaps it
 * (the zap dropping the PTEs' references under the downgraded lock), then
 * unpins; the pages must stay readable and unchanged until then, and be
 * freed by the unpin.  A second thread pins and unpins freely meanwhile.
 */
#define GUP_PAGES 4
#define GUP_ROUNDS 1000

enum { G_IDLE, G_MAPPED, G_PINNED, G_UNMAPPED, G_UNPINNED };
struct gup_race {
	struct mm_struct *mm;
	_Atomic int state, stop;
	_Atomic uint64_t steps, runner_ops, free_pins, free_faults, reads_during_unmap;
};

static void *gup_pinner(void *arg)
{
	struct gup_race *g = arg;

	for (int round = 0; round < GUP_ROUNDS; round++) {
		struct page *pg[GUP_PAGES];
		uint64_t marker = 0xabc0000000000000ull | (uint64_t)round, fa, v;
		int rc;

		if (!SPIN_UNTIL(atomic_load(&g->state) == G_MAPPED)) {
			CHECK_MSG(0, "round %d: never mapped", round);
			return NULL;
		}
		for (int i = 0; i < GUP_PAGES; i++)
			CHECK_EQ(put64(g->mm, BASE + (uint64_t)i * PG, marker + (uint64_t)i), 0);
		rc = mm_get_user_pages(g->mm, BASE, GUP_PAGES, round % 2, pg, &fa);
		CHECK_EQ(rc, 0);
		if (rc)
			return NULL;
		atomic_store(&g->state, G_PINNED);
		/* Read the pinned pages while the range is torn down, and after. */
		for (int after = 0; after < 8;) {
			bool unmapped = atomic_load(&g->state) == G_UNMAPPED;

			for (int i = 0; i < GUP_PAGES; i++) {
				memcpy(&v, mm_page_data(pg[i]), 8);
				CHECK_EQ(v, marker + (uint64_t)i);
			}
			atomic_fetch_add_explicit(&g->reads_during_unmap, !unmapped,
						  memory_order_relaxed);
			if (unmapped)
				after++;
			else
				sched_yield();
		}
		for (int i = 0; i < GUP_PAGES; i++) {
			CHECK(atomic_load(&pg[i]->pincount) >= 1);	/* (the runner may pin too) */
			mm_unpin_page(pg[i]);
		}
		atomic_store(&g->state, G_UNPINNED);
	}
	return NULL;
}

static void *gup_free_runner(void *arg)
{
	struct gup_race *g = arg;
	uint64_t seed = 77;

	for (uint64_t it = 0; pace(it, 32, &g->steps, &g->stop); it++) {
		uint64_t x = tu_rand(&seed), fa, v;
		uint64_t addr = BASE + (x % GUP_PAGES) * PG;
		struct page *pg;
		int rc = mm_get_user_pages(g->mm, addr, 1, (x >> 8) & 1, &pg, &fa);

		CHECK_MSG(rc == 0 || rc == SEGV_MAPERR, "gup: %d", rc);
		if (!rc) {
			memcpy(&v, mm_page_data(pg) + 64, 8);	/* nobody writes there */
			CHECK_EQ(v, 0);
			mm_unpin_page(pg);
			atomic_fetch_add_explicit(&g->free_pins, 1, memory_order_relaxed);
		}
		rc = mm_fault(g->mm, addr + 64, (x >> 9) & 1);
		CHECK_MSG(rc == 0 || rc == SEGV_MAPERR, "fault: %d", rc);
		atomic_fetch_add_explicit(&g->free_faults, !rc, memory_order_relaxed);
		atomic_fetch_add(&g->runner_ops, 1);
	}
	return NULL;
}

static void t_race_pins_survive_munmap(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live();
	struct gup_race g = { .mm = mm };
	pthread_t pinner, runner;

	tu_create(&pinner, gup_pinner, &g);
	tu_create(&runner, gup_free_runner, &g);
	for (int round = 0; round < GUP_ROUNDS; round++) {
		map_at(mm, BASE, GUP_PAGES, RW, round % 3 ? ANON_PRIV : ANON_SHARED);
		atomic_fetch_add(&g.steps, 1);		/* the free runner's budget */
		atomic_store(&g.state, G_MAPPED);
		if (!SPIN_UNTIL(atomic_load(&g.state) == G_PINNED)) {
			CHECK_MSG(0, "round %d: never pinned", round);
			break;
		}
		/* The free runner must not fall behind (it would then only race the end). */
		EXPECT_SPIN(atomic_load(&g.runner_ops) >= 32 * (uint64_t)(2 * round + 1));
		CHECK_EQ(mm_munmap(mm, BASE, GUP_PAGES * PG), 0);
		atomic_fetch_add(&g.steps, 1);		/* and some on the unmapped range */
		CHECK_EQ(mm_nr_pages(mm), 0);
		atomic_store(&g.state, G_UNMAPPED);
		if (!SPIN_UNTIL(atomic_load(&g.state) == G_UNPINNED)) {
			CHECK_MSG(0, "round %d: never unpinned", round);
			break;
		}
	}
	atomic_store(&g.stop, 1);
	JOIN(pinner, "pinner");
	JOIN(runner, "free-running pinner");
	printf("    %d pinned rounds (%llu reads of pinned pages before the unmap finished); "
	       "free runner: %llu pins, %llu faults, of %llu tries\n",
	       GUP_ROUNDS, (unsigned long long)g.reads_during_unmap,
	       (unsigned long long)g.free_pins, (unsigned long long)g.free_faults,
	       (unsigned long long)g.runner_ops);
	check_consistent(mm, BASE, BASE + 8 * PG, 1);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
}

/*
 * fork while threads write the parent.  fork holds the parent's write lock,
 * so the child is one consistent state: equal to the parent's memory as it
 * was at that moment, which a notifier (called by fork under that lock)
 * snapshots.  Each writer owns a block of pages and writes 16-byte records
 * straddling the page boundaries inside it, in single accesses: no child
 * may hold half a record.  The child then stays equal to its snapshot while
 * the parent moves on, and the child's own writes do not reach the parent.
 */
#define FORK_PAGES 64
#define FORK_WRITERS 4
#define FORK_BLOCK (FORK_PAGES / FORK_WRITERS)
#define FORK_ROUNDS 64

struct fork_race {
	struct mm_struct *mm;
	_Atomic int stop;
	_Atomic uint64_t steps, writes, cow_notes;
	uint8_t *snap;			/* FORK_PAGES pages, filled by the notifier */
	int snapped;
};

struct fork_writer {
	pthread_t th;
	struct fork_race *f;
	int id;
	uint64_t last[FORK_BLOCK];	/* by boundary index within the block */
};

static _Thread_local int in_fork;

static void fork_snap_start(struct mm_struct *mm, uint64_t start, uint64_t end, void *arg)
{
	struct fork_race *f = arg;

	if (!in_fork) {
		atomic_fetch_add_explicit(&f->cow_notes, 1, memory_order_relaxed);
		return;
	}
	/* The forking thread, with the parent's write lock: nobody else is in the mm. */
	CHECK(start <= BASE && end >= BASE + FORK_PAGES * PG);
	for (uint64_t i = 0; i < FORK_PAGES; i++) {
		struct page *p = page_of(mm, BASE + i * PG);

		if (p)
			memcpy(f->snap + i * PG, mm_page_data(p), PG);
		else
			memset(f->snap + i * PG, 0, PG);
	}
	f->snapped++;
}

static const struct mmu_notifier_ops fork_snap_ops = { fork_snap_start, NULL, NULL };

static uint64_t fork_record_addr(int writer, int b)
{
	/* Boundary b (1..FORK_BLOCK-1) inside the writer's block: 8 bytes each side. */
	return BASE + ((uint64_t)writer * FORK_BLOCK + (uint64_t)b) * PG - 8;
}

static void *fork_writer_main(void *arg)
{
	struct fork_writer *w = arg;
	struct fork_race *f = w->f;
	uint64_t seed = 0xfeed + (uint64_t)w->id, ctr = 0;

	for (uint64_t it = 0; pace(it, 400, &f->steps, &f->stop); it++) {
		uint64_t x = tu_rand(&seed), fa, rec[2];
		int b = 1 + (int)(x % (FORK_BLOCK - 1));
		uint64_t addr = fork_record_addr(w->id, b);

		if ((x >> 8) % 4) {
			uint64_t v = ((uint64_t)(w->id + 1) << 56) | ((uint64_t)b << 48) | ++ctr;

			rec[0] = rec[1] = v;
			CHECK_EQ(mm_access(f->mm, addr, rec, 16, 1, &fa), 0);
			w->last[b] = v;
			atomic_fetch_add_explicit(&f->writes, 1, memory_order_relaxed);
		} else {
			CHECK_EQ(mm_access(f->mm, addr, rec, 16, 0, &fa), 0);
			CHECK_EQ(rec[0], w->last[b]);
			CHECK_EQ(rec[1], w->last[b]);
		}
	}
	return NULL;
}

/* The child's FORK_PAGES pages into @buf. */
static void read_all(struct mm_struct *mm, uint8_t *buf)
{
	uint64_t fa = 0;

	CHECK_EQ(mm_access(mm, BASE, buf, FORK_PAGES * PG, 0, &fa), 0);
}

static void t_race_fork_vs_faults(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live();
	struct fork_race f = { .mm = mm };
	struct fork_writer w[FORK_WRITERS];
	uint8_t *buf = malloc(FORK_PAGES * PG);
	uint64_t torn = 0;

	f.snap = malloc(FORK_PAGES * PG);
	if (!buf || !f.snap) {
		fprintf(stderr, "malloc failed\n");
		exit(2);
	}
	map_at(mm, BASE, FORK_PAGES, RW, ANON_PRIV);
	CHECK(mm_register_notifier(mm, &fork_snap_ops, &f) > 0);
	for (int i = 0; i < FORK_WRITERS; i++) {
		w[i] = (struct fork_writer){ .f = &f, .id = i };
		tu_create(&w[i].th, fork_writer_main, &w[i]);
	}
	for (int round = 0; round < FORK_ROUNDS; round++) {
		struct mm_struct *child;
		uint64_t before = atomic_load(&f.writes);
		int err = 1, snapped = f.snapped;

		atomic_fetch_add(&f.steps, 1);
		EXPECT_SPIN(atomic_load(&f.writes) >= before + 50);	/* let the writers run */
		in_fork = 1;
		child = mm_fork(mm, &err);
		in_fork = 0;
		CHECK(child != NULL);
		CHECK_EQ(err, 0);
		CHECK_EQ(f.snapped, snapped + 1);
		if (!child)
			break;
		read_all(child, buf);
		CHECK_MSG(memcmp(buf, f.snap, FORK_PAGES * PG) == 0,
			  "round %d: the child differs from the parent at fork", round);
		for (int i = 0; i < FORK_WRITERS; i++) {
			for (int b = 1; b < FORK_BLOCK; b++) {
				uint64_t rec[2], off = fork_record_addr(i, b) - BASE;

				memcpy(rec, buf + off, 16);
				torn += rec[0] != rec[1];
			}
		}
		/* The parent moves on; the child does not. */
		before = atomic_load(&f.writes);
		atomic_fetch_add(&f.steps, 1);
		EXPECT_SPIN(atomic_load(&f.writes) >= before + 100);
		read_all(child, buf);
		CHECK_MSG(memcmp(buf, f.snap, FORK_PAGES * PG) == 0,
			  "round %d: the parent's later writes reached the child", round);
		/* The child's writes stay in the child (the writers check the parent). */
		for (int i = 0; i < FORK_WRITERS; i++)
			for (int b = 1; b < FORK_BLOCK; b++) {
				uint64_t junk[2] = { ~0ull, ~0ull }, fa;

				CHECK_EQ(mm_access(child, fork_record_addr(i, b), junk, 16, 1, &fa),
					 0);
			}
		check_consistent(child, BASE, BASE + FORK_PAGES * PG, 0);
		free_mm(child);
	}
	atomic_store(&f.stop, 1);
	for (int i = 0; i < FORK_WRITERS; i++)
		JOIN(w[i].th, "writer");
	CHECK_EQ(torn, 0);
	printf("    %d forks under %d writers: %llu writes, %llu COW-break invalidations\n",
	       FORK_ROUNDS, FORK_WRITERS, (unsigned long long)f.writes,
	       (unsigned long long)f.cow_notes);
	CHECK(f.cow_notes > 0);
	check_consistent(mm, BASE, BASE + FORK_PAGES * PG, 1);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
	free(buf);
	free(f.snap);
}

/*
 * madvise(MADV_DONTNEED) against faults, accesses and pins on the same
 * pages.  Private pages read back as the last value written or as zero
 * (dropped meanwhile); shared pages keep their contents across the drop,
 * so they always read back the last value written.
 */
#define DN_PRIV 32
#define DN_SHARED 8
#define DN_THREADS 3
#define DN_ZAPS 20000
#define DN_OPS_PER_ZAP 16

struct dn_race {
	struct mm_struct *mm;
	uint64_t shared;
	_Atomic int stop, started;
	_Atomic uint64_t steps, zero_reads, value_reads, ops;
};

struct dn_thread {
	pthread_t th;
	struct dn_race *d;
	int id;
	uint64_t last[DN_PRIV + DN_SHARED];
};

static void *dn_main(void *arg)
{
	struct dn_thread *t = arg;
	struct dn_race *d = t->d;
	uint64_t seed = 0xd0d0 + (uint64_t)t->id, ctr = 0;

	atomic_fetch_add(&d->started, 1);
	for (uint64_t it = 0; pace(it, DN_OPS_PER_ZAP, &d->steps, &d->stop); it++) {
		uint64_t x = tu_rand(&seed), fa, v = 0;
		unsigned int p = (unsigned int)(x % (DN_PRIV + DN_SHARED));
		bool shared = p >= DN_PRIV;
		uint64_t addr = (shared ? d->shared + (p - DN_PRIV) * PG : BASE + p * PG) +
				(uint64_t)t->id * 8;
		struct page *pg;
		int op = (int)((x >> 8) % 4);

		if (op == 0) {
			v = ((uint64_t)(t->id + 1) << 56) | ++ctr;
			CHECK_EQ(mm_access(d->mm, addr, &v, 8, 1, &fa), 0);
			t->last[p] = v;
		} else if (op == 1 || op == 2) {
			if (op == 1) {
				CHECK_EQ(mm_access(d->mm, addr, &v, 8, 0, &fa), 0);
			} else {
				CHECK_EQ(mm_get_user_pages(d->mm, addr & ~(PG - 1), 1, (x >> 12) & 1,
							   &pg, &fa), 0);
				memcpy(&v, mm_page_data(pg) + t->id * 8, 8);
				mm_unpin_page(pg);
			}
			if (v == 0 && !shared) {
				atomic_fetch_add_explicit(&d->zero_reads, 1, memory_order_relaxed);
			} else {
				atomic_fetch_add_explicit(&d->value_reads, 1, memory_order_relaxed);
				CHECK_MSG(v == t->last[p], "%s page %u thread %d: read %#llx, last wrote "
					  "%#llx", shared ? "shared" : "private", p, t->id,
					  (unsigned long long)v, (unsigned long long)t->last[p]);
			}
		} else {
			CHECK_EQ(mm_fault(d->mm, addr, (x >> 12) & 1), 0);
		}
		atomic_fetch_add_explicit(&d->ops, 1, memory_order_relaxed);
	}
	return NULL;
}

static void t_race_dontneed_vs_faults(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live();
	struct dn_race d = { .mm = mm, .shared = BASE + 64 * PG };
	struct dn_thread th[DN_THREADS];
	uint64_t seed = 4242, deadline = tu_now_ns() + RACE_BUDGET_MS * TU_NS_PER_MS;
	int done = 0;

	map_at(mm, BASE, DN_PRIV, RW, ANON_PRIV);
	map_at(mm, d.shared, DN_SHARED, RW, ANON_SHARED);
	for (uint64_t i = 0; i < DN_SHARED; i++)
		CHECK_EQ(mm_fault(mm, d.shared + i * PG, 1), 0);	/* the shared pages exist */
	for (int i = 0; i < DN_THREADS; i++) {
		th[i] = (struct dn_thread){ .d = &d, .id = i };
		tu_create(&th[i].th, dn_main, &th[i]);
	}
	EXPECT_SPIN(atomic_load(&d.started) == DN_THREADS);
	for (int i = 0; i < DN_ZAPS && tu_now_ns() < deadline; i++, done++) {
		uint64_t x = tu_rand(&seed);
		bool shared = (x >> 20) % 4 == 0;
		uint64_t npages = shared ? DN_SHARED : DN_PRIV;
		uint64_t first = x % npages, n = 1 + (x >> 8) % 4;

		if (first + n > npages)
			n = npages - first;
		CHECK_EQ(mm_madvise(mm, (shared ? d.shared : BASE) + first * PG, n * PG,
				    MADV_DONTNEED), 0);
		atomic_fetch_add(&d.steps, 1);
		sched_yield();
	}
	atomic_store(&d.stop, 1);
	for (int i = 0; i < DN_THREADS; i++)
		JOIN(th[i].th, "dontneed racer");
	printf("    %d of %d DONTNEEDs in the time budget, against %llu operations: %llu reads "
	       "of a value, %llu of a dropped private page\n",
	       done, DN_ZAPS, (unsigned long long)d.ops, (unsigned long long)d.value_reads,
	       (unsigned long long)d.zero_reads);
	CHECK(done >= RACE_MIN_STEPS);
	check_consistent(mm, BASE, BASE + 128 * PG, 1);
	CHECK_EQ(mm_madvise(mm, BASE, 128 * PG, MADV_DONTNEED), -ENOMEM);	/* holes */
	CHECK_EQ(mm_nr_pages(mm), 0);
	CHECK_EQ(page_nr_live(), live0 + DN_SHARED);	/* the shared pages stay */
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
}

/*
 * exit_mmap while threads fault and access: everything before it succeeds,
 * everything that starts after it returned fails with SEGV_MAPERR.
 */
#define EXIT_THREADS 3

struct exit_race {
	struct mm_struct *mm;
	_Atomic int exited, started;
	_Atomic uint64_t before, after;
};

static void *exit_racer(void *arg)
{
	struct exit_race *e = arg;
	uint64_t seed = (uint64_t)(uintptr_t)&seed | 1, after = 0;

	atomic_fetch_add(&e->started, 1);
	for (long it = 0; after < 200 && it < 10000000; it++) {
		uint64_t x = tu_rand(&seed), fa, v = x;
		uint64_t addr = BASE + (x % 64) * PG + 8 * ((x >> 8) % 8);
		bool late = atomic_load(&e->exited);
		int rc;

		switch ((x >> 16) % 3) {
		case 0: rc = mm_fault(e->mm, addr, (x >> 20) & 1); break;
		case 1: rc = mm_access(e->mm, addr, &v, 8, 0, &fa); break;
		default: rc = mm_access(e->mm, addr & ~7ull, &v, 8, 0, &fa); break;
		}
		if (late) {
			CHECK_EQ(rc, SEGV_MAPERR);
			after++;
		} else {
			CHECK_MSG(rc == 0 || rc == SEGV_MAPERR, "rc %d", rc);
			atomic_fetch_add_explicit(&e->before, 1, memory_order_relaxed);
		}
	}
	atomic_fetch_add(&e->after, after);
	return NULL;
}

static void t_race_exit_mmap_vs_faults(void)
{
	struct mm_struct *mm = new_mm();
	size_t live0 = page_nr_live();
	struct exit_race e = { .mm = mm };
	pthread_t th[EXIT_THREADS];

	map_at(mm, BASE, 64, RW, ANON_PRIV);
	for (int i = 0; i < EXIT_THREADS; i++)
		tu_create(&th[i], exit_racer, &e);
	EXPECT_SPIN(atomic_load(&e.started) == EXIT_THREADS && atomic_load(&e.before) >= 500);
	CHECK_EQ(mm_exit_mmap(mm), 0);
	atomic_store(&e.exited, 1);
	for (int i = 0; i < EXIT_THREADS; i++)
		JOIN(th[i], "exit racer");
	CHECK_EQ(e.after, EXIT_THREADS * 200);
	CHECK_EQ(mm_nr_pages(mm), 0);
	printf("    %llu accesses before exit_mmap, %llu after\n", (unsigned long long)e.before,
	       (unsigned long long)e.after);
	free_mm(mm);
	CHECK_EQ(page_nr_live(), live0);
}

/*
 * A write pin keeps seeing the mm's writes, as on Linux 5.19+: the page is
 * not copied away from it by a write fault after mprotect, nor by the
 * parent's write after a fork (the child gets the copy instead).
 */
static uint64_t page_word(const struct page *p)
{
	uint64_t v;

	memcpy(&v, mm_page_data(p), sizeof(v));
	return v;
}

static void t_pins_stay_with_the_mm(void)
{
	struct mm_struct *mm = new_mm(), *child;
	struct page *pin;
	uint64_t fa, v;
	int err;

	CHECK_EQ(mm_mmap(mm, BASE, PG, RW, ANON_PRIV | MAP_FIXED), (int64_t)BASE);
	v = 1;
	CHECK_EQ(mm_access(mm, BASE, &v, sizeof(v), 1, &fa), 0);
	CHECK_EQ(mm_get_user_pages(mm, BASE, 1, 1, &pin, &fa), 0);
	CHECK_EQ(mm_mprotect(mm, BASE, PG, PROT_READ), 0);
	CHECK_EQ(mm_mprotect(mm, BASE, PG, RW), 0);
	v = 2;
	CHECK_EQ(mm_access(mm, BASE, &v, sizeof(v), 1, &fa), 0);
	CHECK_EQ(page_word(pin), 2u);
	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	v = 3;
	CHECK_EQ(mm_access(mm, BASE, &v, sizeof(v), 1, &fa), 0);
	CHECK_EQ(page_word(pin), 3u);			/* the parent kept its pinned page */
	CHECK_EQ(mm_access(child, BASE, &v, sizeof(v), 0, &fa), 0);
	CHECK_EQ(v, 2u);				/* the child got a copy at fork */
	mm_unpin_page(pin);
	free_mm(child);
	free_mm(mm);
}

static const struct tu_test tests[] = {
	TU_TEST(t_pins_stay_with_the_mm),
	TU_TEST(t_mmap_placement_and_merging),
	TU_TEST(t_mmap_fixed_replaces),
	TU_TEST(t_mmap_errors),
	TU_TEST(t_munmap_splits),
	TU_TEST(t_mprotect),
	TU_TEST(t_brk),
	TU_TEST(t_madvise),
	TU_TEST(t_madvise_dontfork),
	TU_TEST(t_madvise_wipeonfork),
	TU_TEST(t_madvise_populate),
	TU_TEST(t_fork_cow),
	TU_TEST(t_fork_debug_lockdep),
	TU_TEST(t_access_and_fault),
	TU_TEST(t_get_user_pages),
	TU_TEST(t_notifiers),
	TU_TEST(t_notifier_exit_empty_mm_pairs),
	TU_TEST(t_maps),
	TU_TEST(t_exit_mmap),
	TU_TEST(t_notifier_reentry_refused),
	TU_TEST(t_max_map_count),
	TU_TEST(t_max_map_count_merging_at_limit),
	TU_TEST(t_race_faults_vs_munmap_mprotect),
	TU_TEST(t_race_first_touch_one_page),
	TU_TEST(t_race_pins_survive_munmap),
	TU_TEST(t_race_fork_vs_faults),
	TU_TEST(t_race_dontneed_vs_faults),
	TU_TEST(t_race_exit_mmap_vs_faults),
};

int main(int argc, char **argv)
{
	return tu_run_designs("test_mm", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc, argv,
			      NULL);
}
