/* SPDX-License-Identifier: MIT */
/*
 * bench_vma_lookup.c - cost of vma_find() (the kernel's find_vma()) as the
 * number of VMAs grows: 10, 1000 and 60000 (a big process's map count).
 *
 * Each tree holds one-page VMAs separated by one-page gaps, inserted in a
 * random order, with the nodes laid out in memory in that insertion order
 * (as a slab would hand them out), so neighbours in the address space are
 * not neighbours in memory.  Two kinds of lookup per size:
 *
 *   random  addresses drawn uniformly over the whole mapped range, in a
 *           random but fixed order (a table of 65536, the same seed every
 *           run): every level of the tree is visited and, at 60000 VMAs
 *           (about 5 MB of nodes), the lower levels come from beyond L2.
 *   hot     addresses within 8 neighbouring VMAs in the middle of the
 *           range: the same short set of paths every time, all in L1, so
 *           this is the comparisons alone.
 *
 * Each lookup's address depends on the previous lookup's result (through a
 * zero the compiler cannot see), so lookups do not overlap in the CPU and
 * the figure is the latency of one find_vma(), as a page fault pays it.
 *
 * Every round times --iters lookups of each of the six variants, in an
 * order rotating from round to round; figures are medians over rounds of ns
 * per lookup, and ratios between sizes are medians of per-round ratios,
 * printed next to the ratio of log2(n): a balanced tree's cost should track
 * the latter (plus cache misses, for random lookups in the big tree).
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"
#include "vma.h"

#define PAGE		4096ull
#define BASE		0x7f0000000000ull	/* where mmap puts things on x86-64 */
#define NADDRS		65536u			/* lookup addresses per table (power of 2) */
#define HOT_VMAS	8u

/* Size 1 is the baseline: the call and the loop, with a one-node "descent". */
enum { NSIZES = 4 };
static const unsigned int sizes[NSIZES] = { 1, 10, 1000, 60000 };

enum { RANDOM, HOT, NMODES };
static const char *const mode_name[NMODES] = { "random", "hot" };

#define NVARIANTS (NSIZES * NMODES)

struct setup {
	struct vma_tree tree;
	struct vm_area_struct *nodes;
	uint64_t *addrs[NMODES];
	long expect_hits[NMODES];	/* lookups per NADDRS that land inside a VMA */
};

static struct setup setups[NSIZES];

/* xorshift64*: the address tables and insertion orders are the same every run. */
static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* VMA k is [BASE + (2k + 1) pages, BASE + (2k + 2) pages): a gap precedes each. */
static void build(struct setup *su, unsigned int n, uint64_t *seed)
{
	unsigned int *perm = malloc(n * sizeof(*perm));
	uint64_t lo, span;
	unsigned int k0;

	su->nodes = calloc(n, sizeof(*su->nodes));
	if (!perm || !su->nodes)
		bu_die("out of memory");
	for (unsigned int i = 0; i < n; i++)
		perm[i] = i;
	for (unsigned int i = n - 1; i > 0; i--) {
		unsigned int j = (unsigned int)(rnd(seed) % (i + 1)), x = perm[i];

		perm[i] = perm[j];
		perm[j] = x;
	}
	vma_tree_init(&su->tree);
	for (unsigned int i = 0; i < n; i++) {
		struct vm_area_struct *v = &su->nodes[i];

		v->vm_start = BASE + (2ull * perm[i] + 1) * PAGE;
		v->vm_end = v->vm_start + PAGE;
		if (vma_tree_insert(&su->tree, v))
			bu_die("insert failed at n=%u", n);
	}
	free(perm);
	{
		const char *why;

		if (vma_tree_check(&su->tree, &why))
			bu_die("tree broken at n=%u: %s", n, why);
	}

	/* Any address below the last VMA's end finds a VMA: never NULL. */
	k0 = n / 2 > HOT_VMAS / 2 ? n / 2 - HOT_VMAS / 2 : 0;
	for (int m = 0; m < NMODES; m++) {
		su->addrs[m] = malloc(NADDRS * sizeof(uint64_t));
		if (!su->addrs[m])
			bu_die("out of memory");
		lo = m == RANDOM ? BASE : BASE + 2ull * k0 * PAGE;
		span = 2ull * (m == RANDOM || n < HOT_VMAS ? n : HOT_VMAS) * PAGE;
		su->expect_hits[m] = 0;
		for (unsigned int i = 0; i < NADDRS; i++) {
			uint64_t a = lo + rnd(seed) % span;

			su->addrs[m][i] = a;
			su->expect_hits[m] += vma_lookup(&su->tree, a) != NULL;
		}
	}
}

/* log2 by repeated squaring: the benchmarks link without libm. */
static double lg2(double x)
{
	double r = 0.0, bit = 1.0;

	while (x >= 2.0) {
		x /= 2.0;
		r += 1.0;
	}
	for (int i = 0; i < 40; i++) {
		bit /= 2.0;
		x *= x;
		if (x >= 2.0) {
			x /= 2.0;
			r += bit;
		}
	}
	return r;
}

static volatile uint64_t zero_source;	/* always 0; the compiler cannot know */

/* Returns how many of the @iters lookups found a VMA containing their address. */
__attribute__((noinline)) static long lookup_loop(const struct vma_tree *t, const uint64_t *addrs,
						  long iters)
{
	uint64_t zero = zero_source, dep = 0;
	long hits = 0;

	for (long i = 0; i < iters; i++) {
		uint64_t addr = addrs[(size_t)i & (NADDRS - 1)] + dep;
		struct vm_area_struct *v = vma_find(t, addr);

		if (!v)
			bu_die("vma_find(%#llx) found nothing", (unsigned long long)addr);
		hits += v->vm_start <= addr;
		dep = v->vm_start & zero;	/* the next address waits for this result */
	}
	return hits;
}

/* ns per lookup of one timed loop. */
static double time_variant(int var, long iters)
{
	struct setup *su = &setups[var / NMODES];
	int m = var % NMODES;
	uint64_t t0, t1;
	long hits;

	t0 = bu_now_ns();
	hits = lookup_loop(&su->tree, su->addrs[m], iters);
	t1 = bu_now_ns();
	/* Whole tables give an exact count; a partial one only a bound. */
	if ((iters % NADDRS == 0 && hits != su->expect_hits[m] * (iters / NADDRS)) || hits > iters)
		bu_die("n=%u %s: %ld hits, expected %ld", sizes[var / NMODES], mode_name[m], hits,
		       su->expect_hits[m] * (iters / NADDRS));
	return (double)(t1 - t0) / (double)iters;
}

int main(int argc, char **argv)
{
	long rounds = 15, iters = 1 << 20;
	const char *json_path = NULL;
	const struct bu_opt opts[] = {
		{ "--rounds", BU_OPT_INT, &rounds, "alternated rounds" },
		{ "--iters", BU_OPT_INT, &iters, "lookups per variant per round" },
		{ "--json", BU_OPT_STR, &json_path, "also write the figures as JSON to this path" },
	};
	/* Ratios between sizes: larger index over smaller. */
	static const int pairs[][2] = { { 2, 1 }, { 3, 2 }, { 3, 1 } };
	enum { NPAIRS = sizeof(pairs) / sizeof(pairs[0]) };
	double *ns[NVARIANTS], med[NVARIANTS], above[NVARIANTS];
	double *ratio[NPAIRS][NMODES], med_ratio[NPAIRS][NMODES];
	uint64_t seed = 0x76d4a1f0c3b2e195ull;
	struct bu_json *j;
	char key[64];

	bu_parse_args(argc, argv,
		      "vma_find() latency at 10, 1000 and 60000 VMAs, random and hot addresses.",
		      opts, sizeof(opts) / sizeof(opts[0]));
	if (rounds < 1 || iters < 1)
		bu_die("--rounds and --iters must be >= 1");

	for (int s = 0; s < NSIZES; s++)
		build(&setups[s], sizes[s], &seed);
	for (int v = 0; v < NVARIANTS; v++) {
		ns[v] = calloc((size_t)rounds, sizeof(double));
		if (!ns[v])
			bu_die("out of memory");
	}
	for (int p = 0; p < NPAIRS; p++)
		for (int m = 0; m < NMODES; m++) {
			ratio[p][m] = calloc((size_t)rounds, sizeof(double));
			if (!ratio[p][m])
				bu_die("out of memory");
		}

	bu_progress("bench_vma_lookup: %ld rounds x %ld lookups x %d variants (+1 warm-up round)\n",
		    rounds, iters, NVARIANTS);

	for (int v = 0; v < NVARIANTS; v++)
		(void)time_variant(v, iters);

	for (long r = 0; r < rounds; r++) {
		for (int k = 0; k < NVARIANTS; k++) {
			int v = bu_round_variant(k, r, NVARIANTS);

			ns[v][r] = time_variant(v, iters);
		}
		for (int p = 0; p < NPAIRS; p++)
			for (int m = 0; m < NMODES; m++)
				ratio[p][m][r] = ns[pairs[p][0] * NMODES + m][r] /
						 ns[pairs[p][1] * NMODES + m][r];
		if ((r + 1) % 5 == 0 || r + 1 == rounds) {
			bu_progress("  round %ld/%ld:", r + 1, rounds);
			for (int m = 0; m < NMODES; m++) {
				bu_progress(" %s", mode_name[m]);
				for (int s = 0; s < NSIZES; s++)
					bu_progress("%c%.1f", s ? '/' : ' ', ns[s * NMODES + m][r]);
			}
			bu_progress(" ns (n = 1/10/1000/60000)\n");
		}
	}

	for (int v = 0; v < NVARIANTS; v++)
		med[v] = bu_median(ns[v], (size_t)rounds);
	for (int p = 0; p < NPAIRS; p++)
		for (int m = 0; m < NMODES; m++)
			med_ratio[p][m] = bu_median(ratio[p][m], (size_t)rounds);
	/* What the descent itself costs: the time above the one-node baseline. */
	for (int v = 0; v < NVARIANTS; v++)
		above[v] = med[v] - med[v % NMODES];

	bu_print_env("bench_vma_lookup");
	printf("%ld alternated rounds x %ld dependent lookups; median ns per vma_find()\n\n",
	       rounds, iters);
	printf("%8s %8s %9s %9s %11s %9s %9s %11s\n", "VMAs", "log2(n)", "random", "(min)",
	       "above n=1", "hot", "(min)", "above n=1");
	for (int s = 0; s < NSIZES; s++) {
		printf("%8u %8.2f", sizes[s], lg2(sizes[s]));
		for (int m = 0; m < NMODES; m++)
			printf(" %9.2f %9.2f %11.2f", med[s * NMODES + m],
			       bu_min(ns[s * NMODES + m], (size_t)rounds), above[s * NMODES + m]);
		printf("%s\n", s ? "" : "   (baseline: call + loop)");
	}
	printf("\n%-12s %11s %9s %9s %11s %11s\n", "ratio", "log2 ratio", "random", "hot",
	       "random>n=1", "hot>n=1");
	for (int p = 0; p < NPAIRS; p++) {
		int a = pairs[p][0], b = pairs[p][1];

		snprintf(key, sizeof(key), "%u/%u", sizes[a], sizes[b]);
		printf("%-12s %10.2fx %8.2fx %8.2fx %10.2fx %10.2fx\n", key,
		       lg2(sizes[a]) / lg2(sizes[b]), med_ratio[p][RANDOM], med_ratio[p][HOT],
		       above[a * NMODES + RANDOM] / above[b * NMODES + RANDOM],
		       above[a * NMODES + HOT] / above[b * NMODES + HOT]);
	}
	printf("(random, hot: medians of per-round ratios of the totals; \"> n=1\": ratios of the\n"
	       " medians less the one-node baseline.  A linear scan would show 6000x for 60000/10.)\n");

	j = bu_json_open(json_path);
	bu_json_obj_begin(j, NULL);
	bu_json_env(j, "bench_vma_lookup");
	bu_json_int(j, "rounds", rounds);
	bu_json_int(j, "iters_per_round", iters);
	bu_json_str(j, "unit", "ns_per_lookup");
	bu_json_arr_begin(j, "sizes");
	for (int s = 0; s < NSIZES; s++) {
		bu_json_obj_begin(j, NULL);
		bu_json_int(j, "vmas", sizes[s]);
		bu_json_num(j, "log2_n", lg2(sizes[s]));
		for (int m = 0; m < NMODES; m++) {
			snprintf(key, sizeof(key), "%s_median_ns", mode_name[m]);
			bu_json_num(j, key, med[s * NMODES + m]);
			snprintf(key, sizeof(key), "%s_per_round_ns", mode_name[m]);
			bu_json_nums(j, key, ns[s * NMODES + m], (size_t)rounds);
			snprintf(key, sizeof(key), "%s_above_baseline_ns", mode_name[m]);
			bu_json_num(j, key, above[s * NMODES + m]);
		}
		bu_json_obj_end(j);
	}
	bu_json_arr_end(j);
	bu_json_arr_begin(j, "ratios");
	for (int p = 0; p < NPAIRS; p++) {
		unsigned int a = sizes[pairs[p][0]], b = sizes[pairs[p][1]];

		bu_json_obj_begin(j, NULL);
		bu_json_int(j, "vmas", a);
		bu_json_int(j, "over_vmas", b);
		bu_json_num(j, "log2_ratio", lg2(a) / lg2(b));
		bu_json_num(j, "random_median_per_round", med_ratio[p][RANDOM]);
		bu_json_num(j, "hot_median_per_round", med_ratio[p][HOT]);
		bu_json_num(j, "random_above_baseline",
			    above[pairs[p][0] * NMODES + RANDOM] / above[pairs[p][1] * NMODES + RANDOM]);
		bu_json_num(j, "hot_above_baseline",
			    above[pairs[p][0] * NMODES + HOT] / above[pairs[p][1] * NMODES + HOT]);
		bu_json_obj_end(j);
	}
	bu_json_arr_end(j);
	bu_json_obj_end(j);
	bu_json_close(j, json_path);

	for (int v = 0; v < NVARIANTS; v++)
		free(ns[v]);
	for (int p = 0; p < NPAIRS; p++)
		for (int m = 0; m < NMODES; m++)
			free(ratio[p][m]);
	for (int s = 0; s < NSIZES; s++) {
		free(setups[s].nodes);
		for (int m = 0; m < NMODES; m++)
			free(setups[s].addrs[m]);
	}
	return 0;
}
