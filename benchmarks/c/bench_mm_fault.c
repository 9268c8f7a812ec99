/* SPDX-License-Identifier: MIT */
/*
 * bench_mm_fault.c - C-level cost of the emulated mm's fault path (mm.h),
 * one thread, and the metadata it keeps per mapped page.
 *
 *   first-touch fault    mm_fault(write) on a never-touched page of a fresh
 *                        --iters-page private mapping, in address order: the
 *                        read lock, the VMA lookup, the leaf walk, a page
 *                        from the slab and the PTE install, with the page
 *                        tables (one leaf per 512 faults) and the slabs (one
 *                        2 MiB mmap per 510 pages) allocated on the way.  The
 *                        page's data is not touched: a never-used slab page
 *                        is the host kernel's zero page until written.
 *   first-touch access   the same through mm_access(write, 8 bytes), which
 *                        also writes the data, so the host's own first-touch
 *                        fault (its zeroing of the 4 KiB) is in the figure.
 *   present fault W / R  mm_fault(write / read) on a present writable page
 *                        of a fully faulted 512-page (one leaf) mapping,
 *                        pages in address order, wrapping.
 *   access R / W 8 B     mm_access of 8 bytes, read / write, on those pages.
 *
 * The first-touch variants map before and unmap after the timed loop (not
 * timed); every variant runs --iters operations per round, in an order that
 * rotates from round to round, after one warm-up round; figures are medians
 * over rounds of ns per operation, with the min and max.
 *
 * Metadata: a fresh mm, one private mapping of 1, 512 or 32768 pages placed
 * by mmap (top-down from MM_MMAP_BASE, so 2 MiB-aligned at its top end),
 * every page write-faulted; then per mapped page: the page-table bytes (the
 * tables below the top level, which is 4 KiB inside struct mm_struct and
 * counted separately), the struct page (16 bytes, plus the slab's two
 * descriptor pages per 510 data pages), and the VMA's share.  Reported both
 * as the structures' sizes and as what malloc really holds for the tables
 * and the VMA (malloc_usable_size plus the chunk header).
 *
 *   bench_mm_fault [--rounds N] [--iters N] [--json PATH]
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "mm.h"
#include "mmap_lock.h"
#include "pgtable.h"
#include "vma.h"

#define PG ((uint64_t)MM_PAGE_SIZE)
#define RW (PROT_READ | PROT_WRITE)
#define PRESENT_PAGES 512u
#define MALLOC_HEADER 8u	/* glibc's chunk size word, in front of each block */

enum { FIRST_FAULT, FIRST_ACCESS, PRESENT_FAULT_W, PRESENT_FAULT_R, ACCESS_R, ACCESS_W,
       NVARIANTS };

static const char *const variant_name[NVARIANTS] = {
	"first-touch fault (mm_fault W, fresh page)",
	"first-touch access (mm_access W 8 B, fresh page)",
	"present fault W (mm_fault, writable PTE)",
	"present fault R (mm_fault)",
	"access R 8 B (mm_access, present page)",
	"access W 8 B (mm_access, present page)",
};

static const char *const variant_key[NVARIANTS] = {
	"first_touch_fault", "first_touch_access", "present_fault_write", "present_fault_read",
	"access_read_8", "access_write_8",
};

static struct mm_struct *mm;
static uint64_t present_base;

static void die_rc(const char *what, long rc)
{
	bu_die("%s failed: %ld", what, rc);
}

/* ns per operation of one timed loop of @iters operations of variant @v. */
static double time_variant(int v, long iters)
{
	uint64_t base = 0, fa, val = 0, t0, t1;
	long err = 0;

	if (v == FIRST_FAULT || v == FIRST_ACCESS) {
		int64_t a = mm_mmap(mm, 0, (uint64_t)iters * PG, RW, MAP_ANONYMOUS | MAP_PRIVATE);

		if (a < 0)
			die_rc("mm_mmap", (long)a);
		base = (uint64_t)a;
	}
	t0 = bu_now_ns();
	switch (v) {
	case FIRST_FAULT:
		for (long i = 0; i < iters; i++)
			err += mm_fault(mm, base + (uint64_t)i * PG, 1);
		break;
	case FIRST_ACCESS:
		for (long i = 0; i < iters; i++) {
			val = (uint64_t)i;
			err += mm_access(mm, base + (uint64_t)i * PG, &val, 8, 1, &fa);
		}
		break;
	case PRESENT_FAULT_W:
	case PRESENT_FAULT_R:
		for (long i = 0; i < iters; i++)
			err += mm_fault(mm, present_base + (uint64_t)(i % PRESENT_PAGES) * PG,
					v == PRESENT_FAULT_W);
		break;
	case ACCESS_R:
		for (long i = 0; i < iters; i++) {
			err += mm_access(mm, present_base + (uint64_t)(i % PRESENT_PAGES) * PG + 64,
					 &val, 8, 0, &fa);
			err += (long)(val & 0);		/* a use the compiler keeps */
		}
		break;
	case ACCESS_W:
		for (long i = 0; i < iters; i++) {
			val = (uint64_t)i;
			err += mm_access(mm, present_base + (uint64_t)(i % PRESENT_PAGES) * PG + 64,
					 &val, 8, 1, &fa);
		}
		break;
	}
	t1 = bu_now_ns();
	if (err)
		bu_die("%s: calls returned a nonzero sum %ld", variant_name[v], err);
	if (base) {
		if (mm_nr_pages(mm) != PRESENT_PAGES + (size_t)iters)
			bu_die("%s: %zu pages present, want %zu", variant_name[v], mm_nr_pages(mm),
			       PRESENT_PAGES + (size_t)iters);
		if (mm_munmap(mm, base, (uint64_t)iters * PG))
			bu_die("mm_munmap failed");
	}
	return (double)(t1 - t0) / (double)iters;
}

/* ------------------------------------------------------------ metadata */

struct meta {
	unsigned int pages;
	size_t vmas, tables, pgtable_bytes, pgtable_malloc, vma_bytes, vma_malloc;
	double pgtable_pp, pgtable_malloc_pp, page_pp, vma_pp, vma_malloc_pp, total_pp,
	       total_malloc_pp;
};

static size_t chunk(void *p)
{
	return malloc_usable_size(p) + MALLOC_HEADER;
}

/* What malloc holds for the tables below the top level (the walk is pgtable.c's layout). */
static size_t tables_malloc(struct mm_struct *m, size_t *count)
{
	size_t bytes = 0, n = 0;

	for (unsigned int i = 0; i < MLN_PTRS_PER_TABLE; i++) {
		void *_Atomic *l3 = atomic_load(&m->pgt.top[i]);

		if (!l3)
			continue;
		bytes += chunk(l3), n++;
		/* A directory is a struct pte_table's size: two header words, then 512 slots. */
		void *_Atomic *slots3 = (void *_Atomic *)((char *)l3 + 8);

		for (unsigned int j = 0; j < MLN_PTRS_PER_TABLE; j++) {
			void *l2 = atomic_load(&slots3[j]);

			if (!l2)
				continue;
			bytes += chunk(l2), n++;
			void *_Atomic *slots2 = (void *_Atomic *)((char *)l2 + 8);

			for (unsigned int k = 0; k < MLN_PTRS_PER_TABLE; k++) {
				void *leaf = atomic_load(&slots2[k]);

				if (leaf)
					bytes += chunk(leaf), n++;
			}
		}
	}
	*count = n;
	return bytes;
}

static void measure_metadata(struct meta *r, unsigned int pages)
{
	struct mm_struct *m = mm_alloc(0);
	int64_t a;
	size_t ntab = 0;

	if (!m)
		bu_die("mm_alloc failed");
	a = mm_mmap(m, 0, (uint64_t)pages * PG, RW, MAP_ANONYMOUS | MAP_PRIVATE);
	if (a < 0)
		die_rc("mm_mmap", (long)a);
	for (unsigned int i = 0; i < pages; i++)
		if (mm_fault(m, (uint64_t)a + (uint64_t)i * PG, 1))
			bu_die("mm_fault failed");
	if (mm_nr_pages(m) != pages)
		bu_die("metadata: %zu pages present, want %u", mm_nr_pages(m), pages);
	memset(r, 0, sizeof(*r));
	r->pages = pages;
	r->vmas = mm_map_count(m);
	r->pgtable_bytes = mm_pgtable_bytes(m);
	r->pgtable_malloc = tables_malloc(m, &ntab);
	r->tables = ntab;
	if (ntab * sizeof(struct pte_table) != r->pgtable_bytes)
		bu_die("metadata: %zu tables walked, mm_pgtable_bytes says %zu bytes", ntab,
		       r->pgtable_bytes);
	r->vma_bytes = r->vmas * sizeof(struct vm_area_struct);
	r->vma_malloc = r->vmas * chunk(m->mm_vmas.root);
	r->pgtable_pp = (double)r->pgtable_bytes / pages;
	r->pgtable_malloc_pp = (double)r->pgtable_malloc / pages;
	/* The slab: 512 descriptors (two pages) per 510 data pages. */
	r->page_pp = (double)sizeof(struct page) * 512.0 / 510.0;
	r->vma_pp = (double)r->vma_bytes / pages;
	r->vma_malloc_pp = (double)r->vma_malloc / pages;
	r->total_pp = r->pgtable_pp + r->page_pp + r->vma_pp;
	r->total_malloc_pp = r->pgtable_malloc_pp + r->page_pp + r->vma_malloc_pp;
	if (mm_free(m))
		bu_die("mm_free failed");
}

int main(int argc, char **argv)
{
	long rounds = 11, iters = 16384;
	const char *json_path = NULL;
	const struct bu_opt opts[] = {
		{ "--rounds", BU_OPT_INT, &rounds, "alternated rounds" },
		{ "--iters", BU_OPT_INT, &iters,
		  "operations per variant per round (first touch: pages of the fresh mapping)" },
		{ "--json", BU_OPT_STR, &json_path, "also write the figures as JSON to this path" },
	};
	static const unsigned int meta_pages[] = { 1, 512, 32768 };
	enum { NMETA = sizeof(meta_pages) / sizeof(meta_pages[0]) };
	struct meta meta[NMETA];
	double *ns[NVARIANTS], med[NVARIANTS];
	struct bu_json *j;
	int64_t a;

	bu_parse_args(argc, argv,
		      "Cost of mm_fault / mm_access on fresh and present pages, and the metadata "
		      "bytes per mapped page.", opts, sizeof(opts) / sizeof(opts[0]));
	if (rounds < 1 || iters < 1)
		bu_die("--rounds and --iters must be >= 1");

	mm = mm_alloc(0);
	if (!mm)
		bu_die("mm_alloc failed");
	a = mm_mmap(mm, 0, PRESENT_PAGES * PG, RW, MAP_ANONYMOUS | MAP_PRIVATE);
	if (a < 0)
		die_rc("mm_mmap", (long)a);
	present_base = (uint64_t)a;
	for (unsigned int i = 0; i < PRESENT_PAGES; i++)
		if (mm_fault(mm, present_base + i * PG, 1))
			bu_die("prefault failed");
	for (int v = 0; v < NVARIANTS; v++) {
		ns[v] = calloc((size_t)rounds, sizeof(double));
		if (!ns[v])
			bu_die("out of memory");
	}

	bu_progress("bench_mm_fault: %ld rounds x %ld operations x %d variants (+1 warm-up round)\n",
		    rounds, iters, NVARIANTS);
	for (int v = 0; v < NVARIANTS; v++)
		(void)time_variant(v, iters);
	for (long r = 0; r < rounds; r++) {
		for (int k = 0; k < NVARIANTS; k++) {
			int pos = (int)((k + r) % NVARIANTS);
			int v = (r / NVARIANTS) % 2 ? NVARIANTS - 1 - pos : pos;

			ns[v][r] = time_variant(v, iters);
		}
		if ((r + 1) % 5 == 0 || r + 1 == rounds)
			bu_progress("  round %ld/%ld: first-touch %.1f ns, present W %.1f ns, "
				    "access R %.1f ns\n", r + 1, rounds, ns[FIRST_FAULT][r],
				    ns[PRESENT_FAULT_W][r], ns[ACCESS_R][r]);
	}
	for (int v = 0; v < NVARIANTS; v++)
		med[v] = bu_median(ns[v], (size_t)rounds);
	if (mm_free(mm))
		bu_die("mm_free failed");

	bu_progress("bench_mm_fault: metadata for 1, 512 and 32768 faulted pages\n");
	for (int i = 0; i < NMETA; i++)
		measure_metadata(&meta[i], meta_pages[i]);

	bu_print_env("bench_mm_fault");
	printf("%ld alternated rounds x %ld operations; ns per operation (one thread)\n\n", rounds,
	       iters);
	printf("%-50s %9s %9s %9s\n", "operation", "median", "min", "max");
	for (int v = 0; v < NVARIANTS; v++)
		printf("%-50s %9.1f %9.1f %9.1f\n", variant_name[v], med[v],
		       bu_min(ns[v], (size_t)rounds), bu_max(ns[v], (size_t)rounds));
	printf("\nmetadata per mapped 4 KiB page, all pages faulted (bytes; sizeof / as malloc'd)\n");
	printf("(the top-level table, %zu B inside struct mm_struct, is per mm and not counted)\n\n",
	       sizeof(((struct pgtable *)0)->top));
	printf("%6s %4s %6s %17s %21s %11s %15s %21s %8s\n", "pages", "VMAs", "tables",
	       "page tables", "page tables per page", "struct page", "VMA share", "total per page",
	       "of 4 KiB");
	for (int i = 0; i < NMETA; i++) {
		struct meta *m = &meta[i];

		printf("%6u %4zu %6zu %8zu / %6zu %9.2f / %9.2f %11.2f %6.2f / %6.2f %9.2f / %9.2f %7.2f%%\n",
		       m->pages, m->vmas, m->tables, m->pgtable_bytes, m->pgtable_malloc,
		       m->pgtable_pp, m->pgtable_malloc_pp, m->page_pp, m->vma_pp, m->vma_malloc_pp,
		       m->total_pp, m->total_malloc_pp, 100.0 * m->total_malloc_pp / (double)PG);
	}
	printf("\n(struct page: %zu B, amortised over the slab's 510 data pages per 512 slots; "
	       "struct vm_area_struct: %zu B; a table: %zu B)\n", sizeof(struct page),
	       sizeof(struct vm_area_struct), sizeof(struct pte_table));

	j = bu_json_open(json_path);
	bu_json_obj_begin(j, NULL);
	bu_json_env(j, "bench_mm_fault");
	bu_json_int(j, "rounds", rounds);
	bu_json_int(j, "iters_per_round", iters);
	bu_json_str(j, "unit", "ns_per_op");
	bu_json_obj_begin(j, "median_ns_per_op");
	for (int v = 0; v < NVARIANTS; v++)
		bu_json_num(j, variant_key[v], med[v]);
	bu_json_obj_end(j);
	bu_json_obj_begin(j, "per_round_ns_per_op");
	for (int v = 0; v < NVARIANTS; v++)
		bu_json_nums(j, variant_key[v], ns[v], (size_t)rounds);
	bu_json_obj_end(j);
	bu_json_arr_begin(j, "metadata_per_page");
	for (int i = 0; i < NMETA; i++) {
		struct meta *m = &meta[i];

		bu_json_obj_begin(j, NULL);
		bu_json_int(j, "pages", m->pages);
		bu_json_int(j, "vmas", (long long)m->vmas);
		bu_json_int(j, "tables", (long long)m->tables);
		bu_json_int(j, "pgtable_bytes", (long long)m->pgtable_bytes);
		bu_json_int(j, "pgtable_malloc_bytes", (long long)m->pgtable_malloc);
		bu_json_num(j, "pgtable_per_page", m->pgtable_pp);
		bu_json_num(j, "pgtable_malloc_per_page", m->pgtable_malloc_pp);
		bu_json_num(j, "struct_page_per_page", m->page_pp);
		bu_json_num(j, "vma_per_page", m->vma_pp);
		bu_json_num(j, "vma_malloc_per_page", m->vma_malloc_pp);
		bu_json_num(j, "total_per_page", m->total_pp);
		bu_json_num(j, "total_malloc_per_page", m->total_malloc_pp);
		bu_json_obj_end(j);
	}
	bu_json_arr_end(j);
	bu_json_obj_end(j);
	bu_json_close(j, json_path);

	for (int v = 0; v < NVARIANTS; v++)
		free(ns[v]);
	return 0;
}
