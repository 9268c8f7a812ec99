/* SPDX-License-Identifier: MIT */
/*
 * rwsem_torture.c - a userspace locktorture for the rw_semaphore, after the
 * kernel's kernel/locking/locktorture.c (torture_type=rwsem_lock), extended
 * to the paths locktorture leaves out: downgrade, trylocks, killable and
 * timed waits under task_kill()/task_revive().
 *
 *   rwsem_torture [--seconds N] [--readers N] [--writers N] [--downgraders N]
 *                 [--trylockers N] [--killable N] [--stutter MS] [--shared]
 *
 * --shared tortures a process-shared semaphore (RWSEM_SHARED), whose every
 * operation goes through the robust wait-lock sections of rwsem_shared.c.
 *
 * Invariants checked on every acquisition (as locktorture's):
 *   - a writer enters with the write_held flag false and no reader inside;
 *   - a reader enters with write_held false;
 *   - a downgrader holds write (checks as a writer), then after
 *     downgrade_write() write_held is still false, the lock is not
 *     write-locked, and the data it wrote is unchanged (no writer slipped in);
 *   - the protected data (two plain words written by writers) is never torn;
 *   - -ETIMEDOUT only from timed calls, at or after their deadline; -EINTR
 *     only from killable calls.
 * At the end: every thread acquired at least once, and the lock is free with
 * an empty queue.  An unfair spread (max/2 > min, locktorture's "???") is
 * reported, not failed.  Exit status 0 = SUCCESS.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rwsem.h"
#include "task.h"
#include "test_util.h"

enum kind { K_WRITER, K_READER, K_DOWNGRADER, K_TRYLOCKER, K_KILLABLE, NR_KINDS };

static const char *const kind_name[NR_KINDS] = {
	"Writes", "Reads ", "Downgrades", "Trylocks", "Killable",
};

struct opts {
	int seconds;
	int nr[NR_KINDS];
	int stutter_ms;
	bool shared;
};

struct worker {
	enum kind kind;
	int idx;
	pthread_t th;
	_Atomic uint64_t task;
	atomic_int ready;
	uint64_t rng;
	/* Written by the worker only; read after it is joined. */
	long acquisitions;	/* successful acquisitions, all modes */
	long writes, reads, downgrades;
	long try_ok, try_fail, fallbacks;
	long timeouts, kills, interrupts, cancels;
	long fails;		/* invariant violations seen by this thread */
	uint64_t max_wait_ns;
};

static struct rw_semaphore sem;
static atomic_bool write_held;		/* locktorture's lock_is_write_held */
static atomic_int read_held;		/* locktorture's lock_is_read_held */
static struct {
	uint64_t a, b;			/* plain: written by writers, equal outside a write */
} data;
static atomic_int go, stop;
static atomic_int stutter;		/* workers pause between acquisitions */
static atomic_int paused;		/* workers now paused */
static atomic_long n_fail;
static atomic_long kills_issued, signals_sent;

static void on_sigusr1(int sig)
{
	(void)sig;
}

#define MAX_REPORTS 20

__attribute__((format(printf, 2, 3)))
static void violation(struct worker *w, const char *fmt, ...)
{
	va_list ap;
	long n = atomic_fetch_add(&n_fail, 1);

	w->fails++;
	if (n >= MAX_REPORTS)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "!!! %s thread %d: ", kind_name[w->kind], w->idx);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

/* ------------------------------------------------------------------------
 * Critical sections.
 */
static void hold_delay(struct worker *w, int write)
{
	uint64_t r = tu_rand(&w->rng);

	/* Rarely a long hold (locktorture's long_hold, scaled down), else a short spin. */
	if (r % 4000 == 0)
		tu_sleep_us(write ? 1000 : 2000);
	else
		tu_spin((unsigned int)(r >> 32) % (write ? 400u : 800u));
}

/* Returns the value written. */
static uint64_t writer_enter(struct worker *w)
{
	uint64_t v;

	if (atomic_exchange(&write_held, true))
		violation(w, "writer entered while write_held");
	if (atomic_load(&read_held) != 0)
		violation(w, "writer entered with %d readers inside", atomic_load(&read_held));
	if (!rwsem_is_write_locked(&sem))
		violation(w, "writer inside but lock not write-locked (count 0x%x)",
			  rwsem_count(&sem));
	if (rwsem_write_owner(&sem) != atomic_load_explicit(&w->task, memory_order_relaxed))
		violation(w, "write owner %llu is not us",
			  (unsigned long long)rwsem_write_owner(&sem));
	v = data.a;
	if (data.b != v)
		violation(w, "torn data %llu/%llu", (unsigned long long)v,
			  (unsigned long long)data.b);
	data.a = v + 1;
	hold_delay(w, 1);
	data.b = v + 1;
	return v + 1;
}

static void writer_exit(struct worker *w)
{
	if (!atomic_exchange(&write_held, false))
		violation(w, "write_held cleared under a writer");
}

static void reader_enter(struct worker *w)
{
	atomic_fetch_add(&read_held, 1);
	if (atomic_load(&write_held))
		violation(w, "reader entered while write_held");
	if (data.a != data.b)
		violation(w, "reader saw torn data %llu/%llu", (unsigned long long)data.a,
			  (unsigned long long)data.b);
	hold_delay(w, 0);
	if (data.a != data.b)
		violation(w, "data changed under a reader");
}

static void reader_exit(struct worker *w)
{
	(void)w;
	atomic_fetch_sub(&read_held, 1);
}

static void do_write(struct worker *w)
{
	writer_enter(w);
	writer_exit(w);
	w->writes++;
	w->acquisitions++;
}

static void do_read(struct worker *w)
{
	reader_enter(w);
	reader_exit(w);
	w->reads++;
	w->acquisitions++;
}

static void check_rc(struct worker *w, const char *what, int rc)
{
	if (rc != 0)
		violation(w, "%s returned %d", what, rc);
}

static void note_wait(struct worker *w, uint64_t t0)
{
	uint64_t dt = tu_now_ns() - t0;

	if (dt > w->max_wait_ns)
		w->max_wait_ns = dt;
}

/* Between acquisitions: a little slack, occasionally a yield, and the stutter pause. */
static void between(struct worker *w)
{
	uint64_t r = tu_rand(&w->rng);

	if (r % 64 == 0)
		sched_yield();
	else
		tu_spin((unsigned int)(r >> 40) % 200u);
	if (atomic_load_explicit(&stutter, memory_order_relaxed)) {
		atomic_fetch_add(&paused, 1);
		while (atomic_load(&stutter) && !atomic_load(&stop))
			tu_sleep_us(200);
		atomic_fetch_sub(&paused, 1);
	}
}

/* ------------------------------------------------------------------------
 * The thread kinds.
 */
static void writer_round(struct worker *w)
{
	uint64_t t0 = tu_now_ns();
	uint64_t r = tu_rand(&w->rng);
	int rc = (r & 3) == 0 ? down_write_nested(&sem, (int)((r >> 8) % RWSEM_MAX_SUBCLASSES))
			      : down_write(&sem);

	note_wait(w, t0);
	check_rc(w, "down_write", rc);
	if (rc)
		return;
	do_write(w);
	check_rc(w, "up_write", up_write(&sem));
}

static void reader_round(struct worker *w)
{
	uint64_t t0 = tu_now_ns();
	int rc = down_read(&sem);

	note_wait(w, t0);
	check_rc(w, "down_read", rc);
	if (rc)
		return;
	do_read(w);
	check_rc(w, "up_read", up_read(&sem));
}

static void downgrader_round(struct worker *w)
{
	uint64_t t0 = tu_now_ns();
	int rc = down_write(&sem);
	uint64_t v;

	note_wait(w, t0);
	check_rc(w, "down_write", rc);
	if (rc)
		return;
	v = writer_enter(w);
	w->writes++;
	w->acquisitions++;
	if (tu_rand(&w->rng) % 4 == 0) {	/* sometimes a plain writer */
		writer_exit(w);
		check_rc(w, "up_write", up_write(&sem));
		return;
	}
	/* Become a reader in the invariants first: nobody else can look until we downgrade. */
	atomic_fetch_add(&read_held, 1);
	writer_exit(w);
	check_rc(w, "downgrade_write", downgrade_write(&sem));
	w->downgrades++;
	if (atomic_load(&write_held))
		violation(w, "a writer got in right after downgrade");
	if (rwsem_is_write_locked(&sem))
		violation(w, "still write-locked after downgrade (count 0x%x)", rwsem_count(&sem));
	if (!rwsem_is_locked(&sem))
		violation(w, "not locked after downgrade");
	hold_delay(w, 0);
	if (data.a != v || data.b != v)
		violation(w, "data %llu/%llu changed after downgrade (wrote %llu)",
			  (unsigned long long)data.a, (unsigned long long)data.b,
			  (unsigned long long)v);
	atomic_fetch_sub(&read_held, 1);
	check_rc(w, "up_read after downgrade", up_read(&sem));
}

/*
 * Trylocks, falling back now and then to the blocking call as kernel callers
 * do (mmap_read_trylock() in the page fault path, say): under heavy
 * contention a trylock may legitimately never succeed, and the thread must
 * still make progress.  Trylock successes are reported separately.
 */
static void trylocker_round(struct worker *w)
{
	uint64_t r = tu_rand(&w->rng);
	int write = (int)(r & 1);
	int ok = write ? down_write_trylock(&sem) : down_read_trylock(&sem);

	if (ok == 0) {
		w->try_fail++;
		if ((r >> 8) % 8 != 0) {
			sched_yield();
			return;
		}
		ok = write ? down_write(&sem) : down_read(&sem);
		if (ok != 0) {
			violation(w, "fallback %s returned %d", write ? "down_write" : "down_read",
				  ok);
			return;
		}
		w->fallbacks++;
	} else if (ok == 1) {
		w->try_ok++;
	} else {
		violation(w, "%s returned %d", write ? "down_write_trylock" : "down_read_trylock",
			  ok);
		return;
	}
	if (write) {
		do_write(w);
		check_rc(w, "up_write", up_write(&sem));
	} else {
		do_read(w);
		check_rc(w, "up_read", up_read(&sem));
	}
}

/* A resumable wait (RWSEM_WAIT_KILLABLE | RWSEM_WAIT_SIGNALS): resume or cancel when interrupted. */
static int resumable_wait(struct worker *w, int write, uint64_t deadline)
{
	struct rwsem_waiter wt;

	memset(&wt, 0, sizeof(wt));
	for (;;) {
		int rc = rwsem_down_wait(&sem, &wt, write, deadline,
					 RWSEM_WAIT_KILLABLE | RWSEM_WAIT_SIGNALS);

		if (rc != RWSEM_WAIT_INTERRUPTED)
			return rc;
		w->interrupts++;
		if (!wt.queued)
			violation(w, "interrupted but not queued");
		if (tu_rand(&w->rng) % 4 == 0) {
			rc = rwsem_down_cancel(&sem, &wt);
			if (rc != 0)
				violation(w, "rwsem_down_cancel returned %d", rc);
			if (wt.queued)
				violation(w, "still queued after cancel");
			w->cancels++;
			return -ECANCELED;
		}
	}
}

/*
 * Killable, timed (0-2 ms deadlines) and resumable waits, while the killer
 * thread kills and revives these tasks and sends them signals.
 */
static void killable_round(struct worker *w)
{
	uint64_t r = tu_rand(&w->rng);
	int op = (int)(r % 6), write = op & 1;
	int timed = op == 2 || op == 3 || (op >= 4 && (r >> 8) % 2 == 0);
	uint64_t deadline = UINT64_MAX, t0 = tu_now_ns();
	int rc;

	if (timed)
		deadline = rwsem_now_ns() + (r >> 16) % (2 * TU_NS_PER_MS);
	if (op >= 4)
		rc = resumable_wait(w, write, deadline);
	else if (timed)
		rc = write ? down_write_timed(&sem, deadline) : down_read_timed(&sem, deadline);
	else
		rc = write ? down_write_killable(&sem) : down_read_killable(&sem);
	switch (rc) {
	case 0:
		note_wait(w, t0);
		if (write) {
			do_write(w);
			check_rc(w, "up_write", up_write(&sem));
		} else {
			do_read(w);
			check_rc(w, "up_read", up_read(&sem));
		}
		break;
	case -ETIMEDOUT:
		w->timeouts++;
		if (!timed)
			violation(w, "untimed %s returned -ETIMEDOUT", write ? "write" : "read");
		else if (rwsem_now_ns() < deadline)
			violation(w, "-ETIMEDOUT before the deadline");
		break;
	case -EINTR:
		w->kills++;
		if (op == 2 || op == 3)
			violation(w, "timed %s returned -EINTR", write ? "write" : "read");
		break;
	case -ECANCELED:
		break;
	default:
		violation(w, "op %d (%s) returned %d", op, write ? "write" : "read", rc);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	atomic_store(&w->task, task_current());
	atomic_store(&w->ready, 1);
	/* Everyone starts together, once all threads exist. */
	if (!WAIT_UNTIL(atomic_load(&go), TU_WAIT_MS))
		tu_hang(__FILE__, __LINE__, "no start signal");
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		switch (w->kind) {
		case K_WRITER: writer_round(w); break;
		case K_READER: reader_round(w); break;
		case K_DOWNGRADER: downgrader_round(w); break;
		case K_TRYLOCKER: trylocker_round(w); break;
		case K_KILLABLE: killable_round(w); break;
		default: break;
		}
		between(w);
	}
	return NULL;
}

/* ------------------------------------------------------------------------
 * The killer: kills one killable task for a moment, revives it, repeats.
 */
struct killer {
	uint64_t *ids;		/* task ids of the killable workers */
	pthread_t *threads;	/* and their threads, for signals */
	int nr;
	pthread_t th;
};

static void *killer_main(void *arg)
{
	struct killer *k = arg;
	uint64_t rng = 0x9e3779b97f4a7c15ull;

	while (!atomic_load(&stop)) {
		uint64_t id = k->ids[tu_rand(&rng) % (uint64_t)k->nr];
		int rc = task_kill(id);

		if (rc != 0) {
			fprintf(stderr, "!!! task_kill(%llu) returned %d\n", (unsigned long long)id,
				rc);
			atomic_fetch_add(&n_fail, 1);
			break;
		}
		atomic_fetch_add(&kills_issued, 1);
		/* And a signal, which ends a resumable wait (RWSEM_WAIT_INTERRUPTED). */
		pthread_kill(k->threads[tu_rand(&rng) % (uint64_t)k->nr], SIGUSR1);
		atomic_fetch_add(&signals_sent, 1);
		tu_sleep_us((unsigned int)(tu_rand(&rng) % 1000));
		rc = task_revive(id);
		if (rc != 0) {
			fprintf(stderr, "!!! task_revive(%llu) returned %d\n",
				(unsigned long long)id, rc);
			atomic_fetch_add(&n_fail, 1);
			break;
		}
		tu_sleep_us(1000 + (unsigned int)(tu_rand(&rng) % 2000));
	}
	return NULL;
}

/*
 * locktorture's stutter, turned into a mid-run check: every worker pauses
 * between acquisitions; once all are paused nobody holds or awaits the lock,
 * so it must be entirely free -- no reader bias, no WAITERS or HANDOFF flag
 * left behind by the give-ups and handoffs so far -- and both trylocks must
 * succeed.  Then everyone restarts at once.
 */
static void quiescent_check(int nw)
{
	uint32_t qr, qw, c;
	uint64_t h;

	atomic_store(&stutter, 1);
	if (!WAIT_UNTIL(atomic_load(&paused) == nw, TU_WAIT_MS)) {
		fprintf(stderr, "!!! stutter: only %d of %d workers paused within %u ms "
			"(count 0x%x)\n", atomic_load(&paused), nw, TU_WAIT_MS, rwsem_count(&sem));
		atomic_fetch_add(&n_fail, 1);
	} else {
		c = rwsem_count(&sem);
		rwsem_queue_info(&sem, &qr, &qw, &h);
		if (c != 0 || qr || qw) {
			fprintf(stderr, "!!! quiescent lock not free: count 0x%x, queued %u readers "
				"%u writers\n", c, qr, qw);
			atomic_fetch_add(&n_fail, 1);
		}
		if (down_read_trylock(&sem) != 1 || up_read(&sem) != 0 ||
		    down_write_trylock(&sem) != 1 || up_write(&sem) != 0) {
			fprintf(stderr, "!!! trylocks failed on the quiescent lock (count 0x%x)\n",
				rwsem_count(&sem));
			atomic_fetch_add(&n_fail, 1);
		}
	}
	atomic_store(&stutter, 0);
}

/* ------------------------------------------------------------------------
 * Driver.
 */
static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [--seconds N] [--readers N] [--writers N] [--downgraders N]\n"
		"          [--trylockers N] [--killable N] [--stutter MS] [--shared]\n",
		prog);
	exit(2);
}

static int parse_int(const char *prog, const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < 0 || v > 100000)
		usage(prog);
	return (int)v;
}

static void parse(int argc, char **argv, struct opts *o)
{
	static const struct {
		const char *name;
		int kind;	/* -1 seconds, -2 stutter */
	} table[] = {
		{ "--seconds", -1 },	{ "--readers", K_READER },
		{ "--writers", K_WRITER }, { "--downgraders", K_DOWNGRADER },
		{ "--trylockers", K_TRYLOCKER }, { "--killable", K_KILLABLE },
		{ "--stutter", -2 },
	};

	for (int i = 1; i < argc; i++) {
		bool found = false;

		if (strcmp(argv[i], "--shared") == 0) {
			o->shared = true;
			continue;
		}
		for (size_t t = 0; t < sizeof(table) / sizeof(table[0]); t++) {
			if (strcmp(argv[i], table[t].name) != 0)
				continue;
			if (i + 1 >= argc)
				usage(argv[0]);
			int v = parse_int(argv[0], argv[++i]);

			if (table[t].kind == -1)
				o->seconds = v;
			else if (table[t].kind == -2)
				o->stutter_ms = v;
			else
				o->nr[table[t].kind] = v;
			found = true;
			break;
		}
		if (!found)
			usage(argv[0]);
	}
}

static void watchdog(int sig)
{
	static const char msg[] = "\nrwsem_torture: WATCHDOG: the run did not end in time "
				  "(a thread is stuck in the lock)\nEnd of test: FAILURE\n";
	ssize_t r;

	(void)sig;
	r = write(2, msg, sizeof(msg) - 1);
	(void)r;
	_exit(4);
}

/* One locktorture-style statistics line for @kind; returns its thread count. */
static int stats_line(enum kind kind, struct worker *ws, int nw)
{
	long total = 0, max = 0, min = -1, fails = 0, try_ok = 0, try_fail = 0, fallbacks = 0;
	int n = 0;

	for (int i = 0; i < nw; i++) {
		struct worker *w = &ws[i];

		if (w->kind != kind)
			continue;
		n++;
		total += w->acquisitions;
		if (w->acquisitions > max)
			max = w->acquisitions;
		if (min < 0 || w->acquisitions < min)
			min = w->acquisitions;
		fails += w->fails;
		try_ok += w->try_ok;
		try_fail += w->try_fail;
		fallbacks += w->fallbacks;
	}
	if (n == 0)
		return 0;
	printf("%s:  Total: %ld  Max/Min: %ld/%ld %s  Fail: %ld %s", kind_name[kind], total,
	       max, min, max / 2 > min ? "???" : "   ", fails, fails ? "!!!" : "");
	if (kind == K_TRYLOCKER)
		printf("  (trylock ok %ld, failed %ld, blocking fallbacks %ld)", try_ok, try_fail,
		       fallbacks);
	printf("\n");
	return n;
}

int main(int argc, char **argv)
{
	struct opts o = {
		.seconds = 3,
		.stutter_ms = 500,
		.nr = { [K_WRITER] = 2, [K_READER] = 2, [K_DOWNGRADER] = 1,
			[K_TRYLOCKER] = 1, [K_KILLABLE] = 2 },
	};
	struct worker *ws;
	struct killer killer = { 0 };
	struct sigaction sa;
	int nw = 0, idx[NR_KINDS] = { 0 }, zero = 0, ok, stutters = 0;
	long writes = 0, reads = 0, downgrades = 0, timeouts = 0, kills = 0, interrupts = 0,
	     cancels = 0;
	uint64_t max_wait[NR_KINDS] = { 0 }, t_end, handoffs;
	uint32_t qr, qw;

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse(argc, argv, &o);
	tu_current = "rwsem_torture";
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = watchdog;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	/* No SA_RESTART: a signal interrupts a futex wait, as a Python signal would. */
	sa.sa_handler = on_sigusr1;
	sigaction(SIGUSR1, &sa, NULL);
	/* Generous: sanitizers and a loaded 2-core machine. */
	alarm((unsigned int)o.seconds + 120u);

	for (int k = 0; k < NR_KINDS; k++)
		nw += o.nr[k];
	ws = calloc((size_t)(nw ? nw : 1), sizeof(*ws));
	if (!ws)
		return 2;
	rwsem_init(&sem, o.shared ? RWSEM_SHARED : 0);
	printf("rwsem_torture: Start of test: seconds=%d writers=%d readers=%d downgraders=%d "
	       "trylockers=%d killable=%d stutter=%dms shared=%d\n",
	       o.seconds, o.nr[K_WRITER], o.nr[K_READER], o.nr[K_DOWNGRADER],
	       o.nr[K_TRYLOCKER], o.nr[K_KILLABLE], o.stutter_ms, o.shared);

	/* Interleave the kinds, writers first in each round, as locktorture does. */
	{
		int left = nw, n = 0;

		while (left > 0) {
			for (int k = 0; k < NR_KINDS; k++) {
				if (idx[k] >= o.nr[k])
					continue;
				ws[n].kind = (enum kind)k;
				ws[n].idx = idx[k]++;
				ws[n].rng = 0x243f6a8885a308d3ull * (uint64_t)(n + 1) + 1;
				n++;
				left--;
			}
		}
	}
	for (int i = 0; i < nw; i++)
		tu_create(&ws[i].th, worker_main, &ws[i]);
	for (int i = 0; i < nw; i++)
		if (!WAIT_UNTIL(atomic_load(&ws[i].ready), TU_WAIT_MS))
			tu_hang(__FILE__, __LINE__, "worker did not start");
	killer.ids = calloc((size_t)(o.nr[K_KILLABLE] ? o.nr[K_KILLABLE] : 1), sizeof(uint64_t));
	killer.threads = calloc((size_t)(o.nr[K_KILLABLE] ? o.nr[K_KILLABLE] : 1),
				sizeof(pthread_t));
	if (!killer.ids || !killer.threads)
		return 2;
	for (int i = 0; i < nw; i++) {
		if (ws[i].kind == K_KILLABLE) {
			killer.threads[killer.nr] = ws[i].th;
			killer.ids[killer.nr++] = atomic_load(&ws[i].task);
		}
	}
	if (killer.nr)
		tu_create(&killer.th, killer_main, &killer);
	atomic_store(&go, 1);

	t_end = tu_now_ns() + (uint64_t)o.seconds * 1000000000ull;
	{
		uint64_t next = tu_now_ns() + (uint64_t)o.stutter_ms * TU_NS_PER_MS;

		while (tu_now_ns() < t_end && atomic_load(&n_fail) == 0) {
			tu_sleep_us(5000);
			if (o.stutter_ms && tu_now_ns() >= next && tu_now_ns() < t_end) {
				quiescent_check(nw);
				stutters++;
				next = tu_now_ns() + (uint64_t)o.stutter_ms * TU_NS_PER_MS;
			}
		}
	}
	atomic_store(&stop, 1);
	if (killer.nr)
		JOIN(killer.th, "killer");
	for (int i = 0; i < nw; i++)
		JOIN(ws[i].th, kind_name[ws[i].kind]);

	for (int i = 0; i < nw; i++) {
		struct worker *w = &ws[i];

		writes += w->writes;
		reads += w->reads;
		downgrades += w->downgrades;
		timeouts += w->timeouts;
		kills += w->kills;
		interrupts += w->interrupts;
		cancels += w->cancels;
		if (w->max_wait_ns > max_wait[w->kind])
			max_wait[w->kind] = w->max_wait_ns;
		if (w->acquisitions == 0) {
			fprintf(stderr, "!!! %s thread %d never acquired the lock\n",
				kind_name[w->kind], w->idx);
			zero++;
		}
	}
	for (int k = 0; k < NR_KINDS; k++)
		stats_line((enum kind)k, ws, nw);
	printf("Totals:  write acquisitions %ld, read acquisitions %ld, downgrades %ld\n",
	       writes, reads, downgrades);
	if (o.nr[K_KILLABLE])
		printf("Killable:  timeouts %ld, -EINTR %ld (kills issued %ld), interrupted %ld "
		       "(signals sent %ld), cancelled %ld\n",
		       timeouts, kills, atomic_load(&kills_issued), interrupts,
		       atomic_load(&signals_sent), cancels);
	rwsem_queue_info(&sem, &qr, &qw, &handoffs);
	printf("Stutter:  %d quiescent checks (every %d ms)\n", stutters, o.stutter_ms);
	printf("Max wait:  writer %.3f ms, reader %.3f ms, downgrader %.3f ms, "
	       "killable %.3f ms; handoffs %llu\n",
	       max_wait[K_WRITER] / 1e6, max_wait[K_READER] / 1e6, max_wait[K_DOWNGRADER] / 1e6,
	       max_wait[K_KILLABLE] / 1e6, (unsigned long long)handoffs);

	ok = atomic_load(&n_fail) == 0 && zero == 0;
	if (rwsem_count(&sem) != 0 || qr != 0 || qw != 0) {
		fprintf(stderr, "!!! lock not free at the end: count 0x%x, queued %u readers %u writers\n",
			rwsem_count(&sem), qr, qw);
		ok = 0;
	}
	if (atomic_load(&write_held) || atomic_load(&read_held)) {
		fprintf(stderr, "!!! invariant flags not clear at the end\n");
		ok = 0;
	}
	for (int i = 0; i < killer.nr; i++) {
		if (task_is_killed(killer.ids[i])) {
			fprintf(stderr, "!!! a killable task was left killed\n");
			ok = 0;
		}
	}
	printf("rwsem_torture: End of test: %s (%ld invariant violations, %d idle threads)\n",
		       ok ? "SUCCESS" : "FAILURE", atomic_load(&n_fail), zero);
	free(killer.ids);
	free(killer.threads);
	free(ws);
	return ok ? 0 : 1;
}
