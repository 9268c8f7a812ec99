/* SPDX-License-Identifier: MIT */
/*
 * test_rwsem_robust.c - a process's death never wedges a process-shared
 * semaphore (issue 10, C).
 *
 * Each case SIGKILLs a process at one point of its life with the lock: a
 * read or write holder, a queued reader, a queued writer before and after
 * it reserved the lock, a process inside the wait-lock (caught by SIGSTOP
 * sampling); then every survivor must take the lock, for write and for read,
 * within a bound, and the lock must end free and consistent.  A write
 * holder's death is reported to the next acquirers (-EOWNERDEAD, the lock
 * held) until a writer's.  Killed children are left unreaped while the
 * survivors recover, so the zombie case is the one tested; the case reaps
 * them at the end.  Handshakes go through the shared area; every wait is
 * bounded.
 *
 *   test_rwsem_robust [--only NAME]... [--list]
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process.h"
#include "rwsem.h"
#include "task.h"
#include "test_util.h"

/* State-word bits (rwsem.h). */
#define ST_WRITER	0x1u
#define ST_HANDOFF	0x4u
#define ST_OWNER_DIED	0x20u
/* The shared wait-lock word (wait_lock.h): pid, start-time tag at bit 22, sleepers at 31. */
#define WL_PID_MASK	((1u << 22) - 1)
#define WL_TAG_SHIFT	22

/* A survivor's recovery must come within this (the design's target is 100 ms). */
#define RECOVERY_BOUND_MS 1000u

struct area {
	struct rw_semaphore sem;
	atomic_int phase;		/* a child's progress, for handshakes */
	atomic_int rc;			/* a child's result */
	atomic_int stop;		/* children loop until set */
	atomic_int inside;		/* children holding the lock now */
	atomic_int done;		/* children finished */
};

static uint64_t ms_from_now(unsigned int ms)
{
	return rwsem_now_ns() + (uint64_t)ms * TU_NS_PER_MS;
}

static double ms_since(uint64_t t0)
{
	return (double)(rwsem_now_ns() - t0) / 1e6;
}

static struct area *area_new(void)
{
	struct area *a = tu_shared_alloc(sizeof(*a));

	CHECK_EQ(rwsem_init(&a->sem, RWSEM_SHARED), 0);
	return a;
}

static bool queue_is(struct rw_semaphore *sem, uint32_t r, uint32_t w)
{
	uint32_t qr, qw;
	uint64_t h;

	return rwsem_queue_info(sem, &qr, &qw, &h) == 0 && qr == r && qw == w;
}

/* SIGKILL @pid; the zombie stays until reap(). */
static uint64_t kill_now(pid_t pid)
{
	uint64_t t = rwsem_now_ns();

	CHECK_EQ(kill(pid, SIGKILL), 0);
	return t;
}

static void reap(pid_t pid)
{
	CHECK_EQ(tu_wait_child(pid, TU_WAIT_MS), 128 + SIGKILL);
}

/* An acquisition a survivor accepts: 0, or the lock with the owner-died indication. */
static bool got(int rc)
{
	return rc == 0 || rc == -EOWNERDEAD;
}

/* One survivor's round: write then read, each bounded.  0, or which step failed. */
static int take_both(struct rw_semaphore *sem)
{
	if (!got(down_write_timed(sem, ms_from_now(TU_WAIT_MS))))
		return 1;
	if (up_write(sem))
		return 2;
	/* A writer has held it: the indication is gone. */
	if (down_read_timed(sem, ms_from_now(TU_WAIT_MS)))
		return 3;
	if (up_read(sem))
		return 4;
	return 0;
}

/*
 * Every survivor can take the lock: this process and @n fresh children, at
 * once; then it is free, nobody is queued, no flag is left behind.
 */
static void check_survivors(struct area *a, int n)
{
	pid_t pid[8];

	for (int i = 0; i < n; i++) {
		pid[i] = tu_fork();
		if (pid[i] == 0)
			_exit(take_both(&a->sem));
	}
	CHECK_EQ(take_both(&a->sem), 0);
	for (int i = 0; i < n; i++)
		CHECK_EQ(tu_wait_child(pid[i], 2 * TU_WAIT_MS), 0);
	CHECK_EQ(rwsem_count(&a->sem), 0);
	CHECK(queue_is(&a->sem, 0, 0));
	CHECK_EQ(rwsem_validate(&a->sem, RWSEM_SHARED), 0);
}

static void report_recovery(const char *what, uint64_t killed_at)
{
	double ms = ms_since(killed_at);

	printf("    %s: recovered %.1f ms after the kill\n", what, ms);
	CHECK_MSG(ms < RECOVERY_BOUND_MS, "%s: %.1f ms to recover", what, ms);
}

/* A child that takes the lock (@write or not), says so, and waits to be killed. */
static pid_t holder(struct area *a, bool write)
{
	pid_t pid = tu_fork();

	if (pid == 0) {
		int rc = write ? down_write(&a->sem) : down_read(&a->sem);

		atomic_store(&a->rc, rc);
		atomic_fetch_add(&a->phase, 1);
		for (;;)
			pause();
	}
	return pid;
}

/* A child that queues for the lock; it reports the acquisition's result, then releases. */
static pid_t waiter(struct area *a, bool write)
{
	pid_t pid = tu_fork();

	if (pid == 0) {
		int rc = write ? down_write_timed(&a->sem, ms_from_now(TU_WAIT_MS))
			       : down_read_timed(&a->sem, ms_from_now(TU_WAIT_MS));

		atomic_store(&a->rc, rc);
		atomic_fetch_add(&a->phase, 1);
		if (got(rc))
			rc = write ? up_write(&a->sem) : up_read(&a->sem);
		_exit(rc ? 1 : 0);
	}
	return pid;
}

/* ------------------------------------------------------------------------
 * Holders.
 */

/*
 * A write holder dies: the next acquirer (here a reader) gets the lock with
 * -EOWNERDEAD, and so does every acquisition until a writer's.  Before, the
 * lock stayed write-held for good.
 */
static void t_write_holder_killed(void)
{
	struct area *a = area_new();
	pid_t pid = holder(a, true);
	uint64_t t;
	int rc;

	EXPECT_WITHIN(atomic_load(&a->phase) == 1, TU_WAIT_MS);
	CHECK_EQ(atomic_load(&a->rc), 0);
	t = kill_now(pid);
	rc = down_read_timed(&a->sem, ms_from_now(TU_WAIT_MS));
	report_recovery("reader after a dead writer", t);
	CHECK_EQ(rc, -EOWNERDEAD);
	CHECK_EQ(rwsem_is_locked(&a->sem), 1);		/* held, all the same */
	CHECK_EQ(rwsem_is_write_locked(&a->sem), 0);
	CHECK_EQ(up_read(&a->sem), 0);
	CHECK_EQ(down_read_trylock(&a->sem), -EOWNERDEAD);	/* until a writer hears it */
	CHECK_EQ(up_read(&a->sem), 0);
	CHECK_EQ(down_write(&a->sem), -EOWNERDEAD);	/* the writer that must repair */
	CHECK_EQ(rwsem_write_owner(&a->sem), task_current());
	CHECK_EQ(up_write(&a->sem), 0);
	CHECK_EQ(down_write(&a->sem), 0);		/* and it is gone */
	CHECK_EQ(up_write(&a->sem), 0);
	reap(pid);
	check_survivors(a, 2);
	munmap(a, sizeof(*a));
}

/* A writer queued behind the one that dies is the next acquirer: it hears of it. */
static void t_write_holder_killed_queued_writer_hears(void)
{
	struct area *a = area_new();
	pid_t h = holder(a, true), w;
	uint64_t t;

	EXPECT_WITHIN(atomic_load(&a->phase) == 1, TU_WAIT_MS);
	w = waiter(a, true);
	EXPECT_WITHIN(queue_is(&a->sem, 0, 1), TU_WAIT_MS);
	t = kill_now(h);
	EXPECT_WITHIN(atomic_load(&a->phase) == 2, TU_WAIT_MS);
	report_recovery("queued writer after a dead writer", t);
	CHECK_EQ(atomic_load(&a->rc), -EOWNERDEAD);
	CHECK_EQ(tu_wait_child(w, TU_WAIT_MS), 0);
	reap(h);
	check_survivors(a, 2);
	munmap(a, sizeof(*a));
}

/*
 * A read holder dies: its hold is released, another process's is not (the
 * writer still waits for the live reader).  Before, writers waited forever.
 */
static void t_read_holder_killed(void)
{
	struct area *a = area_new();
	pid_t live = holder(a, false), dead;
	uint64_t t;
	int rc;

	EXPECT_WITHIN(atomic_load(&a->phase) == 1, TU_WAIT_MS);
	dead = holder(a, false);
	EXPECT_WITHIN(atomic_load(&a->phase) == 2, TU_WAIT_MS);
	CHECK_EQ(rwsem_count(&a->sem) >> 8, 2);
	kill_now(dead);
	/* The live reader keeps it: a writer times out, having waited past scans. */
	CHECK_EQ(down_write_timed(&a->sem, ms_from_now(200)), -ETIMEDOUT);
	CHECK_EQ(rwsem_count(&a->sem) >> 8, 1);
	t = kill_now(live);
	rc = down_write_timed(&a->sem, ms_from_now(TU_WAIT_MS));
	report_recovery("writer after the last reader died", t);
	CHECK_EQ(rc, 0);		/* readers wrote nothing: no indication */
	CHECK_EQ(up_write(&a->sem), 0);
	reap(dead);
	reap(live);
	check_survivors(a, 2);
	munmap(a, sizeof(*a));
}

/* A non-owner read hold belongs to no process: it outlives its taker, any process releases it. */
static void t_non_owner_hold_outlives_its_taker(void)
{
	struct area *a = area_new();
	pid_t pid = tu_fork();

	if (pid == 0)
		_exit(down_read_non_owner(&a->sem) ? 1 : 0);
	CHECK_EQ(tu_wait_child(pid, TU_WAIT_MS), 0);
	CHECK_EQ(down_write_timed(&a->sem, ms_from_now(100)), -ETIMEDOUT);
	CHECK_EQ(rwsem_count(&a->sem) >> 8, 1);
	CHECK_EQ(up_read(&a->sem), -EPERM);		/* not this process's */
	CHECK_EQ(up_read_non_owner(&a->sem), 0);
	check_survivors(a, 1);
	munmap(a, sizeof(*a));
}

/* A process that holds no read hold cannot release another's (any process could, before). */
static void t_up_read_by_a_process_holding_none(void)
{
	struct area *a = area_new();
	pid_t pid;

	CHECK_EQ(down_read(&a->sem), 0);
	pid = tu_fork();
	if (pid == 0)
		_exit(up_read(&a->sem) == -EPERM ? 0 : 1);
	CHECK_EQ(tu_wait_child(pid, TU_WAIT_MS), 0);
	CHECK_EQ(rwsem_count(&a->sem) >> 8, 1);
	CHECK_EQ(up_read(&a->sem), 0);
	check_survivors(a, 1);
	munmap(a, sizeof(*a));
}

/* ------------------------------------------------------------------------
 * Waiters.
 */

/*
 * A queued reader dies; the writer's release grants it the lock in a batch.
 * Its hold is reaped.  Before, writers starved for good behind it.
 */
static void t_queued_reader_killed(void)
{
	struct area *a = area_new();
	pid_t pid;
	uint64_t t;
	int rc;

	CHECK_EQ(down_write(&a->sem), 0);
	pid = waiter(a, false);
	EXPECT_WITHIN(queue_is(&a->sem, 1, 0), TU_WAIT_MS);
	t = kill_now(pid);
	CHECK_EQ(up_write(&a->sem), 0);
	rc = down_write_timed(&a->sem, ms_from_now(TU_WAIT_MS));
	report_recovery("writer after a dead queued reader", t);
	CHECK_EQ(rc, 0);
	CHECK_EQ(up_write(&a->sem), 0);
	reap(pid);
	check_survivors(a, 2);
	munmap(a, sizeof(*a));
}

/*
 * A queued writer stopped, then killed, before it could reserve the lock.
 * Before, WAITERS stayed set on a free lock and readers hung.  Stopped at
 * once when it is seen queued, so its 4 ms handoff timer cannot fire; a
 * round where it did anyway is tried again.
 */
static void t_queued_writer_killed_before_reserving(void)
{
	for (int round = 0; round < 20; round++) {
		struct area *a = area_new();
		pid_t pid, r;
		uint64_t t;
		bool reserved;

		CHECK_EQ(down_read(&a->sem), 0);
		pid = waiter(a, true);
		EXPECT_WITHIN(queue_is(&a->sem, 0, 1), TU_WAIT_MS);
		kill(pid, SIGSTOP);
		reserved = rwsem_count(&a->sem) & ST_HANDOFF;
		t = kill_now(pid);
		if (reserved) {		/* too late: the next test's case */
			CHECK_EQ(up_read(&a->sem), 0);
			reap(pid);
			munmap(a, sizeof(*a));
			continue;
		}
		CHECK_EQ(up_read(&a->sem), 0);
		/* A reader of another process: it queues behind the dead writer, then is let in. */
		atomic_store(&a->phase, 0);
		r = waiter(a, false);
		EXPECT_WITHIN(atomic_load(&a->phase) == 1, TU_WAIT_MS);
		report_recovery("reader after a dead unreserved writer", t);
		CHECK_EQ(atomic_load(&a->rc), 0);
		CHECK_EQ(tu_wait_child(r, TU_WAIT_MS), 0);
		reap(pid);
		check_survivors(a, 2);
		munmap(a, sizeof(*a));
		return;
	}
	CHECK_MSG(0, "the writer reserved the lock before every one of 20 stops");
}

/*
 * A queued writer killed after it reserved the lock (HANDOFF set).  Before,
 * the next release handed it the lock, and nobody could ever release it.
 * It never held it, so no owner-died indication follows.
 */
static void t_queued_writer_killed_after_reserving(void)
{
	struct area *a = area_new();
	pid_t pid;
	uint64_t t;
	int rc;

	CHECK_EQ(down_read(&a->sem), 0);
	pid = waiter(a, true);
	EXPECT_WITHIN(queue_is(&a->sem, 0, 1), TU_WAIT_MS);
	EXPECT_WITHIN(rwsem_count(&a->sem) & ST_HANDOFF, TU_WAIT_MS);
	t = kill_now(pid);
	CHECK_EQ(up_read(&a->sem), 0);			/* hands it to the dead writer */
	rc = down_write_timed(&a->sem, ms_from_now(TU_WAIT_MS));
	report_recovery("writer after a dead reserved writer", t);
	CHECK_EQ(rc, 0);
	CHECK_EQ(up_write(&a->sem), 0);
	reap(pid);
	check_survivors(a, 2);
	munmap(a, sizeof(*a));
}

/* ------------------------------------------------------------------------
 * The wait-lock.
 */

/*
 * Field @field (3: state, 22: start time) of /proc/<pid>/stat, as a number
 * (the state as its letter); 0 if there is none.
 */
static uint64_t proc_field(pid_t pid, int field)
{
	char path[64], buf[1024];
	FILE *f;
	size_t n;
	const char *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	for (int i = 2; p && i < field; i++)
		p = strchr(p + 1, ' ');
	if (!p)
		return 0;
	return field == 3 ? (uint64_t)p[1] : strtoull(p + 1, NULL, 10);
}

static uint64_t proc_start(pid_t pid)
{
	return proc_field(pid, 22);
}

static uint32_t wait_lock_id(pid_t pid)
{
	return (uint32_t)pid | (uint32_t)((proc_start(pid) & 0x1ff) << WL_TAG_SHIFT);
}

/*
 * The wait-lock word names a live process that never lets go (stopped): a
 * timed call gives up by its deadline and nobody takes it over.  Once that
 * process is dead, a waiter takes it over within a couple of slices.
 */
static void t_wait_lock_of_a_dead_process_is_taken_over(void)
{
	struct area *a = area_new();
	pid_t pid = tu_fork();
	uint64_t t;
	int rc;

	if (pid == 0) {
		raise(SIGSTOP);
		_exit(0);
	}
	CHECK(tu_wait_stopped(pid, TU_WAIT_MS));
	atomic_store(&a->sem.wait_lock, wait_lock_id(pid));
	CHECK_EQ(down_write_timed(&a->sem, ms_from_now(100)), -ETIMEDOUT);
	CHECK_EQ(atomic_load(&a->sem.wait_lock) & WL_PID_MASK, (uint32_t)pid);
	t = kill_now(pid);
	rc = down_write_timed(&a->sem, ms_from_now(TU_WAIT_MS));
	report_recovery("wait-lock of a dead process", t);
	CHECK_EQ(rc, 0);
	CHECK_EQ(up_write(&a->sem), 0);
	reap(pid);
	check_survivors(a, 1);
	munmap(a, sizeof(*a));
}

/* The sampled child: every operation of a shared semaphore takes the wait-lock. */
static void churn(struct area *a)
{
	for (unsigned int i = 0;; i++) {
		if (i & 1) {
			if (!got(down_write(&a->sem)) || up_write(&a->sem))
				_exit(1);
		} else if (!got(down_read(&a->sem)) || up_read(&a->sem)) {
			_exit(1);
		}
	}
}

/*
 * Stop the churning child until it is caught inside the wait-lock (its pid
 * in the word), then SIGKILL it there.  Survivors take the lock over and
 * roll back its half-done section.  Before, every later call hung.  Caught
 * several times, so that some catches are mid-section (journal valid).
 */
static void t_killed_inside_the_wait_lock(void)
{
	int caught = 0, mid_section = 0, samples = 0;
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();

	while (caught < 6 && samples < 20000) {
		struct area *a = area_new();
		pid_t pid = tu_fork();
		bool inside = false;
		uint64_t t;

		if (pid == 0)
			churn(a);
		while (!inside && samples < 20000) {
			uint32_t wl;

			samples++;
			kill(pid, SIGSTOP);
			if (!tu_wait_stopped(pid, TU_WAIT_MS)) {
				CHECK_MSG(0, "child %d did not stop", (int)pid);
				break;
			}
			wl = atomic_load(&a->sem.wait_lock);
			inside = (wl & WL_PID_MASK) == (uint32_t)pid;
			if (!inside) {
				kill(pid, SIGCONT);
				/* Let it run on before the next sample: a random stopping point. */
				tu_spin((unsigned int)(tu_rand(&seed) % 20000));
			}
		}
		if (inside) {
			caught++;
			mid_section += atomic_load(&a->sem.journal_valid) != 0;
		}
		t = kill_now(pid);
		if (inside) {
			int rc = down_write_timed(&a->sem, ms_from_now(TU_WAIT_MS));

			report_recovery("writer after a death inside the wait-lock", t);
			CHECK(got(rc));
			if (got(rc))
				CHECK_EQ(up_write(&a->sem), 0);
		}
		reap(pid);
		check_survivors(a, 2);
		munmap(a, sizeof(*a));
	}
	printf("    %d catches inside the wait-lock (%d mid-section) in %d samples\n", caught,
	       mid_section, samples);
	CHECK(caught >= 6);
	CHECK(mid_section >= 1);
}

/* ------------------------------------------------------------------------
 * Identity, slots and namespaces.
 */

static void *idle_thread(void *arg)
{
	for (;;)
		pause();
	return arg;
}

/* The liveness check: zombies are dead, stopped processes alive, a reused pid is not ours. */
static void t_process_alive(void)
{
	struct mln_process me = *mln_self();
	pid_t pid;

	CHECK_EQ(me.pid, (uint32_t)getpid());
	CHECK(me.start != 0);
	CHECK(mln_process_alive(me.pid, me.start, UINT32_MAX));
	CHECK(!mln_process_alive(me.pid, me.start + 1, UINT32_MAX));	/* another start: reused */
	CHECK(mln_process_alive(me.pid, me.start + 1, 0));		/* pid alone */

	pid = tu_fork();
	if (pid == 0) {
		raise(SIGSTOP);
		_exit(0);
	}
	CHECK(tu_wait_stopped(pid, TU_WAIT_MS));
	CHECK(mln_process_alive((uint32_t)pid, (uint32_t)proc_start(pid), UINT32_MAX));
	kill(pid, SIGKILL);
	EXPECT_WITHIN(!mln_process_alive((uint32_t)pid, 0, 0), TU_WAIT_MS);	/* a zombie */
	reap(pid);
	CHECK(!mln_process_alive((uint32_t)pid, 0, 0));

	/* A leader gone by pthread_exit() shows Z while its other thread runs: alive. */
	pid = tu_fork();
	if (pid == 0) {
		pthread_t th;

		pthread_create(&th, NULL, idle_thread, NULL);
		pthread_exit(NULL);
	}
	EXPECT_WITHIN(proc_field(pid, 3) == 'Z', TU_WAIT_MS);
	CHECK(mln_process_alive((uint32_t)pid, 0, 0));
	kill(pid, SIGKILL);
	reap(pid);
}

/* After fork() the child is another process: its identity is looked up again. */
static void t_child_has_its_own_identity(void)
{
	struct mln_process me = *mln_self();
	pid_t pid = tu_fork();

	if (pid == 0) {
		struct mln_process child = *mln_self();

		_exit(child.pid == (uint32_t)getpid() && child.pid != me.pid ? 0 : 1);
	}
	CHECK_EQ(tu_wait_child(pid, TU_WAIT_MS), 0);
}

/*
 * More processes than slots want it at once: those without a slot wait for
 * one (outside the queue) and get in as holders leave.
 */
static void t_more_processes_than_slots(void)
{
	enum { N = RWSEM_SLOTS + 3 };
	struct area *a = area_new();
	pid_t pid[N];

	CHECK_EQ(down_write(&a->sem), 0);
	for (int i = 0; i < N; i++) {
		pid[i] = tu_fork();
		if (pid[i] == 0) {
			if (down_read_timed(&a->sem, ms_from_now(TU_WAIT_MS)))
				_exit(1);
			atomic_fetch_add(&a->inside, 1);
			tu_sleep_us(1000);
			atomic_fetch_sub(&a->inside, 1);
			_exit(up_read(&a->sem) ? 2 : 0);
		}
	}
	/* Every slot but ours is taken by a queued reader; the rest wait for one. */
	EXPECT_WITHIN(queue_is(&a->sem, RWSEM_SLOTS - 1, 0), TU_WAIT_MS);
	CHECK_EQ(up_write(&a->sem), 0);
	for (int i = 0; i < N; i++)
		CHECK_EQ(tu_wait_child(pid[i], 2 * TU_WAIT_MS), 0);
	check_survivors(a, 1);
	munmap(a, sizeof(*a));
}

/* A process of another pid namespace is refused: its pids would name other processes. */
static void t_other_pid_namespace_refused(void)
{
	struct area *a = area_new();
	uint32_t ns = a->sem.pid_ns;

	CHECK(ns != 0);
	a->sem.pid_ns = ns + 1;
	CHECK_EQ(down_read(&a->sem), -EXDEV);
	CHECK_EQ(down_write_timed(&a->sem, ms_from_now(TU_WAIT_MS)), -EXDEV);
	CHECK_EQ(down_read_trylock(&a->sem), 0);
	a->sem.pid_ns = ns;
	check_survivors(a, 1);
	munmap(a, sizeof(*a));
}

#define T(fn) TU_TEST(fn)
static const struct tu_test tests[] = {
	T(t_process_alive),
	T(t_child_has_its_own_identity),
	T(t_write_holder_killed),
	T(t_write_holder_killed_queued_writer_hears),
	T(t_read_holder_killed),
	T(t_non_owner_hold_outlives_its_taker),
	T(t_up_read_by_a_process_holding_none),
	T(t_queued_reader_killed),
	T(t_queued_writer_killed_before_reserving),
	T(t_queued_writer_killed_after_reserving),
	T(t_wait_lock_of_a_dead_process_is_taken_over),
	T(t_killed_inside_the_wait_lock),
	T(t_more_processes_than_slots),
	T(t_other_pid_namespace_refused),
};

int main(int argc, char **argv)
{
	return tu_run("test_rwsem_robust", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc,
		      argv, NULL);
}
