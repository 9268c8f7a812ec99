/* SPDX-License-Identifier: MIT */
/*
 * bench_blocked_cpu.c - CPU burnt by a thread blocked on a held lock.
 *
 * The main thread takes the lock (for read or write), starts a waiter thread
 * that asks for it (for read or write) and so blocks, holds it --hold-s,
 * then releases it.  The waiter measures, itself, the CPU time its thread
 * used (CLOCK_THREAD_CPUTIME_ID) and its context switches (getrusage
 * RUSAGE_THREAD) from just before its lock call to just after the lock was
 * acquired, and the wall time in between: CPU % = CPU time / wall time.
 *
 * Scenarios: read blocked on write-held, write blocked on read-held, write
 * blocked on write-held.  Locks: ours (down_read/down_write) and glibc
 * pthread_rwlock of the default kind.  All scenario x lock cases run once per
 * round, in an order that rotates from round to round.
 * Target: ours < 2% of a core (benchmarks/README.md, "Targets").
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "bench_util.h"
#include "rwsem.h"

enum { L_OURS, L_GLIBC, NLOCKS };
enum { S_READ_ON_WRITE, S_WRITE_ON_READ, S_WRITE_ON_WRITE, NSCEN };

static const char *const lock_name[NLOCKS] = { "ours", "glibc" };
static const char *const scen_name[NSCEN] = {
	"read blocked on write-held",
	"write blocked on read-held",
	"write blocked on write-held",
};
static const char *const scen_key[NSCEN] = {
	"read_on_write", "write_on_read", "write_on_write",
};

/* Does the holder (main) take it for write?  Does the waiter? */
static const int holder_writes[NSCEN] = { 1, 0, 1 };
static const int waiter_writes[NSCEN] = { 0, 1, 1 };

struct lock {
	int kind;
	struct rw_semaphore sem;
	pthread_rwlock_t rw;
};

static void lock_init(struct lock *l, int kind)
{
	l->kind = kind;
	if (kind == L_OURS ? init_rwsem(&l->sem) : pthread_rwlock_init(&l->rw, NULL))
		bu_die("lock init failed");
}

static void lock_destroy(struct lock *l)
{
	if (l->kind == L_OURS ? rwsem_destroy(&l->sem) : pthread_rwlock_destroy(&l->rw))
		bu_die("lock destroy failed (still held?)");
}

static void lock_take(struct lock *l, int write)
{
	int e;

	if (l->kind == L_OURS)
		e = write ? down_write(&l->sem) : down_read(&l->sem);
	else
		e = write ? pthread_rwlock_wrlock(&l->rw) : pthread_rwlock_rdlock(&l->rw);
	if (e)
		bu_die("%s %s lock failed: %d", lock_name[l->kind], write ? "write" : "read", e);
}

static void lock_release(struct lock *l, int write)
{
	int e;

	if (l->kind == L_OURS)
		e = write ? up_write(&l->sem) : up_read(&l->sem);
	else
		e = pthread_rwlock_unlock(&l->rw);
	if (e)
		bu_die("%s %s unlock failed: %d", lock_name[l->kind], write ? "write" : "read", e);
}

struct waiter {
	struct lock *lock;
	int write;
	atomic_int ready;
	/* results */
	uint64_t cpu_ns, wall_ns;
	long nvcsw, nivcsw;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	struct rusage ru0, ru1;
	uint64_t cpu0, cpu1, t0, t1;

	atomic_store(&w->ready, 1);
	getrusage(RUSAGE_THREAD, &ru0);
	t0 = bu_now_ns();
	cpu0 = bu_thread_cpu_ns();
	lock_take(w->lock, w->write);
	cpu1 = bu_thread_cpu_ns();
	t1 = bu_now_ns();
	getrusage(RUSAGE_THREAD, &ru1);
	lock_release(w->lock, w->write);
	w->cpu_ns = cpu1 - cpu0;
	w->wall_ns = t1 - t0;
	w->nvcsw = ru1.ru_nvcsw - ru0.ru_nvcsw;
	w->nivcsw = ru1.ru_nivcsw - ru0.ru_nivcsw;
	return NULL;
}

struct result {
	double cpu_pct, cpu_us, wall_s;
	long nvcsw, nivcsw;
};

static struct result run_case(int scen, int kind, double hold_s)
{
	struct lock l;
	struct waiter w = { .lock = &l, .write = waiter_writes[scen] };
	struct result r;
	pthread_t t;

	lock_init(&l, kind);
	lock_take(&l, holder_writes[scen]);
	if (pthread_create(&t, NULL, waiter_main, &w))
		bu_die("pthread_create failed");
	while (!atomic_load(&w.ready))
		bu_sleep_ns(50000);
	bu_sleep_ns((uint64_t)(hold_s * 1e9));
	lock_release(&l, holder_writes[scen]);
	pthread_join(t, NULL);
	lock_destroy(&l);

	r.cpu_us = (double)w.cpu_ns / 1e3;
	r.wall_s = (double)w.wall_ns / 1e9;
	r.cpu_pct = 100.0 * (double)w.cpu_ns / (double)w.wall_ns;
	r.nvcsw = w.nvcsw;
	r.nivcsw = w.nivcsw;
	return r;
}

int main(int argc, char **argv)
{
	long rounds = 3;
	double hold_s = 1.0, target_pct = 2.0;
	const char *json_path = NULL;
	const struct bu_opt opts[] = {
		{ "--rounds", BU_OPT_INT, &rounds, "alternated rounds" },
		{ "--hold-s", BU_OPT_DOUBLE, &hold_s, "seconds the lock is held while the waiter blocks" },
		{ "--json", BU_OPT_STR, &json_path, "also write the figures as JSON to this path" },
	};
	struct result *res[NSCEN][NLOCKS];
	double *col;
	double med_pct[NSCEN][NLOCKS], max_pct[NSCEN][NLOCKS], med_us[NSCEN][NLOCKS];
	double med_wall[NSCEN][NLOCKS], med_vcsw[NSCEN][NLOCKS], med_ivcsw[NSCEN][NLOCKS];
	double worst_ours = 0.0;
	struct bu_json *j;

	bu_parse_args(argc, argv,
		      "CPU used by a thread blocked on a held lock: ours vs glibc pthread_rwlock.",
		      opts, sizeof(opts) / sizeof(opts[0]));
	if (rounds < 1 || hold_s <= 0)
		bu_die("bad arguments");
	col = calloc((size_t)rounds, sizeof(*col));
	if (!col)
		bu_die("out of memory");
	for (int s = 0; s < NSCEN; s++)
		for (int l = 0; l < NLOCKS; l++)
			if (!(res[s][l] = calloc((size_t)rounds, sizeof(struct result))))
				bu_die("out of memory");

	bu_progress("bench_blocked_cpu: %ld rounds x %d cases x %.1f s held\n", rounds,
		    NSCEN * NLOCKS, hold_s);
	for (long r = 0; r < rounds; r++) {
		for (int k = 0; k < NSCEN * NLOCKS; k++) {
			int c = (int)((k + r) % (NSCEN * NLOCKS));
			int s = c / NLOCKS, l = c % NLOCKS;
			struct result *o = &res[s][l][r];

			*o = run_case(s, l, hold_s);
			bu_progress("  round %ld/%ld %-5s %-27s: %7.1f us CPU in %.3f s = %.4f%%, "
				    "%ld voluntary / %ld involuntary switches\n",
				    r + 1, rounds, lock_name[l], scen_name[s], o->cpu_us, o->wall_s,
				    o->cpu_pct, o->nvcsw, o->nivcsw);
		}
	}

	for (int s = 0; s < NSCEN; s++) {
		for (int l = 0; l < NLOCKS; l++) {
			const struct result *rr = res[s][l];

#define COL(field) do { for (long _r = 0; _r < rounds; _r++) col[_r] = (double)rr[_r].field; } while (0)
			COL(cpu_pct);
			med_pct[s][l] = bu_median(col, (size_t)rounds);
			max_pct[s][l] = bu_max(col, (size_t)rounds);
			COL(cpu_us);
			med_us[s][l] = bu_median(col, (size_t)rounds);
			COL(wall_s);
			med_wall[s][l] = bu_median(col, (size_t)rounds);
			COL(nvcsw);
			med_vcsw[s][l] = bu_median(col, (size_t)rounds);
			COL(nivcsw);
			med_ivcsw[s][l] = bu_median(col, (size_t)rounds);
#undef COL
		}
		if (max_pct[s][L_OURS] > worst_ours)
			worst_ours = max_pct[s][L_OURS];
	}

	bu_print_env("bench_blocked_cpu");
	printf("%ld alternated rounds; lock held %.1f s while one thread blocks on it; "
	       "CPU of the blocked thread, measured by itself\n\n", rounds, hold_s);
	printf("%-28s %-6s %10s %10s %10s %8s %10s %10s\n", "scenario", "lock", "CPU %", "max CPU %",
	       "CPU us", "blocked s", "vol. csw", "invol. csw");
	for (int s = 0; s < NSCEN; s++)
		for (int l = 0; l < NLOCKS; l++)
			printf("%-28s %-6s %10.4f %10.4f %10.1f %8.3f %10.0f %10.0f\n",
			       l == 0 ? scen_name[s] : "", lock_name[l], med_pct[s][l], max_pct[s][l],
			       med_us[s][l], med_wall[s][l], med_vcsw[s][l], med_ivcsw[s][l]);
	printf("\n(median over rounds, except 'max CPU %%'; csw = context switches while blocked)\n");
	printf("CPU time ratio ours/glibc (medians):");
	for (int s = 0; s < NSCEN; s++)
		printf("  %s %.2fx", scen_key[s],
		       med_us[s][L_GLIBC] > 0 ? med_us[s][L_OURS] / med_us[s][L_GLIBC] : 0.0);
	printf("\ntarget: blocked thread < %.1f%% of a core: ours worst case %.4f%% %s\n", target_pct,
	       worst_ours, worst_ours < target_pct ? "MET" : "NOT MET");

	j = bu_json_open(json_path);
	bu_json_obj_begin(j, NULL);
	bu_json_env(j, "bench_blocked_cpu");
	bu_json_int(j, "rounds", rounds);
	bu_json_num(j, "hold_s", hold_s);
	bu_json_num(j, "target_max_cpu_pct", target_pct);
	bu_json_num(j, "ours_worst_cpu_pct", worst_ours);
	bu_json_bool(j, "target_met", worst_ours < target_pct);
	bu_json_obj_begin(j, "scenarios");
	for (int s = 0; s < NSCEN; s++) {
		bu_json_obj_begin(j, scen_key[s]);
		for (int l = 0; l < NLOCKS; l++) {
			bu_json_obj_begin(j, lock_name[l]);
			bu_json_num(j, "median_cpu_pct", med_pct[s][l]);
			bu_json_num(j, "max_cpu_pct", max_pct[s][l]);
			bu_json_num(j, "median_cpu_us", med_us[s][l]);
			bu_json_num(j, "median_blocked_s", med_wall[s][l]);
			bu_json_num(j, "median_voluntary_csw", med_vcsw[s][l]);
			bu_json_num(j, "median_involuntary_csw", med_ivcsw[s][l]);
			for (long r = 0; r < rounds; r++)
				col[r] = res[s][l][r].cpu_pct;
			bu_json_nums(j, "per_round_cpu_pct", col, (size_t)rounds);
			bu_json_obj_end(j);
		}
		if (med_us[s][L_GLIBC] > 0)
			bu_json_num(j, "cpu_ratio_ours_over_glibc", med_us[s][L_OURS] / med_us[s][L_GLIBC]);
		bu_json_obj_end(j);
	}
	bu_json_obj_end(j);
	bu_json_obj_end(j);
	bu_json_close(j, json_path);

	for (int s = 0; s < NSCEN; s++)
		for (int l = 0; l < NLOCKS; l++)
			free(res[s][l]);
	free(col);
	return 0;
}
