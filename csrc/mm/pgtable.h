/* SPDX-License-Identifier: MIT */
/*
 * pgtable.h - pages and the page table of an emulated mm.
 *
 * A 4-level radix table of 4 KiB pages over a 48-bit address space (9 bits
 * of index per level, like x86-64's PGD/PUD/PMD/PTE).  Upper levels are
 * installed with compare-and-swap, so concurrent faults agree on one table;
 * each leaf table (512 PTEs, 2 MiB of address space) has its own small lock,
 * the split page-table lock of the kernel, taken to install, change or read
 * a PTE together with a reference on its page: faults on different pages
 * proceed in parallel, faults on one page install exactly one.
 *
 * A PTE is a struct page pointer with flag bits in its low bits (0 = none).
 * Every PTE holds a reference on its page; pinning (get_user_pages) takes
 * another, so a pinned page outlives its PTE.
 */
#ifndef MLN_PGTABLE_H
#define MLN_PGTABLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MLN_PAGE_SHIFT 12
#define MLN_PAGE_SIZE (1ull << MLN_PAGE_SHIFT)
#define MLN_PAGE_MASK (~(MLN_PAGE_SIZE - 1))
#define MLN_VA_BITS 48		/* addresses are below 2^48 */
#define MLN_PTRS_PER_TABLE 512

struct page {
	_Atomic uint32_t refcount;	/* PTEs, pins, and any transient holder */
	_Atomic uint32_t pincount;	/* of which get_user_pages pins */
	uint8_t *data;			/* MLN_PAGE_SIZE bytes, page aligned */
};

/* A new page with refcount 1: zero-filled, or a copy of @src if non-NULL.  NULL on ENOMEM. */
struct page *page_alloc(const struct page *src);
/*
 * A page whose data is frame @frame of the frame file (frames.h), as it is
 * (no zeroing, no copy), with refcount 1 and a frame reference of its own,
 * dropped when the page is freed.  NULL on ENOMEM.
 */
struct page *page_alloc_frame(uint32_t frame);
void page_get(struct page *p);
/* Drop a reference; the last one frees the page. */
void page_put(struct page *p);

/* PTE flag bits (struct page is 8-byte aligned: three low bits are free). */
#define PTE_WRITE 1u		/* writable; clear = read-only (maybe copy-on-write) */
#define PTE_FLAGS 7u

typedef uintptr_t pte_t;

static inline struct page *pte_page(pte_t pte)
{
	return (struct page *)(pte & ~(uintptr_t)PTE_FLAGS);
}

/*
 * Where a page of a host-backed mm lives in host memory (host_backing.c):
 * window address @host (0: none yet) shows frame @frame, on which the slot
 * holds a reference.  Where the PTE is present, its page is that frame.
 */
struct host_slot {
	uintptr_t host;
	uint32_t frame;
	uint32_t unused;
};

/*
 * The lock and the count have a cache line of their own: a fault installing
 * a page writes them, and a fault merely looking up a present PTE of the
 * same leaf (another thread's, lockless) should not have to fetch them.
 */
struct pte_table {
	_Atomic uint32_t lock;		/* futex mutex (futex.h): the split PT lock */
	uint32_t nr_present;		/* PTEs in use, under lock */
	struct host_slot *slots;	/* host-backed mm: by PTE index, or NULL; under lock */
	uint32_t nr_slots;		/* slots with a host address, under lock */
	_Atomic pte_t pte[MLN_PTRS_PER_TABLE] __attribute__((aligned(64)));
};

/* @addr's slot in leaf @t (which has a slot array): under the leaf lock. */
static inline struct host_slot *host_slot_of(struct pte_table *t, uint64_t addr)
{
	return &t->slots[(addr >> MLN_PAGE_SHIFT) & (MLN_PTRS_PER_TABLE - 1)];
}

/*
 * PTEs in use, counted per thread (thread_index.h) and summed when read, as
 * the kernel's per-CPU rss counters are: a fault writes only its own
 * thread's line.  A thread's count may go negative (it zapped pages another
 * thread faulted in); the sum cannot.
 */
struct pgtable_count {
	_Atomic int64_t pages;
} __attribute__((aligned(64)));

struct pgtable {
	void *_Atomic top[MLN_PTRS_PER_TABLE];	/* level 4 */
	_Atomic size_t nr_tables;		/* tables of every level, for accounting */
	struct pgtable_count *nr_pages;		/* by thread number; [0] unused */
};

/* 0, or -ENOMEM. */
int pgtable_init(struct pgtable *pt);
/* Drop every PTE's page reference and free every table and counter
 * (pgtable_init() makes it usable again). */
void pgtable_destroy(struct pgtable *pt);

/*
 * The leaf table covering @addr, installing missing levels when @alloc
 * (lock-free; concurrent callers end with the same table).  NULL if absent
 * (!@alloc) or out of memory.
 */
struct pte_table *pgtable_leaf(struct pgtable *pt, uint64_t addr, int alloc);

static inline _Atomic pte_t *pte_slot(struct pte_table *t, uint64_t addr)
{
	return &t->pte[(addr >> MLN_PAGE_SHIFT) & (MLN_PTRS_PER_TABLE - 1)];
}

void pte_table_lock(struct pte_table *t);
void pte_table_unlock(struct pte_table *t);

/*
 * Whether the PTE of @addr is present, and writable if @write, read without
 * the leaf lock: a fault on a page mapped already writes nothing.  The
 * answer is true at some instant of the call; the caller's mmap or VMA read
 * lock keeps what the VMA allows from changing (docs/mm.md gives the
 * argument).
 */
static inline int pte_present_for(struct pte_table *t, uint64_t addr, int write)
{
	/* Acquire: pairs with the PTE store's release, as a locked reader would. */
	pte_t pte = atomic_load_explicit(pte_slot(t, addr), memory_order_acquire);

	return pte && (!write || (pte & PTE_WRITE));
}

/*
 * Under the leaf's lock: set an empty PTE (taking over one reference of the
 * page), replace one, or clear one (returning the old value, whose page
 * reference now belongs to the caller).  They keep nr_present and nr_pages.
 */
void pte_install_locked(struct pgtable *pt, struct pte_table *t, uint64_t addr, pte_t pte);
pte_t pte_replace_locked(struct pte_table *t, uint64_t addr, pte_t pte);
pte_t pte_clear_locked(struct pgtable *pt, struct pte_table *t, uint64_t addr);

/*
 * Range operations over [start, end) (page aligned), for callers holding the
 * mmap_lock in the mode the operation needs; each takes the leaf locks.
 *   zap:       clear every PTE and put its page (munmap, madvise DONTNEED);
 *              slots of a host-backed mm go too (unmapped from the window)
 *   wrprotect: clear PTE_WRITE (mprotect away from write, fork's COW)
 *   copy:      make @dst's PTEs share @src's pages (page_get each); with
 *              @cow, clear PTE_WRITE in both (fork of a private mapping)
 * pgtable_copy returns 0 or -ENOMEM (what was copied stays; the caller
 * zaps it).  The others return the number of PTEs they changed.
 */
size_t pgtable_zap(struct pgtable *pt, uint64_t start, uint64_t end);
size_t pgtable_wrprotect(struct pgtable *pt, uint64_t start, uint64_t end);
int pgtable_copy(struct pgtable *dst, struct pgtable *src, uint64_t start, uint64_t end,
		 int cow);

/*
 * Move the PTEs of [src, src + len) to [dst, dst + len), which has none
 * (mremap): 0, or -ENOMEM with nothing moved.  The caller holds the mmap
 * write lock, so no fault runs on either range.
 */
int pgtable_move(struct pgtable *pt, uint64_t src, uint64_t dst, uint64_t len);

/*
 * Call @fn on each present leaf over [start, end) (page aligned), with the
 * leaf's base address and its PTE indexes [lo, hi); a negative return stops
 * the walk and is returned, else the sum of the returns.  No lock is taken.
 */
typedef long (*pgtable_leaf_fn)(void *arg, struct pte_table *t, uint64_t base, unsigned int lo,
				unsigned int hi);
long pgtable_walk(struct pgtable *pt, uint64_t start, uint64_t end, pgtable_leaf_fn fn,
		  void *arg);
/* Make leaf @t's slot array if it has none (under the leaf lock): 0 or -ENOMEM. */
int pte_slots_alloc(struct pte_table *t);

/* Bytes of table memory (all levels); pages mapped. */
size_t pgtable_bytes(const struct pgtable *pt);
size_t pgtable_nr_pages(const struct pgtable *pt);

#endif /* MLN_PGTABLE_H */
