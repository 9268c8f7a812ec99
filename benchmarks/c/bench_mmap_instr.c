/* SPDX-License-Identifier: MIT */
/*
 * bench_mmap_instr.c - what the mmap_lock instrumentation costs on the
 * uncontended lock+unlock pair, one thread.
 *
 *   read            mmap_read_lock+unlock: tracepoints compiled in but off,
 *                   statistics on (the default)
 *   read notrace    the same, built with MMAP_LOCK_NO_TRACE (a second copy
 *                   of mmap_lock.c in this binary: mmap_lock_notrace.h)
 *   read nostats    tracepoints compiled in but off, statistics off
 *   read bare       notrace and nostats: the API over the rwsem, nothing else
 *   rwsem read      down_read+up_read, the layer below
 *   read hooked     empty C hooks set on all three tracepoints
 *   read recorded   a recorder attached (3 events per pair)
 *   write, write notrace, write nostats
 *
 * Every round times --iters pairs of each variant, in an order rotating
 * from round to round; figures are medians over rounds of ns per pair and
 * medians of per-round ratios.  Targets (benchmarks/README.md, "Targets"):
 * tracepoints off vs compiled out <= 1.02x; statistics on vs off <= 1.25x.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"
#include "mmap_lock.h"
#include "mmap_lock_stats.h"
#include "mmap_lock_trace.h"
#include "mmap_lock_notrace.h"

enum {
	READ, READ_NOTRACE, READ_NOSTATS, READ_BARE, RWSEM_READ, READ_HOOKED, READ_RECORDED,
	WRITE, WRITE_NOTRACE, WRITE_NOSTATS, NVARIANTS
};

static const char *const variant_name[NVARIANTS] = {
	"read (hooks off, stats on)", "read, hooks compiled out", "read, stats off",
	"read, compiled out + stats off", "rwsem down_read+up_read", "read, empty hooks set",
	"read, recorder attached", "write (hooks off, stats on)", "write, hooks compiled out",
	"write, stats off",
};

static const char *const variant_key[NVARIANTS] = {
	"read", "read_notrace", "read_nostats", "read_bare", "rwsem_read", "read_hooked",
	"read_recorded", "write", "write_notrace", "write_nostats",
};

static struct mm_struct *mm_stats, *mm_nostats;
static long g_iters;

static void hook_start(struct mm_struct *mm, bool write, void *arg)
{
	(void)mm; (void)write; (void)arg;
}

static void hook_acquired(struct mm_struct *mm, bool write, bool success, void *arg)
{
	(void)mm; (void)write; (void)success; (void)arg;
}

static const struct mmap_lock_trace_hooks empty_hooks = {
	.start_locking = hook_start, .acquire_returned = hook_acquired, .released = hook_start,
};

#define PAIR_LOOP(name, lock, unlock, arg)				\
	__attribute__((noinline)) static long name(long n)		\
	{								\
		long err = 0;						\
		for (long i = 0; i < n; i++) {				\
			err += lock(arg);				\
			err += unlock(arg);				\
		}							\
		return err;						\
	}

PAIR_LOOP(loop_read, mmap_read_lock, mmap_read_unlock, mm_stats)
PAIR_LOOP(loop_read_notrace, notrace_mmap_read_lock, notrace_mmap_read_unlock, mm_stats)
PAIR_LOOP(loop_read_nostats, mmap_read_lock, mmap_read_unlock, mm_nostats)
PAIR_LOOP(loop_read_bare, notrace_mmap_read_lock, notrace_mmap_read_unlock, mm_nostats)
PAIR_LOOP(loop_rwsem_read, down_read, up_read, &mm_nostats->mmap_lock)
PAIR_LOOP(loop_write, mmap_write_lock, mmap_write_unlock, mm_stats)
PAIR_LOOP(loop_write_notrace, notrace_mmap_write_lock, notrace_mmap_write_unlock, mm_stats)
PAIR_LOOP(loop_write_nostats, mmap_write_lock, mmap_write_unlock, mm_nostats)

static long loop_read_hooked(long n)
{
	long err;

	if (mmap_lock_set_trace_hooks(&empty_hooks))
		bu_die("mmap_lock_set_trace_hooks failed");
	err = loop_read(n);
	mmap_lock_set_trace_hooks(NULL);
	return err;
}

static long loop_read_recorded(long n)
{
	struct mmap_lock_recorder *rec;
	long err;

	if (mmap_lock_record_start(mm_stats, (size_t)n * 3))
		bu_die("mmap_lock_record_start failed");
	err = loop_read(n);
	rec = mmap_lock_record_stop(mm_stats);
	if (!rec || mmap_lock_recorder_count(rec) != (size_t)n * 3 ||
	    mmap_lock_recorder_dropped(rec))
		bu_die("the recorder did not keep 3 events per pair");
	mmap_lock_recorder_free(rec);
	return err;
}

static long (*const loops[NVARIANTS])(long) = {
	loop_read, loop_read_notrace, loop_read_nostats, loop_read_bare, loop_rwsem_read,
	loop_read_hooked, loop_read_recorded, loop_write, loop_write_notrace, loop_write_nostats,
};

static double time_variant(int v)
{
	uint64_t t0, t1;
	long err;

	/* The hooked and recorded loops set up outside their pairs; include it: it is small. */
	t0 = bu_now_ns();
	err = loops[v](g_iters);
	t1 = bu_now_ns();
	if (err)
		bu_die("%s: calls returned a nonzero sum %ld", variant_name[v], err);
	return (double)(t1 - t0) / (double)g_iters;
}

static double ratio_median(double *const ns[], int a, int b, long rounds)
{
	double *r = calloc((size_t)rounds, sizeof(double));
	double m;

	if (!r)
		bu_die("out of memory");
	for (long i = 0; i < rounds; i++)
		r[i] = ns[a][i] / ns[b][i];
	m = bu_median(r, (size_t)rounds);
	free(r);
	return m;
}

int main(int argc, char **argv)
{
	long rounds = 21, iters = 1000000;
	const char *json_path = NULL;
	const struct bu_opt opts[] = {
		{ "--rounds", BU_OPT_INT, &rounds, "alternated rounds" },
		{ "--iters", BU_OPT_INT, &iters, "lock+unlock pairs per variant per round" },
		{ "--json", BU_OPT_STR, &json_path, "also write the figures as JSON to this path" },
	};
	double *ns[NVARIANTS], med[NVARIANTS];
	double r_trace, r_trace_bare, r_trace_w, r_stats, r_stats_w, r_hooked, per_event;
	struct bu_json *j;

	bu_parse_args(argc, argv,
		      "Cost of the mmap_lock instrumentation on the uncontended pair.",
		      opts, sizeof(opts) / sizeof(opts[0]));
	if (rounds < 1 || iters < 1)
		bu_die("--rounds and --iters must be >= 1");
	g_iters = iters;
	mm_stats = malloc(sizeof(*mm_stats));
	mm_nostats = malloc(sizeof(*mm_nostats));
	if (!mm_stats || !mm_nostats || mmap_lock_init(mm_stats, 0) ||
	    mmap_lock_init(mm_nostats, MMAP_LOCK_NOSTATS))
		bu_die("mm setup failed");
	for (int v = 0; v < NVARIANTS; v++) {
		ns[v] = calloc((size_t)rounds, sizeof(double));
		if (!ns[v])
			bu_die("out of memory");
	}
	bu_progress("bench_mmap_instr: %ld rounds x %ld pairs x %d variants (+1 warm-up round)\n",
		    rounds, iters, NVARIANTS);
	for (int v = 0; v < NVARIANTS; v++)
		(void)time_variant(v);
	for (long r = 0; r < rounds; r++) {
		for (int k = 0; k < NVARIANTS; k++) {
			int v = bu_round_variant(k, r, NVARIANTS);

			ns[v][r] = time_variant(v);
		}
		if ((r + 1) % 5 == 0 || r + 1 == rounds)
			bu_progress("  round %ld/%ld: read %.2f, notrace %.2f, nostats %.2f ns\n",
				    r + 1, rounds, ns[READ][r], ns[READ_NOTRACE][r],
				    ns[READ_NOSTATS][r]);
	}
	for (int v = 0; v < NVARIANTS; v++)
		med[v] = bu_median(ns[v], (size_t)rounds);
	r_trace = ratio_median(ns, READ, READ_NOTRACE, rounds);
	r_trace_bare = ratio_median(ns, READ_NOSTATS, READ_BARE, rounds);
	r_trace_w = ratio_median(ns, WRITE, WRITE_NOTRACE, rounds);
	r_stats = ratio_median(ns, READ, READ_NOSTATS, rounds);
	r_stats_w = ratio_median(ns, WRITE, WRITE_NOSTATS, rounds);
	r_hooked = ratio_median(ns, READ_HOOKED, READ, rounds);
	per_event = (med[READ_RECORDED] - med[READ]) / 3.0;

	bu_print_env("bench_mmap_instr");
	printf("%ld alternated rounds x %ld pairs; ns per lock+unlock pair\n\n", rounds, iters);
	printf("%-34s %10s %10s %10s\n", "variant", "median", "min", "max");
	for (int v = 0; v < NVARIANTS; v++)
		printf("%-34s %10.2f %10.2f %10.2f\n", variant_name[v], med[v],
		       bu_min(ns[v], (size_t)rounds), bu_max(ns[v], (size_t)rounds));
	printf("\nmedian per-round ratios\n");
	printf("  hooks off vs compiled out, read (stats on):  %.3fx  (target <= 1.02x) %s\n",
	       r_trace, r_trace <= 1.02 ? "MET" : "NOT MET");
	printf("  hooks off vs compiled out, read (stats off): %.3fx\n", r_trace_bare);
	printf("  hooks off vs compiled out, write:            %.3fx\n", r_trace_w);
	printf("  statistics on vs off, read:                  %.3fx  (target <= 1.25x) %s\n",
	       r_stats, r_stats <= 1.25 ? "MET" : "NOT MET");
	printf("  statistics on vs off, write:                 %.3fx\n", r_stats_w);
	printf("  empty hooks set vs off, read:                %.3fx\n", r_hooked);
	printf("  recorder: %.2f ns per event (3 events per pair)\n", per_event);

	j = bu_json_open(json_path);
	bu_json_obj_begin(j, NULL);
	bu_json_env(j, "bench_mmap_instr");
	bu_json_int(j, "rounds", rounds);
	bu_json_int(j, "iters_per_round", iters);
	bu_json_obj_begin(j, "median_ns_per_pair");
	for (int v = 0; v < NVARIANTS; v++)
		bu_json_num(j, variant_key[v], med[v]);
	bu_json_obj_end(j);
	bu_json_obj_begin(j, "ratios");
	bu_json_num(j, "hooks_off_vs_compiled_out_read", r_trace);
	bu_json_num(j, "hooks_off_vs_compiled_out_read_nostats", r_trace_bare);
	bu_json_num(j, "hooks_off_vs_compiled_out_write", r_trace_w);
	bu_json_num(j, "stats_on_vs_off_read", r_stats);
	bu_json_num(j, "stats_on_vs_off_write", r_stats_w);
	bu_json_num(j, "hooks_set_vs_off_read", r_hooked);
	bu_json_obj_end(j);
	bu_json_num(j, "recorder_ns_per_event", per_event);
	bu_json_obj_end(j);
	bu_json_close(j, json_path);
	return 0;
}
