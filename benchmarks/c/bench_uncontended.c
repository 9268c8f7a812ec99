/* SPDX-License-Identifier: MIT */
/*
 * bench_uncontended.c - cost of an uncontended lock+unlock pair, one thread.
 *
 *   ours  read:  down_read(&sem);  up_read(&sem);
 *   glibc read:  pthread_rwlock_rdlock(&rw); pthread_rwlock_unlock(&rw);
 *   ours  write: down_write(&sem); up_write(&sem);
 *   glibc write: pthread_rwlock_wrlock(&rw); pthread_rwlock_unlock(&rw);
 *
 * (glibc rwlock of the default kind.)  Each round times --iters pairs of each
 * of the four variants, in an order that rotates from round to round, so
 * that drift and noise fall on all of them alike; a warm-up round is thrown
 * away.  Reported: the median over rounds of ns per pair, and the ratio
 * ours/glibc both as a ratio of the medians and as the median of the
 * per-round ratios (each round's A and B ran back to back).
 * Target: ours/glibc <= 1.0x for both pairs (benchmarks/README.md, "Targets").
 *
 * The loops cannot be elided: every call is to an external function (ours
 * from a static library, glibc's from libc.so), and their return values are
 * summed and checked.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"
#include "rwsem.h"

enum { OURS_READ, GLIBC_READ, OURS_WRITE, GLIBC_WRITE, NVARIANTS };

static const char *const variant_name[NVARIANTS] = {
	"ours read  (down_read+up_read)",
	"glibc read (rdlock+unlock)",
	"ours write (down_write+up_write)",
	"glibc write (wrlock+unlock)",
};

static const char *const variant_key[NVARIANTS] = {
	"ours_read", "glibc_read", "ours_write", "glibc_write",
};

static struct rw_semaphore sem;
static pthread_rwlock_t rw;

/* Each loop returns the sum of the calls' return values (0 when all went well). */
__attribute__((noinline)) static long loop_ours_read(long n)
{
	long err = 0;

	for (long i = 0; i < n; i++) {
		err += down_read(&sem);
		err += up_read(&sem);
	}
	return err;
}

__attribute__((noinline)) static long loop_glibc_read(long n)
{
	long err = 0;

	for (long i = 0; i < n; i++) {
		err += pthread_rwlock_rdlock(&rw);
		err += pthread_rwlock_unlock(&rw);
	}
	return err;
}

__attribute__((noinline)) static long loop_ours_write(long n)
{
	long err = 0;

	for (long i = 0; i < n; i++) {
		err += down_write(&sem);
		err += up_write(&sem);
	}
	return err;
}

__attribute__((noinline)) static long loop_glibc_write(long n)
{
	long err = 0;

	for (long i = 0; i < n; i++) {
		err += pthread_rwlock_wrlock(&rw);
		err += pthread_rwlock_unlock(&rw);
	}
	return err;
}

static long (*const loops[NVARIANTS])(long) = {
	loop_ours_read, loop_glibc_read, loop_ours_write, loop_glibc_write,
};

/* ns per pair of one timed loop. */
static double time_variant(int v, long iters)
{
	uint64_t t0, t1;
	long err;

	t0 = bu_now_ns();
	err = loops[v](iters);
	t1 = bu_now_ns();
	if (err)
		bu_die("%s: calls returned a nonzero sum %ld", variant_name[v], err);
	return (double)(t1 - t0) / (double)iters;
}

int main(int argc, char **argv)
{
	long rounds = 31, iters = 1000000;
	const char *json_path = NULL;
	const struct bu_opt opts[] = {
		{ "--rounds", BU_OPT_INT, &rounds, "alternated rounds" },
		{ "--iters", BU_OPT_INT, &iters, "lock+unlock pairs per variant per round" },
		{ "--json", BU_OPT_STR, &json_path, "also write the figures as JSON to this path" },
	};
	double *ns[NVARIANTS];
	double med[NVARIANTS];
	double *ratio_r, *ratio_w;
	double med_ratio_r, med_ratio_w;
	struct bu_json *j;

	bu_parse_args(argc, argv,
		      "Uncontended read and write lock+unlock pairs: ours vs glibc pthread_rwlock.",
		      opts, sizeof(opts) / sizeof(opts[0]));
	if (rounds < 1 || iters < 1)
		bu_die("--rounds and --iters must be >= 1");

	if (init_rwsem(&sem))
		bu_die("init_rwsem failed");
	if (pthread_rwlock_init(&rw, NULL))
		bu_die("pthread_rwlock_init failed");

	for (int v = 0; v < NVARIANTS; v++) {
		ns[v] = calloc((size_t)rounds, sizeof(double));
		if (!ns[v])
			bu_die("out of memory");
	}
	ratio_r = calloc((size_t)rounds, sizeof(double));
	ratio_w = calloc((size_t)rounds, sizeof(double));
	if (!ratio_r || !ratio_w)
		bu_die("out of memory");

	bu_progress("bench_uncontended: %ld rounds x %ld pairs x %d variants (+1 warm-up round)\n",
		    rounds, iters, NVARIANTS);

	/* Warm-up: page in the code and the locks, let the CPU clock settle. */
	for (int v = 0; v < NVARIANTS; v++)
		(void)time_variant(v, iters);

	for (long r = 0; r < rounds; r++) {
		/* Rotate the order, and reverse it every other round. */
		for (int k = 0; k < NVARIANTS; k++) {
			int v = bu_round_variant(k, r, NVARIANTS);

			ns[v][r] = time_variant(v, iters);
		}
		ratio_r[r] = ns[OURS_READ][r] / ns[GLIBC_READ][r];
		ratio_w[r] = ns[OURS_WRITE][r] / ns[GLIBC_WRITE][r];
		if ((r + 1) % 5 == 0 || r + 1 == rounds)
			bu_progress("  round %ld/%ld: read %.2f/%.2f ns, write %.2f/%.2f ns (ours/glibc)\n",
				    r + 1, rounds, ns[OURS_READ][r], ns[GLIBC_READ][r],
				    ns[OURS_WRITE][r], ns[GLIBC_WRITE][r]);
	}

	for (int v = 0; v < NVARIANTS; v++)
		med[v] = bu_median(ns[v], (size_t)rounds);
	med_ratio_r = bu_median(ratio_r, (size_t)rounds);
	med_ratio_w = bu_median(ratio_w, (size_t)rounds);

	bu_print_env("bench_uncontended");
	printf("%ld alternated rounds x %ld pairs; ns per lock+unlock pair\n\n", rounds, iters);
	printf("%-34s %10s %10s %10s\n", "variant", "median", "min", "max");
	for (int v = 0; v < NVARIANTS; v++)
		printf("%-34s %10.2f %10.2f %10.2f\n", variant_name[v], med[v],
		       bu_min(ns[v], (size_t)rounds), bu_max(ns[v], (size_t)rounds));
	printf("\n%-8s %16s %22s %8s\n", "pair", "ratio of medians", "median per-round ratio",
	       "target");
	printf("%-8s %15.3fx %21.3fx %8s %s\n", "read", med[OURS_READ] / med[GLIBC_READ], med_ratio_r,
	       "<= 1.0x", med_ratio_r <= 1.0 ? "MET" : "NOT MET");
	printf("%-8s %15.3fx %21.3fx %8s %s\n", "write", med[OURS_WRITE] / med[GLIBC_WRITE],
	       med_ratio_w, "<= 1.0x", med_ratio_w <= 1.0 ? "MET" : "NOT MET");
	printf("(ours/glibc; MET/NOT MET judged on the median per-round ratio)\n");

	j = bu_json_open(json_path);
	bu_json_obj_begin(j, NULL);
	bu_json_env(j, "bench_uncontended");
	bu_json_int(j, "rounds", rounds);
	bu_json_int(j, "iters_per_round", iters);
	bu_json_str(j, "unit", "ns_per_pair");
	bu_json_obj_begin(j, "median_ns_per_pair");
	for (int v = 0; v < NVARIANTS; v++)
		bu_json_num(j, variant_key[v], med[v]);
	bu_json_obj_end(j);
	bu_json_obj_begin(j, "ratio_ours_over_glibc");
	bu_json_num(j, "read_ratio_of_medians", med[OURS_READ] / med[GLIBC_READ]);
	bu_json_num(j, "read_median_per_round", med_ratio_r);
	bu_json_num(j, "write_ratio_of_medians", med[OURS_WRITE] / med[GLIBC_WRITE]);
	bu_json_num(j, "write_median_per_round", med_ratio_w);
	bu_json_num(j, "target_max", 1.0);
	bu_json_bool(j, "read_target_met", med_ratio_r <= 1.0);
	bu_json_bool(j, "write_target_met", med_ratio_w <= 1.0);
	bu_json_obj_end(j);
	bu_json_obj_begin(j, "per_round_ns_per_pair");
	for (int v = 0; v < NVARIANTS; v++)
		bu_json_nums(j, variant_key[v], ns[v], (size_t)rounds);
	bu_json_obj_end(j);
	bu_json_obj_end(j);
	bu_json_close(j, json_path);

	for (int v = 0; v < NVARIANTS; v++)
		free(ns[v]);
	free(ratio_r);
	free(ratio_w);
	pthread_rwlock_destroy(&rw);
	return 0;
}
