/* SPDX-License-Identifier: MIT */
/*
 * test_rwsem_kill_trials.c - random SIGKILLs against a process-shared
 * semaphore in use (issue 10, C): no death wedges it.
 *
 * Each trial forks WORKERS processes that run random operations on a fresh
 * shared semaphore (every kind of acquisition, trylocks, timed, killable,
 * downgrade) and check each other: a writer must be alone, a reader must
 * see no writer, and a pair of counters that writers update in two steps
 * must be equal for a reader, unless the reader was told that a writer died
 * holding the lock (-EOWNERDEAD: the first writer told repairs the pair).
 * After a random time one worker is stopped, what it held is noted, and it
 * is SIGKILLed.  Then this process must get the write lock (the recovery
 * time is from the kill to that), every survivor must make progress, and at
 * the end the lock must be free and consistent.  A trial that fails any of
 * these within TRIAL_BOUND_MS is wedged.
 *
 *   test_rwsem_kill_trials [--trials N] [--only NAME]... [--list]
 *
 * N defaults to 500, and to 100 in the sanitizer builds (fork is slower
 * there; the opt build runs the full count).  Other arguments are ignored.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rwsem.h"
#include "test_util.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define DEFAULT_TRIALS 100
#else
#define DEFAULT_TRIALS 500
#endif
#define WORKERS 3
/* Every step of a trial that must end does so within this. */
#define TRIAL_BOUND_MS 5000u
#define WL_PID_MASK ((1u << 22) - 1)

struct area {
	struct rw_semaphore sem;
	uint64_t pair[2];		/* writers: [0]++, spin, [1]++; readers: equal */
	atomic_int stop;
	atomic_int started;
	atomic_int dead[WORKERS + 1];	/* set before the kill: its witness no longer counts */
	atomic_int in[WORKERS + 1];	/* 1 inside for read, 2 for write; [WORKERS]: this process */
	_Atomic uint64_t ops[WORKERS];
	atomic_int violations;		/* two writers, or a writer and a reader, inside */
	atomic_int torn;		/* a reader saw the pair unequal without being told */
	atomic_int errors;		/* an operation returned what it must not */
};

static unsigned long trials = DEFAULT_TRIALS;

static uint64_t ms_from_now(unsigned int ms)
{
	return rwsem_now_ns() + (uint64_t)ms * TU_NS_PER_MS;
}

static bool got(int rc)
{
	return rc == 0 || rc == -EOWNERDEAD;
}

/* Enter as @mode (1 read, 2 write) and check nobody alive excludes us. */
static void enter(struct area *a, int id, int mode)
{
	atomic_store(&a->in[id], mode);
	for (int j = 0; j <= WORKERS; j++) {
		int other = j == id || atomic_load(&a->dead[j]) ? 0 : atomic_load(&a->in[j]);

		if (other == 2 || (mode == 2 && other))
			atomic_fetch_add(&a->violations, 1);
	}
}

static void leave(struct area *a, int id)
{
	atomic_store(&a->in[id], 0);
}

/* The write section: @rc told whether the last writer died mid-update. */
static void write_section(struct area *a, int id, int rc)
{
	enter(a, id, 2);
	if (rc == -EOWNERDEAD)
		a->pair[1] = a->pair[0];	/* the repair the indication asks for */
	a->pair[0]++;
	tu_spin(200);			/* a death here leaves the pair torn */
	a->pair[1]++;
	leave(a, id);
}

static void read_section(struct area *a, int id, int rc)
{
	enter(a, id, 1);
	if (rc == 0 && a->pair[0] != a->pair[1])
		atomic_fetch_add(&a->torn, 1);
	tu_spin(100);
	leave(a, id);
}

static void check(struct area *a, int rc)
{
	if (rc)
		atomic_fetch_add(&a->errors, 1);
}

/* One random operation. */
static void operate(struct area *a, int id, uint64_t *seed)
{
	struct rw_semaphore *sem = &a->sem;
	int rc;

	switch (tu_rand(seed) % 9) {
	case 0:
		rc = down_read(sem);
		goto read;
	case 1:
		rc = down_read_timed(sem, ms_from_now(1));
		if (rc == -ETIMEDOUT)
			return;
		goto read;
	case 2:
		rc = down_read_killable(sem);
		goto read;
	case 3:
		rc = down_read_trylock(sem);
		if (rc == 0)
			return;
		rc = rc == 1 ? 0 : rc;
		goto read;
	case 4:
		rc = down_write(sem);
		goto write;
	case 5:
		rc = down_write_timed(sem, ms_from_now(1));
		if (rc == -ETIMEDOUT)
			return;
		goto write;
	case 6:
		rc = down_write_killable(sem);
		goto write;
	case 7:
		rc = down_write_trylock(sem);
		if (rc == 0)
			return;
		rc = rc == 1 ? 0 : rc;
		goto write;
	default:	/* write, then downgrade */
		rc = down_write(sem);
		if (!got(rc))
			break;
		write_section(a, id, rc);
		check(a, downgrade_write(sem));
		read_section(a, id, 0);
		check(a, up_read(sem));
		return;
	}
	check(a, rc);	/* only the unexpected returns come here */
	return;
read:
	if (!got(rc))
		goto fail;
	read_section(a, id, rc);
	check(a, up_read(sem));
	return;
write:
	if (!got(rc))
		goto fail;
	write_section(a, id, rc);
	check(a, up_write(sem));
	return;
fail:
	check(a, rc);
}

static int worker(struct area *a, int id, uint64_t seed)
{
	atomic_fetch_add(&a->started, 1);
	while (!atomic_load_explicit(&a->stop, memory_order_relaxed)) {
		operate(a, id, &seed);
		atomic_fetch_add(&a->ops[id], 1);
	}
	return 0;
}

/* What the victim had when it was stopped, for the report. */
enum victim { V_WAIT_LOCK, V_WRITER, V_READER, V_QUEUED, V_NOTHING, V_KINDS };
static const char *const victim_name[V_KINDS] = {
	"inside the wait-lock", "write holders", "read holders", "queued", "holding nothing",
};

static enum victim classify(struct area *a, pid_t pid)
{
	const struct rw_semaphore *sem = &a->sem;

	if ((atomic_load(&sem->wait_lock) & WL_PID_MASK) == (uint32_t)pid)
		return V_WAIT_LOCK;
	for (int i = 0; i < RWSEM_SLOTS; i++) {
		const struct rwsem_slot *s = &sem->q.slots[i];

		if (s->pid != (uint32_t)pid)
			continue;
		if (sem->q.writer_slot == i + 1)
			return V_WRITER;
		if (s->reads)
			return V_READER;
		if (s->queued_readers || s->queued_writers)
			return V_QUEUED;
	}
	return V_NOTHING;
}

struct tally {
	unsigned long wedged, victims[V_KINDS];
	double *recovery_ms, *reaped_ms;	/* all trials; those whose victim had something */
	unsigned long n_recovered, n_reaped;
};

/*
 * Recovery: this process takes the lock for write (repairing the pair if
 * told to), then for read (a dead queued writer would keep readers out).
 * 0, or the step that failed within TRIAL_BOUND_MS.
 */
static int recover(struct area *a)
{
	int rc = down_write_timed(&a->sem, ms_from_now(TRIAL_BOUND_MS));

	if (!got(rc))
		return 1;
	write_section(a, WORKERS, rc);
	if (up_write(&a->sem))
		return 2;
	rc = down_read_timed(&a->sem, ms_from_now(TRIAL_BOUND_MS));
	if (!got(rc))
		return 3;
	read_section(a, WORKERS, rc);
	return up_read(&a->sem) ? 4 : 0;
}

/* Each survivor's operation count passes what it was: it made progress. */
static bool survivors_progress(struct area *a, int victim)
{
	uint64_t before[WORKERS];

	for (int i = 0; i < WORKERS; i++)
		before[i] = atomic_load(&a->ops[i]);
	for (int i = 0; i < WORKERS; i++)
		if (i != victim && !WAIT_UNTIL(atomic_load(&a->ops[i]) > before[i], TRIAL_BOUND_MS))
			return false;
	return true;
}

/* One trial: true unless it wedged. */
static bool trial(uint64_t *seed, struct tally *t, unsigned long n)
{
	struct area *a = tu_shared_alloc(sizeof(*a));
	pid_t pid[WORKERS];
	int victim = (int)(tu_rand(seed) % WORKERS), rc;
	bool ok = true;
	enum victim kind;
	uint64_t killed_at;
	uint32_t qr, qw;
	uint64_t h;

	CHECK_EQ(rwsem_init(&a->sem, RWSEM_SHARED), 0);
	for (int i = 0; i < WORKERS; i++) {
		uint64_t s = tu_rand(seed) | 1;

		pid[i] = tu_fork();
		if (pid[i] == 0)
			_exit(worker(a, i, s));
	}
	EXPECT_WITHIN(atomic_load(&a->started) == WORKERS, TRIAL_BOUND_MS);
	tu_spin((unsigned int)(tu_rand(seed) % 2000000));	/* let them run: 0 to a few ms */

	kill(pid[victim], SIGSTOP);
	CHECK(tu_wait_stopped(pid[victim], TRIAL_BOUND_MS));
	kind = classify(a, pid[victim]);
	t->victims[kind]++;
	atomic_store(&a->dead[victim], 1);
	killed_at = rwsem_now_ns();
	kill(pid[victim], SIGKILL);

	rc = recover(a);
	if (rc == 0) {
		double ms = (double)(rwsem_now_ns() - killed_at) / 1e6;

		t->recovery_ms[t->n_recovered++] = ms;
		if (kind != V_NOTHING)
			t->reaped_ms[t->n_reaped++] = ms;
	} else {
		printf("    trial %lu: this process could not take the lock within %u ms after "
		       "killing a worker %s (step %d)\n", n, TRIAL_BOUND_MS, victim_name[kind], rc);
		ok = false;
	}
	if (ok && !survivors_progress(a, victim)) {
		printf("    trial %lu: a survivor made no progress after the kill (%s)\n", n,
		       victim_name[kind]);
		ok = false;
	}
	atomic_store(&a->stop, 1);
	for (int i = 0; i < WORKERS; i++) {
		int status = tu_wait_child(pid[i], TRIAL_BOUND_MS);

		if (i == victim)
			CHECK_EQ(status, 128 + SIGKILL);
		else if (status != 0)
			ok = false;
	}
	/* Free and consistent, with nobody left, once this process has taken it again. */
	if (ok && recover(a))
		ok = false;
	qr = qw = UINT32_MAX;
	if (rwsem_count(&a->sem) != 0 || rwsem_queue_info(&a->sem, &qr, &qw, &h) || qr || qw ||
	    rwsem_validate(&a->sem, RWSEM_SHARED)) {
		printf("    trial %lu: left state 0x%x, queue %u/%u (%s)\n", n, rwsem_count(&a->sem),
		       qr, qw, victim_name[kind]);
		ok = false;
	}
	CHECK_EQ(atomic_load(&a->violations), 0);
	CHECK_EQ(atomic_load(&a->torn), 0);
	CHECK_EQ(atomic_load(&a->errors), 0);
	munmap(a, sizeof(*a));
	return ok;
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return (a > b) - (a < b);
}

static double percentile(double *v, unsigned long n, double p)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(unsigned long)(p * (double)(n - 1) + 0.5)];
}

static void t_random_kills(void)
{
	struct tally t = {0};
	uint64_t seed = 0x2545f4914f6cdd1dull ^ ((uint64_t)getpid() << 16) ^ rwsem_now_ns();
	unsigned long n;

	t.recovery_ms = calloc(trials, sizeof(double));
	t.reaped_ms = calloc(trials, sizeof(double));
	if (!t.recovery_ms || !t.reaped_ms) {
		perror("calloc");
		exit(2);
	}
	for (n = 0; n < trials; n++) {
		tu_watchdog_arm(TU_TEST_TIMEOUT_S);	/* per trial: the whole run may take longer */
		if (!trial(&seed, &t, n))
			t.wedged++;
	}
	printf("    kill trials: %lu, wedged: %lu\n", trials, t.wedged);
	printf("    victims:");
	for (int k = 0; k < V_KINDS; k++)
		printf(" %lu %s%s", t.victims[k], victim_name[k], k + 1 < V_KINDS ? "," : "\n");
	printf("    recovery (kill to this process holding it for write, then read), all trials: p50 %.1f ms, "
	       "p99 %.1f ms, max %.1f ms\n", percentile(t.recovery_ms, t.n_recovered, 0.5),
	       percentile(t.recovery_ms, t.n_recovered, 0.99),
	       percentile(t.recovery_ms, t.n_recovered, 1.0));
	printf("    recovery, trials whose victim held, awaited or was inside it (%lu): p50 %.1f ms, "
	       "max %.1f ms\n", t.n_reaped, percentile(t.reaped_ms, t.n_reaped, 0.5),
	       percentile(t.reaped_ms, t.n_reaped, 1.0));
	CHECK_EQ(t.wedged, 0);
	free(t.recovery_ms);
	free(t.reaped_ms);
}

#define T(fn) TU_TEST(fn)
static const struct tu_test tests[] = {
	T(t_random_kills),
};

int main(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "--trials") == 0)
			trials = strtoul(argv[i + 1], NULL, 10);
	if (!trials)
		trials = 1;
	return tu_run("test_rwsem_kill_trials", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc,
		      argv, NULL);
}
