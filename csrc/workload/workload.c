/* SPDX-License-Identifier: MIT */
/*
 * workload.c - the native workload runner (see workload.h).
 *
 * Each thread owns a cache line holding its counters and writes them with
 * relaxed load+store (it is their only writer); the sampler reads them
 * relaxed: a sample is a difference of two sums, each off by at most the
 * operations in flight, which the one-second samples make negligible.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "futex.h"
#include "mm.h"
#include "workload.h"

#define PG MM_PAGE_SIZE
#define RW (PROT_READ | PROT_WRITE)
#define ANON_PRIVATE (MAP_PRIVATE | MAP_ANONYMOUS)
#define MIX_BASE 0x200000000ull		/* where fault_mix places its VMAs */

struct wl_thread {
	_Atomic uint64_t ops;
	_Atomic uint64_t side_ops;
	uint64_t segv, errors;
	struct wl_run *run;
	pthread_t th;
	uint32_t index;
	uint32_t rng;
} __attribute__((aligned(64)));

struct wl_run {
	struct mm_struct *mm;
	const struct wl_config *cfg;
	_Atomic int stop;
	_Atomic uint32_t go;		/* the start gate: 0 closed, 1 open */
	struct wl_thread *threads;
};

static void count(_Atomic uint64_t *c)
{
	/* The thread's own counter: no read-modify-write needed. */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

static bool stopping(const struct wl_run *run)
{
	return atomic_load_explicit(&run->stop, memory_order_relaxed);
}

static uint32_t next_rand(uint32_t *state)
{
	uint32_t x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *state = x;
}

/* One mapping of the region, one byte written per page, then unmapped. */
static void page_fault1(struct wl_thread *t)
{
	struct wl_run *run = t->run;
	uint64_t len = run->cfg->region_bytes;

	while (!stopping(run)) {
		int64_t addr = mm_mmap(run->mm, 0, len, RW, ANON_PRIVATE);
		uint8_t byte = 1;

		if (addr < 0) {
			t->errors++;
			return;
		}
		for (uint64_t off = 0; off < len && !stopping(run); off += PG) {
			if (mm_access(run->mm, (uint64_t)addr + off, &byte, 1, 1, NULL))
				t->errors++;	/* a failure is not throughput */
			else
				count(&t->ops);
		}
		if (mm_munmap(run->mm, (uint64_t)addr, len))
			t->errors++;
	}
}

static void mmap1(struct wl_thread *t)
{
	struct wl_run *run = t->run;
	uint64_t len = run->cfg->region_bytes;

	while (!stopping(run)) {
		int64_t addr = mm_mmap(run->mm, 0, len, RW, ANON_PRIVATE);

		if (addr < 0 || mm_munmap(run->mm, (uint64_t)addr, len))
			t->errors++;
		else
			count(&t->ops);
	}
}

static uint64_t mix_vma_addr(const struct wl_config *cfg, uint32_t i)
{
	/* A one-page gap between VMAs keeps them from merging. */
	return MIX_BASE + (uint64_t)i * (cfg->mix_pages + 1) * PG;
}

/* VMAs in the set: one shared set, or one set per thread (fault_private). */
static uint32_t mix_total_vmas(const struct wl_config *cfg)
{
	return cfg->workload == WL_FAULT_PRIVATE ? cfg->mix_vmas * (uint32_t)cfg->threads
						  : cfg->mix_vmas;
}

/* fault_mix, fault_private, fault_read: faults on random pages, some re-maps. */
static void fault_mix(struct wl_thread *t)
{
	struct wl_run *run = t->run;
	const struct wl_config *cfg = run->cfg;
	uint64_t len = (uint64_t)cfg->mix_pages * PG;
	uint32_t first = cfg->workload == WL_FAULT_PRIVATE ? t->index * cfg->mix_vmas : 0;
	uint32_t remaps = cfg->workload == WL_FAULT_READ ? 0 : cfg->mix_remap_per_million;

	while (!stopping(run)) {
		uint32_t r = next_rand(&t->rng);
		uint32_t vma = first + next_rand(&t->rng) % cfg->mix_vmas;
		uint64_t addr = mix_vma_addr(cfg, vma);

		if (r % 1000000 < remaps) {
			if (mm_munmap(run->mm, addr, len) ||
			    mm_mmap(run->mm, addr, len, RW, ANON_PRIVATE | MAP_FIXED) != (int64_t)addr) {
				t->errors++;
				continue;
			}
		} else {
			bool write = next_rand(&t->rng) % 100 < cfg->mix_write_percent;
			int rc = mm_fault(run->mm, addr + (uint64_t)(r % cfg->mix_pages) * PG, write);

			if (rc == SEGV_MAPERR) {
				t->segv++;	/* between another thread's munmap and mmap */
			} else if (rc) {
				t->errors++;
				continue;
			}
		}
		count(&t->ops);
	}
}

/* Pure computation: what two threads on two cores do without sharing anything. */
static void compute(struct wl_thread *t)
{
	struct wl_run *run = t->run;

	while (!stopping(run)) {
		uint32_t x = t->rng;

		for (int i = 0; i < WL_COMPUTE_STEPS; i++)
			next_rand(&x);
		t->rng = x;		/* the thread's own line: the result is used */
		count(&t->ops);
	}
}

static void maps_reader(struct wl_thread *t)
{
	struct wl_run *run = t->run;
	struct mm_vma_info buf[64];
	size_t n;

	while (!stopping(run)) {
		if (mm_maps(run->mm, buf, 64, &n))
			t->errors++;
		else
			count(&t->side_ops);
	}
}

static void *thread_main(void *arg)
{
	struct wl_thread *t = arg;
	struct wl_run *run = t->run;
	int workload = run->cfg->workload;

	/* Acquire: the configuration and mm set-up happen before the gate opens. */
	while (!atomic_load_explicit(&run->go, memory_order_acquire))
		mln_futex_wait_until(&run->go, 0, MLN_NO_DEADLINE, FUTEX_BITSET_MATCH_ANY, 0);
	if (workload == WL_MAPS_READER && t->index == (uint32_t)run->cfg->threads)
		maps_reader(t);
	else if (workload == WL_MMAP1)
		mmap1(t);
	else if (workload == WL_COMPUTE)
		compute(t);
	else if (workload == WL_FAULT_MIX || workload == WL_FAULT_PRIVATE ||
		 workload == WL_FAULT_READ)
		fault_mix(t);
	else
		page_fault1(t);
	return NULL;
}

static bool is_mix(const struct wl_config *cfg)
{
	return cfg->workload == WL_FAULT_MIX || cfg->workload == WL_FAULT_PRIVATE ||
	       cfg->workload == WL_FAULT_READ;
}

static int check_config(const struct wl_config *cfg)
{
	if (cfg->workload < WL_PAGE_FAULT1 || cfg->workload > WL_COMPUTE ||
	    cfg->threads < 1 || cfg->threads > WL_MAX_THREADS || !cfg->interval_ns ||
	    !cfg->samples || cfg->samples > WL_MAX_SAMPLES)
		return -EINVAL;
	if ((cfg->workload == WL_PAGE_FAULT1 || cfg->workload == WL_MMAP1 ||
	     cfg->workload == WL_MAPS_READER) &&
	    (!cfg->region_bytes || cfg->region_bytes % PG))
		return -EINVAL;
	if (is_mix(cfg) &&
	    (!cfg->mix_vmas || !cfg->mix_pages || cfg->mix_write_percent > 100 ||
	     cfg->mix_remap_per_million > 1000000 ||
	     /* the set must fit below the top of the address space */
	     (uint64_t)mix_total_vmas(cfg) * (cfg->mix_pages + 1) > (1ull << 30)))
		return -EINVAL;
	return 0;
}

/* What the whole process has spent so far: every thread's, not the caller's. */
struct usage {
	uint64_t switches, cpu_ns;
};

static struct usage process_usage(void)
{
	struct rusage ru;
	struct usage u = { 0, 0 };

	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		u.switches = (uint64_t)ru.ru_nvcsw + (uint64_t)ru.ru_nivcsw;
		u.cpu_ns = ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) *
				   MLN_NSEC_PER_SEC +
			   ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000;
	}
	return u;
}

static uint64_t sum_ops(const struct wl_run *run, int n)
{
	uint64_t s = 0;

	for (int i = 0; i < n; i++)
		s += atomic_load_explicit(&run->threads[i].ops, memory_order_relaxed);
	return s;
}

static void sleep_until(uint64_t deadline_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline_ns / MLN_NSEC_PER_SEC),
			       .tv_nsec = (long)(deadline_ns % MLN_NSEC_PER_SEC) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* The fault workloads' VMAs, mapped before the threads start. */
static int mix_setup(struct mm_struct *mm, const struct wl_config *cfg)
{
	for (uint32_t i = 0; i < mix_total_vmas(cfg); i++) {
		uint64_t addr = mix_vma_addr(cfg, i);

		if (mm_mmap(mm, addr, (uint64_t)cfg->mix_pages * PG, RW,
			    ANON_PRIVATE | MAP_FIXED) != (int64_t)addr)
			return -ENOMEM;
	}
	return 0;
}

int wl_run(struct mm_struct *mm, const struct wl_config *cfg, struct wl_result *out)
{
	struct wl_run run = { .mm = mm, .cfg = cfg };
	struct usage usage_before, usage_after;
	int nthreads = cfg->threads + (cfg->workload == WL_MAPS_READER);
	int started = 0, rc = check_config(cfg);
	uint64_t t0, prev_ops, prev_ns;

	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	if (is_mix(cfg) && (rc = mix_setup(mm, cfg)))
		return rc;
	usage_before = process_usage();
	if (posix_memalign((void **)&run.threads, 64, (size_t)nthreads * sizeof(*run.threads)))
		return -ENOMEM;
	memset(run.threads, 0, (size_t)nthreads * sizeof(*run.threads));
	for (; started < nthreads; started++) {
		struct wl_thread *t = &run.threads[started];

		t->run = &run;
		t->index = (uint32_t)started;
		t->rng = (cfg->seed ? cfg->seed : 0x9e3779b9u) * (2 * (uint32_t)started + 1) | 1;
		if (pthread_create(&t->th, NULL, thread_main, t))
			break;
	}
	if (started < nthreads) {
		atomic_store_explicit(&run.stop, 1, memory_order_relaxed);	/* the started ones leave */
		rc = -EAGAIN;
	}
	/* Every thread starts at once (those created first do not run ahead). */
	atomic_store_explicit(&run.go, 1, memory_order_release);
	mln_futex_wake(&run.go, INT32_MAX, FUTEX_BITSET_MATCH_ANY, 0);
	t0 = mln_now_ns();
	if (!rc) {
		sleep_until(t0 + cfg->warmup_ns);
		prev_ns = mln_now_ns();
		prev_ops = sum_ops(&run, nthreads);
		for (uint32_t i = 0; i < cfg->samples; i++) {
			uint64_t now, ops;

			sleep_until(t0 + cfg->warmup_ns + (uint64_t)(i + 1) * cfg->interval_ns);
			now = mln_now_ns();
			ops = sum_ops(&run, nthreads);
			out->sample_ns[i] = now - prev_ns;
			out->sample_ops[i] = ops - prev_ops;
			out->ops_total += ops - prev_ops;
			prev_ns = now;
			prev_ops = ops;
		}
		out->samples = cfg->samples;
		atomic_store_explicit(&run.stop, 1, memory_order_relaxed);
	}
	for (int i = 0; i < started; i++) {
		pthread_join(run.threads[i].th, NULL);
		out->ops_all += atomic_load_explicit(&run.threads[i].ops, memory_order_relaxed);
		out->side_ops_total += atomic_load_explicit(&run.threads[i].side_ops,
							    memory_order_relaxed);
		out->segv += run.threads[i].segv;
		out->errors += run.threads[i].errors;
	}
	out->wall_ns = mln_now_ns() - t0;
	usage_after = process_usage();
	out->ctx_switches = usage_after.switches - usage_before.switches;
	out->cpu_ns = usage_after.cpu_ns - usage_before.cpu_ns;
	free(run.threads);
	if (is_mix(cfg)) {
		int unmapped = mm_munmap(mm, MIX_BASE, mix_vma_addr(cfg, mix_total_vmas(cfg)) - MIX_BASE);

		if (unmapped && !rc)
			rc = unmapped;
	}
	return rc;
}
