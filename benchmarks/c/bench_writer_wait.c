/* SPDX-License-Identifier: MIT */
/*
 * bench_writer_wait.c - how long a writer waits while readers hammer the lock.
 *
 * Two reader threads loop { read lock; read a shared cache line (and check
 * it is not torn); read unlock } as fast as they can.  One writer thread
 * loops { sleep --period-us; t0; write lock; t1; rewrite the cache line and
 * hold the lock --hold-us; write unlock }, recording t1 - t0, for --seconds.
 *
 * Locks compared (a fresh one each round, rounds alternated with a rotating
 * order so noise falls on all alike):
 *   ours          down_read/up_read, down_write/up_write
 *   glibc-default pthread_rwlock, PTHREAD_RWLOCK_PREFER_READER_NP (the default)
 *   glibc-wpref   pthread_rwlock, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP
 *
 * Per lock: the median over rounds of the max, p99 and p50 writer wait, the
 * overall max, writer acquisitions per second and reader throughput.  A wait
 * still in progress when the round ends is ended by the readers stopping; it
 * is counted (as a lower bound) and reported as "cut".
 * Target: ours, max writer wait <= 5 ms (benchmarks/README.md, "Targets").
 */
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"
#include "rwsem.h"

enum { L_OURS, L_GLIBC_DEFAULT, L_GLIBC_WPREF, NLOCKS };

static const char *const lock_name[NLOCKS] = { "ours", "glibc-default", "glibc-wpref" };
static const char *const lock_key[NLOCKS] = { "ours", "glibc_default", "glibc_wpref" };

#define NREADERS 2
#define CACHELINE 64

struct shared {
	int kind;
	struct rw_semaphore sem;
	pthread_rwlock_t rw;
	_Alignas(CACHELINE) volatile uint64_t line[CACHELINE / sizeof(uint64_t)];
	_Alignas(CACHELINE) atomic_int stop;
	atomic_int started;
	uint64_t period_ns, hold_ns;
	long read_work;		/* passes over the line per read critical section */
	long time_sections;	/* readers time their critical sections (a noise probe) */
};

static struct shared S;

static inline void rd_lock(void)
{
	int e = S.kind == L_OURS ? down_read(&S.sem) : pthread_rwlock_rdlock(&S.rw);

	if (e)
		bu_die("read lock failed: %d", e);
}

static inline void rd_unlock(void)
{
	int e = S.kind == L_OURS ? up_read(&S.sem) : pthread_rwlock_unlock(&S.rw);

	if (e)
		bu_die("read unlock failed: %d", e);
}

static inline void wr_lock(void)
{
	int e = S.kind == L_OURS ? down_write(&S.sem) : pthread_rwlock_wrlock(&S.rw);

	if (e)
		bu_die("write lock failed: %d", e);
}

static inline void wr_unlock(void)
{
	int e = S.kind == L_OURS ? up_write(&S.sem) : pthread_rwlock_unlock(&S.rw);

	if (e)
		bu_die("write unlock failed: %d", e);
}

struct reader_result {
	_Alignas(CACHELINE) uint64_t ops;
	uint64_t torn;		/* reads that saw a half-written line: must be 0 */
	uint64_t max_section_ns;	/* --time-sections: longest read critical section */
};

static void *reader(void *arg)
{
	struct reader_result *res = arg;
	uint64_t ops = 0, torn = 0, max_section = 0, ta = 0, tb;
	const int timed = S.time_sections != 0;

	atomic_fetch_add(&S.started, 1);
	while (!atomic_load_explicit(&S.stop, memory_order_relaxed)) {
		rd_lock();
		if (timed)
			ta = bu_now_ns();
		for (long w = 0; w < S.read_work; w++) {
			uint64_t first = S.line[0];

			for (size_t i = 1; i < CACHELINE / sizeof(uint64_t); i++)
				torn += S.line[i] != first;
		}
		if (timed) {
			tb = bu_now_ns();
			if (tb - ta > max_section)
				max_section = tb - ta;
		}
		rd_unlock();
		ops++;
	}
	res->ops = ops;
	res->torn = torn;
	res->max_section_ns = max_section;
	return NULL;
}

struct writer_result {
	struct bu_samples wait_ns;
	uint64_t cut;		/* waits ended by the end of the round */
};

static void *writer(void *arg)
{
	struct writer_result *res = arg;
	uint64_t seq = 0;

	while (!atomic_load(&S.stop)) {
		bu_sleep_ns(S.period_ns);
		if (atomic_load(&S.stop))
			break;
		uint64_t t0 = bu_now_ns();

		wr_lock();
		uint64_t t1 = bu_now_ns();
		int cut = atomic_load(&S.stop);

		seq++;
		for (size_t i = 0; i < CACHELINE / sizeof(uint64_t); i++)
			S.line[i] = seq;
		if (S.hold_ns)
			bu_spin_ns(S.hold_ns);
		wr_unlock();
		bu_samples_push(&res->wait_ns, (double)(t1 - t0));
		res->cut += cut;
	}
	return NULL;
}

struct round_result {
	double max_ms, p99_ms, p50_ms;
	double writer_per_s;	/* writer acquisitions per second */
	double reader_mops;	/* reader lock+unlock pairs per second, millions, both readers */
	uint64_t samples, cut, torn;
	long long handoffs;	/* ours: handoffs made (a waiter starved 4 ms); glibc: -1 */
	double max_section_ms;	/* --time-sections: longest read critical section */
};

static void init_lock(int kind)
{
	pthread_rwlockattr_t a;

	S.kind = kind;
	if (kind == L_OURS) {
		if (init_rwsem(&S.sem))
			bu_die("init_rwsem failed");
		return;
	}
	pthread_rwlockattr_init(&a);
	if (pthread_rwlockattr_setkind_np(&a, kind == L_GLIBC_DEFAULT ?
					  PTHREAD_RWLOCK_PREFER_READER_NP :
					  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
		bu_die("pthread_rwlockattr_setkind_np failed");
	if (pthread_rwlock_init(&S.rw, &a))
		bu_die("pthread_rwlock_init failed");
	pthread_rwlockattr_destroy(&a);
}

/* Returns the number of handoffs the lock made (ours), or -1 (glibc). */
static long long fini_lock(void)
{
	long long handoffs = -1;
	int e;

	if (S.kind == L_OURS) {
		uint32_t qr, qw;
		uint64_t h;

		rwsem_queue_info(&S.sem, &qr, &qw, &h);
		handoffs = (long long)h;
	}
	e = S.kind == L_OURS ? rwsem_destroy(&S.sem) : pthread_rwlock_destroy(&S.rw);

	if (e)
		bu_die("destroying %s failed: %d", lock_name[S.kind], e);
	return handoffs;
}

static struct round_result run_round(int kind, double seconds)
{
	pthread_t rt[NREADERS], wt;
	struct reader_result rr[NREADERS] = { 0 };
	struct writer_result wr = { 0 };
	struct round_result out = { 0 };
	uint64_t t0, t1, ops = 0;
	double *ms;

	init_lock(kind);
	for (size_t i = 0; i < CACHELINE / sizeof(uint64_t); i++)
		S.line[i] = 0;
	atomic_store(&S.stop, 0);
	atomic_store(&S.started, 0);

	for (int i = 0; i < NREADERS; i++)
		if (pthread_create(&rt[i], NULL, reader, &rr[i]))
			bu_die("pthread_create failed");
	while (atomic_load(&S.started) < NREADERS)
		bu_sleep_ns(100000);
	t0 = bu_now_ns();
	if (pthread_create(&wt, NULL, writer, &wr))
		bu_die("pthread_create failed");
	bu_sleep_ns((uint64_t)(seconds * 1e9));
	atomic_store(&S.stop, 1);
	for (int i = 0; i < NREADERS; i++)
		pthread_join(rt[i], NULL);
	t1 = bu_now_ns();
	pthread_join(wt, NULL);
	out.handoffs = fini_lock();

	for (int i = 0; i < NREADERS; i++) {
		ops += rr[i].ops;
		out.torn += rr[i].torn;
		if ((double)rr[i].max_section_ns / 1e6 > out.max_section_ms)
			out.max_section_ms = (double)rr[i].max_section_ns / 1e6;
	}
	out.samples = wr.wait_ns.n;
	out.cut = wr.cut;
	ms = wr.wait_ns.v;
	for (size_t i = 0; i < wr.wait_ns.n; i++)
		ms[i] /= 1e6;
	out.max_ms = bu_max(ms, wr.wait_ns.n);
	out.p99_ms = bu_percentile(ms, wr.wait_ns.n, 99.0);
	out.p50_ms = bu_percentile(ms, wr.wait_ns.n, 50.0);
	out.writer_per_s = (double)wr.wait_ns.n / ((double)(t1 - t0) / 1e9);
	out.reader_mops = (double)ops / ((double)(t1 - t0) / 1e3);
	bu_samples_free(&wr.wait_ns);
	return out;
}

/* @stat (median, max) of the double at @off in each of @n round results. */
static double column(const struct round_result *rr, long n, size_t off, double *scratch,
		     double (*stat)(const double *, size_t))
{
	for (long r = 0; r < n; r++)
		scratch[r] = *(const double *)((const char *)&rr[r] + off);
	return stat(scratch, (size_t)n);
}

int main(int argc, char **argv)
{
	long rounds = 3;
	long read_work = 1, time_sections = 0;
	double seconds = 2.0, period_us = 1000.0, hold_us = 1.0, target_ms = 5.0;
	const char *json_path = NULL;
	const struct bu_opt opts[] = {
		{ "--rounds", BU_OPT_INT, &rounds, "alternated rounds per lock" },
		{ "--seconds", BU_OPT_DOUBLE, &seconds, "duration of one round" },
		{ "--period-us", BU_OPT_DOUBLE, &period_us, "writer sleep between acquisitions" },
		{ "--hold-us", BU_OPT_DOUBLE, &hold_us, "writer hold time (busy)" },
		{ "--read-work", BU_OPT_INT, &read_work, "passes over the cache line per read section" },
		{ "--time-sections", BU_OPT_INT, &time_sections,
		  "1: readers time their sections (noise probe; adds 2 clock reads per section)" },
		{ "--json", BU_OPT_STR, &json_path, "also write the figures as JSON to this path" },
	};
	struct round_result *res[NLOCKS];
	double *col;
	struct bu_json *j;
	uint64_t torn_total = 0;

	bu_parse_args(argc, argv,
		      "Writer wait with 2 readers hammering: ours vs glibc pthread_rwlock (two kinds).",
		      opts, sizeof(opts) / sizeof(opts[0]));
	if (rounds < 1 || read_work < 1 || seconds <= 0 || period_us < 0 || hold_us < 0)
		bu_die("bad arguments");
	S.period_ns = (uint64_t)(period_us * 1e3);
	S.hold_ns = (uint64_t)(hold_us * 1e3);
	S.read_work = read_work;
	S.time_sections = time_sections;
	for (int l = 0; l < NLOCKS; l++) {
		res[l] = calloc((size_t)rounds, sizeof(**res));
		if (!res[l])
			bu_die("out of memory");
	}
	col = calloc((size_t)rounds, sizeof(*col));
	if (!col)
		bu_die("out of memory");

	bu_progress("bench_writer_wait: %ld rounds x %d locks x %.1f s (%d readers, writer every %.0f us)\n",
		    rounds, NLOCKS, seconds, NREADERS, period_us);
	for (long r = 0; r < rounds; r++) {
		for (int k = 0; k < NLOCKS; k++) {
			int l = (int)((k + r) % NLOCKS);
			struct round_result *o = &res[l][r];

			*o = run_round(l, seconds);
			torn_total += o->torn;
			bu_progress("  round %ld/%ld %-13s: max %8.3f ms, p99 %7.3f ms, p50 %7.3f ms, "
				    "%5.0f writes/s, readers %6.2f Mops/s",
				    r + 1, rounds, lock_name[l], o->max_ms, o->p99_ms, o->p50_ms,
				    o->writer_per_s, o->reader_mops);
			if (o->handoffs >= 0)
				bu_progress(", %lld handoffs", o->handoffs);
			if (time_sections)
				bu_progress(", longest read section %.3f ms", o->max_section_ms);
			bu_progress("%s\n", o->cut ? " (last wait ended by round end)" : "");
		}
	}

	double max_med[NLOCKS], max_all[NLOCKS], p99[NLOCKS], p50[NLOCKS], wps[NLOCKS], mops[NLOCKS];
	uint64_t cut[NLOCKS], samples[NLOCKS];
	long long handoffs[NLOCKS];

	for (int l = 0; l < NLOCKS; l++) {
		max_med[l] = column(res[l], rounds, offsetof(struct round_result, max_ms), col, bu_median);
		max_all[l] = column(res[l], rounds, offsetof(struct round_result, max_ms), col, bu_max);
		p99[l] = column(res[l], rounds, offsetof(struct round_result, p99_ms), col, bu_median);
		p50[l] = column(res[l], rounds, offsetof(struct round_result, p50_ms), col, bu_median);
		wps[l] = column(res[l], rounds, offsetof(struct round_result, writer_per_s), col,
				bu_median);
		mops[l] = column(res[l], rounds, offsetof(struct round_result, reader_mops), col,
				 bu_median);
		cut[l] = samples[l] = 0;
		handoffs[l] = 0;
		for (long r = 0; r < rounds; r++) {
			cut[l] += res[l][r].cut;
			samples[l] += res[l][r].samples;
			if (res[l][r].handoffs < 0)
				handoffs[l] = -1;
			else if (handoffs[l] >= 0)
				handoffs[l] += res[l][r].handoffs;
		}
	}

	bu_print_env("bench_writer_wait");
	printf("%ld alternated rounds x %.1f s per lock; %d readers hammering (%ld pass(es) over a "
	       "cache line per section), writer every %.0f us, holds %.0f us\n", rounds, seconds,
	       NREADERS, read_work, period_us, hold_us);
	printf("writer wait in ms (median over rounds, except 'overall max'); readers: both, Mops/s\n\n");
	printf("%-14s %9s %9s %9s %11s %9s %8s %9s %12s %8s\n", "lock", "max", "p99", "p50",
	       "overall max", "writes/s", "samples", "handoffs", "reader Mops", "vs ours");
	for (int l = 0; l < NLOCKS; l++) {
		char ho[24] = "-";

		if (handoffs[l] >= 0)
			snprintf(ho, sizeof(ho), "%lld", handoffs[l]);
		printf("%-14s %9.3f %9.3f %9.3f %11.3f %9.0f %8llu %9s %12.2f %7.2fx%s\n",
		       lock_name[l], max_med[l], p99[l], p50[l], max_all[l], wps[l],
		       (unsigned long long)samples[l], ho, mops[l], mops[l] / mops[L_OURS],
		       cut[l] ? "  *" : "");
	}
	printf("\nmax-wait ratio vs ours (median max / ours' median max):");
	for (int l = 1; l < NLOCKS; l++)
		printf("  %s %.2fx", lock_name[l], max_med[l] / max_med[L_OURS]);
	printf("\ntarget: ours max writer wait <= %.1f ms: median of max %.3f ms %s, overall max %.3f ms %s\n",
	       target_ms, max_med[L_OURS], max_med[L_OURS] <= target_ms ? "MET" : "NOT MET",
	       max_all[L_OURS], max_all[L_OURS] <= target_ms ? "MET" : "NOT MET");
	for (int l = 0; l < NLOCKS; l++)
		if (cut[l])
			printf("* %s: %llu wait(s) still in progress when a round ended (ended by the "
			       "readers stopping): counted, as lower bounds\n", lock_name[l],
			       (unsigned long long)cut[l]);
	if (time_sections) {
		printf("longest read critical section (overall max; a preempted reader holds the lock):");
		for (int l = 0; l < NLOCKS; l++)
			printf("  %s %.3f ms", lock_name[l],
			       column(res[l], rounds, offsetof(struct round_result, max_section_ms), col,
				      bu_max));
		printf("\n");
	}
	if (torn_total)
		printf("ERROR: readers saw %llu torn cache lines (a writer was inside with readers)\n",
		       (unsigned long long)torn_total);

	j = bu_json_open(json_path);
	bu_json_obj_begin(j, NULL);
	bu_json_env(j, "bench_writer_wait");
	bu_json_int(j, "rounds", rounds);
	bu_json_num(j, "seconds_per_round", seconds);
	bu_json_int(j, "readers", NREADERS);
	bu_json_num(j, "writer_period_us", period_us);
	bu_json_num(j, "writer_hold_us", hold_us);
	bu_json_int(j, "read_work", read_work);
	bu_json_bool(j, "time_sections", time_sections != 0);
	bu_json_num(j, "target_ours_max_wait_ms", target_ms);
	bu_json_bool(j, "target_met_median_max", max_med[L_OURS] <= target_ms);
	bu_json_bool(j, "target_met_overall_max", max_all[L_OURS] <= target_ms);
	bu_json_int(j, "torn_reads", (long long)torn_total);
	bu_json_obj_begin(j, "locks");
	for (int l = 0; l < NLOCKS; l++) {
		bu_json_obj_begin(j, lock_key[l]);
		bu_json_num(j, "median_max_wait_ms", max_med[l]);
		bu_json_num(j, "overall_max_wait_ms", max_all[l]);
		bu_json_num(j, "median_p99_wait_ms", p99[l]);
		bu_json_num(j, "median_p50_wait_ms", p50[l]);
		bu_json_num(j, "median_writes_per_s", wps[l]);
		bu_json_num(j, "median_reader_mops", mops[l]);
		bu_json_num(j, "reader_throughput_vs_ours", mops[l] / mops[L_OURS]);
		bu_json_num(j, "max_wait_vs_ours", max_med[l] / max_med[L_OURS]);
		bu_json_int(j, "samples", (long long)samples[l]);
		bu_json_int(j, "waits_cut_by_round_end", (long long)cut[l]);
		if (handoffs[l] >= 0)
			bu_json_int(j, "handoffs", handoffs[l]);
		bu_json_arr_begin(j, "per_round");
		for (long r = 0; r < rounds; r++) {
			bu_json_obj_begin(j, NULL);
			bu_json_num(j, "max_ms", res[l][r].max_ms);
			bu_json_num(j, "p99_ms", res[l][r].p99_ms);
			bu_json_num(j, "p50_ms", res[l][r].p50_ms);
			bu_json_num(j, "writes_per_s", res[l][r].writer_per_s);
			bu_json_num(j, "reader_mops", res[l][r].reader_mops);
			bu_json_int(j, "samples", (long long)res[l][r].samples);
			bu_json_int(j, "cut", (long long)res[l][r].cut);
			if (res[l][r].handoffs >= 0)
				bu_json_int(j, "handoffs", res[l][r].handoffs);
			if (time_sections)
				bu_json_num(j, "max_read_section_ms", res[l][r].max_section_ms);
			bu_json_obj_end(j);
		}
		bu_json_arr_end(j);
		bu_json_obj_end(j);
	}
	bu_json_obj_end(j);
	bu_json_obj_end(j);
	bu_json_close(j, json_path);

	for (int l = 0; l < NLOCKS; l++)
		free(res[l]);
	free(col);
	return torn_total ? 1 : 0;
}
