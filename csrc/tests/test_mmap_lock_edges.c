/* SPDX-License-Identifier: MIT */
/*
 * test_mmap_lock_edges.c - regression tests for the mmap lock's edge cases
 * found in review: a hook of a replaced set still running after the setter
 * returned, a statistics block re-created on a destroyed mm, a cancel after
 * a successful wait, a statistics thread number reused while its old thread
 * still locks, a process-local pointer in a process-shared mm, the sequence
 * count's parity after a bare rwsem write section, fork() while a hook runs,
 * stale hold-time samples, and refused unlocks that fired a tracepoint.
 *
 * The second group came from the first fixes' own review: a destroyed mm
 * listed again, process-local list links in a shared mm, a non-owner
 * acquisition through the binding path arming a hold sample, a bare write
 * section a speculation could miss, and a cancel after a failed wait.
 *
 *   test_mmap_lock_edges [--list] [--only NAME]
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "lockdep.h"
#include "mm_types.h"
#include "mmap_lock.h"
#include "mmap_lock_stats.h"
#include "thread_index.h"	/* mln_thread_index(): the statistics' thread number */
#include "mmap_lock_trace.h"
#include "rwsem.h"
#include "task.h"
#include "test_util.h"

/*
 * Only the lock of an mm is used here, so an mm is its lock's life cycle
 * (not mm.h's mm_alloc(): mm.h spells out Linux's PROT_ and MAP_ names,
 * which clash with <sys/mman.h>, needed for the process-shared mm).
 */
static struct mm_struct *new_mm(unsigned int flags)
{
	struct mm_struct *mm;

	if (posix_memalign((void **)&mm, 64, sizeof(*mm))) {
		fprintf(stderr, "out of memory\n");
		exit(2);
	}
	memset(mm, 0, sizeof(*mm));
	if (mmap_lock_init(mm, flags)) {
		fprintf(stderr, "mmap_lock_init(%#x) failed\n", flags);
		exit(2);
	}
	return mm;
}

static void free_mm(struct mm_struct *mm)
{
	int rc = mmap_lock_destroy(mm);

	CHECK_EQ(rc, 0);
	if (rc == 0)
		free(mm);
}

static void wait_queued(struct rw_semaphore *sem, uint32_t readers, uint32_t writers)
{
	uint32_t r = 0, w = 0;
	uint64_t h;

	EXPECT_WITHIN((rwsem_queue_info(sem, &r, &w, &h), r == readers && w == writers),
		      TU_WAIT_MS);
}

static struct mmap_lock_stats_snapshot stats_of(struct mm_struct *mm)
{
	struct mmap_lock_stats_snapshot st;

	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	return st;
}

/* Hold samples of @write at least 2^@bucket ns long. */
static uint64_t long_holds(const struct mmap_lock_stats_snapshot *st, int write, int bucket)
{
	uint64_t n = 0;

	for (int b = bucket; b < MMAP_LOCK_HIST_BUCKETS; b++)
		n += st->hold_hist[write][b];
	return n;
}

/* A thread that runs one function and keeps its int result. */
struct runner {
	pthread_t th;
	int (*fn)(void *);
	void *arg;
	int rc;
};

static void *runner_main(void *arg)
{
	struct runner *r = arg;

	r->rc = r->fn(r->arg);
	return NULL;
}

/* Run @fn(@arg) on a new thread (another task) and return its result. */
static int on_other_thread(int (*fn)(void *), void *arg)
{
	struct runner r = { .fn = fn, .arg = arg };

	tu_create(&r.th, runner_main, &r);
	JOIN(r.th, "helper");
	return r.rc;
}

static int other_mmap_write_trylock(void *arg)
{
	struct mm_struct *mm = arg;
	int got = mmap_write_trylock(mm);

	if (got)
		CHECK_EQ(mmap_write_unlock(mm), 0);
	return got;
}

static int other_down_write_trylock(void *arg)
{
	struct rw_semaphore *sem = arg;
	int got = down_write_trylock(sem);

	if (got)
		CHECK_EQ(up_write(sem), 0);
	return got;
}

static int other_read_unlock_non_owner(void *arg)
{
	return mmap_read_unlock_non_owner(arg);
}

/* ------------------------------------------------------- event recording */

/*
 * The tracepoints of one mm, fired by one task: anything else is ignored,
 * so helper threads and other mms cannot disturb the expected sequence.
 */
#define MAX_EV 64
static struct {
	_Atomic int n;
	char ev[MAX_EV][8];
	struct mm_struct *_Atomic mm;
	_Atomic uint64_t task;		/* 0: nobody's events */
} tr;

static void tr_add(struct mm_struct *mm, const char *what)
{
	int i;

	if (mm != atomic_load(&tr.mm) || task_current() != atomic_load(&tr.task))
		return;
	i = atomic_fetch_add(&tr.n, 1);
	if (i < MAX_EV)
		snprintf(tr.ev[i], sizeof(tr.ev[i]), "%s", what);
}

static void tr_start(struct mm_struct *mm, bool write, void *arg)
{
	(void)arg;
	tr_add(mm, write ? "S w" : "S r");
}

static void tr_acq(struct mm_struct *mm, bool write, bool success, void *arg)
{
	char b[8];

	(void)arg;
	snprintf(b, sizeof(b), "A %c%c", write ? 'w' : 'r', success ? '+' : '-');
	tr_add(mm, b);
}

static void tr_rel(struct mm_struct *mm, bool write, void *arg)
{
	(void)arg;
	tr_add(mm, write ? "R w" : "R r");
}

static const struct mmap_lock_trace_hooks tr_hooks = {
	.start_locking = tr_start, .acquire_returned = tr_acq, .released = tr_rel,
};

/* Record @mm's events by @task (0: none) from now on. */
static void tr_watch(struct mm_struct *mm, uint64_t task)
{
	atomic_store(&tr.mm, mm);
	atomic_store(&tr.task, task);
	atomic_store(&tr.n, 0);
}

/* Compare the events so far with @want (joined by '|'), and start over. */
static void tr_expect(const char *want, int line)
{
	char got[MAX_EV * 8] = "";
	int n = atomic_load(&tr.n);

	for (int i = 0; i < n && i < MAX_EV; i++) {
		if (i)
			strcat(got, "|");
		strcat(got, tr.ev[i]);
	}
	if (strcmp(got, want) != 0)
		tu_fail(__FILE__, line, "trace: got '%s', want '%s'", got, want);
	atomic_store(&tr.n, 0);
}

/* ------------------------------------------ 1. no straggler of a replaced set */

/*
 * mmap_lock_set_trace_hooks() returns only once no thread runs a hook of the
 * set it replaced.  The setter installs set k+1 and then marks set k's @arg
 * dead, as a caller freeing it would; every hook checks its @arg on entry
 * and after a short spin.  A caller delayed between reading the generation
 * and counting itself used to count in a parity the next setter did not
 * drain.  More locking threads than CPUs, so that callers are preempted
 * anywhere in the hook path.
 */
struct straggler_arg {
	_Atomic int alive;
};

static _Atomic long straggler_dead_calls, straggler_calls;
static _Atomic int straggler_stop;

static void straggler_check(void *arg)
{
	struct straggler_arg *a = arg;

	if (!atomic_load(&a->alive))
		atomic_fetch_add(&straggler_dead_calls, 1);
	tu_spin(200);
	if (!atomic_load(&a->alive))
		atomic_fetch_add(&straggler_dead_calls, 1);
	atomic_fetch_add_explicit(&straggler_calls, 1, memory_order_relaxed);
}

static void straggler_start(struct mm_struct *mm, bool write, void *arg)
{
	(void)mm; (void)write;
	straggler_check(arg);
}

static void straggler_acq(struct mm_struct *mm, bool write, bool success, void *arg)
{
	(void)mm; (void)write; (void)success;
	straggler_check(arg);
}

static void straggler_rel(struct mm_struct *mm, bool write, void *arg)
{
	(void)mm; (void)write;
	straggler_check(arg);
}

static void *straggler_locker(void *arg)
{
	struct mm_struct *mm = arg;

	while (!atomic_load_explicit(&straggler_stop, memory_order_relaxed)) {
		mmap_read_lock(mm);
		mmap_read_unlock(mm);
	}
	return NULL;
}

#define STRAGGLER_MAX_THREADS 16
#define STRAGGLER_MAX_SETS 200000
#define STRAGGLER_MS 1000

static void t_hooks_no_straggler_after_set(void)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int nthreads = (int)(ncpu > 0 ? 2 * ncpu + 2 : 4);
	struct mm_struct *mms[STRAGGLER_MAX_THREADS];
	pthread_t th[STRAGGLER_MAX_THREADS];
	struct straggler_arg **args = calloc(STRAGGLER_MAX_SETS, sizeof(*args));
	uint64_t deadline;
	long k;

	if (nthreads > STRAGGLER_MAX_THREADS)
		nthreads = STRAGGLER_MAX_THREADS;
	CHECK(args != NULL);
	if (!args)
		return;
	atomic_store(&straggler_dead_calls, 0);
	atomic_store(&straggler_calls, 0);
	atomic_store(&straggler_stop, 0);
	for (int i = 0; i < nthreads; i++) {
		mms[i] = new_mm(MMAP_LOCK_NODEBUG);
		tu_create(&th[i], straggler_locker, mms[i]);
	}
	deadline = tu_now_ns() + STRAGGLER_MS * TU_NS_PER_MS;
	for (k = 0; k < STRAGGLER_MAX_SETS && tu_now_ns() < deadline &&
		    !atomic_load(&straggler_dead_calls); k++) {
		struct mmap_lock_trace_hooks hk = {
			.start_locking = straggler_start, .acquire_returned = straggler_acq,
			.released = straggler_rel,
		};

		args[k] = malloc(sizeof(*args[k]));
		if (!args[k])
			break;
		atomic_init(&args[k]->alive, 1);
		hk.arg = args[k];
		CHECK_EQ(mmap_lock_set_trace_hooks(&hk), 0);
		if (k)		/* set k-1 is replaced: its arg may go now */
			atomic_store(&args[k - 1]->alive, 0);
	}
	CHECK_EQ(mmap_lock_set_trace_hooks(NULL), 0);
	atomic_store(&straggler_stop, 1);
	for (int i = 0; i < nthreads; i++)
		JOIN(th[i], "locker");
	printf("    %d lockers, %ld sets, %ld hook calls, %ld after their set was replaced\n",
	       nthreads, k, atomic_load(&straggler_calls), atomic_load(&straggler_dead_calls));
	CHECK_EQ(atomic_load(&straggler_dead_calls), 0);
	CHECK(atomic_load(&straggler_calls) > 0);
	for (long i = 0; i < k; i++)
		free(args[i]);
	free(args);
	for (int i = 0; i < nthreads; i++)
		free_mm(mms[i]);
}

/* ------------------------------ 2. a destroyed mm gets no statistics again */

/*
 * After mmap_lock_destroy() every call on the mm is a misuse, refused; its
 * failure accounting (and mmap_lock_stats_reset()) used to calloc a fresh
 * statistics block and hang it on the dead mm, where nothing freed it: a
 * leak LSan reports at exit once the mm itself is freed.
 */
static void t_destroyed_mm_gets_no_stats(void)
{
	struct mm_struct *mm = malloc(sizeof(*mm));
	struct mmap_lock_stats_snapshot st;
	bool registered;

	CHECK(mm != NULL);
	if (!mm)
		return;
	CHECK_EQ(mmap_lock_init(mm, MMAP_LOCK_NODEBUG), 0);
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK(atomic_load(&mm->mmap_lock_stats) != NULL);
	CHECK_EQ(mmap_lock_destroy(mm), 0);
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);

	CHECK_EQ(mmap_read_trylock(mm), 0);
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);
	CHECK_EQ(mmap_write_trylock(mm), 0);
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);
	CHECK_EQ(mmap_read_lock(mm), -EINVAL);
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);
	CHECK_EQ(mmap_lock_stats_reset(mm), -EINVAL);
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);
	CHECK_EQ(mmap_lock_stats_set_hold_sampling(mm, 0), -EINVAL);
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.acquisitions[0] + st.trylock_failures[0] + st.trylock_failures[1], 0u);
	CHECK_EQ(mmap_lock_destroy(mm), -EINVAL);	/* once only */
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);
	/*
	 * The refused calls above also went through the hooked path, which
	 * put the dead mm back on the hooks' list (open: see
	 * t_destroyed_mm_stays_off_hook_list).  Freeing it would leave
	 * the list pointing at freed memory for every later test: keep it.
	 */
	registered = !(atomic_load(&mm->mmap_lock_instr) & MMAP_LOCK_INSTR_UNREGISTERED);
	if (!registered)
		free(mm);
}

/* ---------------------------- 3. a cancel after a successful wait undoes it */

static _Atomic int lockdep_reports;

static void count_report(int kind, const char *text)
{
	(void)kind; (void)text;
	atomic_fetch_add(&lockdep_reports, 1);
}

/*
 * A binding's waiter: begin says "wait" while the main thread holds the
 * lock, the wait is granted when it lets go, and the binding then cancels
 * (it lost the 0 to an exception).  The checks that need this task run here.
 */
struct canceller {
	pthread_t th;
	struct mm_struct *mm;
	unsigned int op;
	_Atomic int begun, cancelled, cleanup;
	int rc_begin, rc_wait, rc_cancel, depth_waited, depth_cancelled;
};

static void *canceller_main(void *arg)
{
	struct canceller *c = arg;
	struct mmap_lock_waiter w;

	memset(&w, 0, sizeof(w));
	atomic_store(&tr.task, task_current());
	c->rc_begin = mmap_lock_begin(c->mm, c->op, 0);
	atomic_store(&c->begun, 1);
	if (c->rc_begin == 1) {
		c->rc_wait = mmap_lock_wait(c->mm, &w, c->op, UINT64_MAX, 0);
		c->depth_waited = mln_lockdep_depth();
		c->rc_cancel = mmap_lock_cancel(c->mm, &w, c->op);
		c->depth_cancelled = mln_lockdep_depth();
	}
	atomic_store(&c->cancelled, 1);
	/* Once the main thread has looked: if the lock leaked, let it go. */
	EXPECT_WITHIN(atomic_load(&c->cleanup), TU_WAIT_MS);
	if (c->op & MMAP_OP_WRITE) {
		if (rwsem_write_owner(&c->mm->mmap_lock) == task_current())
			up_write(&c->mm->mmap_lock);
	} else if (rwsem_is_locked(&c->mm->mmap_lock)) {
		up_read_non_owner(&c->mm->mmap_lock);
	}
	return NULL;
}

static void t_cancel_after_successful_wait_mmap(void)
{
	int mode = mln_lockdep_get_mode();

	mln_lockdep_reset();
	CHECK_EQ(mln_lockdep_set_mode(MLN_LOCKDEP_WARN), 0);
	mln_lockdep_set_report_hook(count_report);
	atomic_store(&lockdep_reports, 0);
	CHECK_EQ(mmap_lock_set_trace_hooks(&tr_hooks), 0);
	for (int write = 0; write < 2; write++) {
		struct mm_struct *mm = new_mm(MMAP_LOCK_DEBUG);
		struct canceller c = { .mm = mm, .op = write ? MMAP_OP_WRITE : 0 };
		unsigned int seq;

		tr_watch(mm, 0);	/* the canceller names itself */
		CHECK_EQ(mmap_write_lock(mm), 0);
		tu_create(&c.th, canceller_main, &c);
		EXPECT_WITHIN(atomic_load(&c.begun), TU_WAIT_MS);
		CHECK_EQ(c.rc_begin, 1);
		wait_queued(&mm->mmap_lock, !write, write);
		CHECK_EQ(mmap_write_unlock(mm), 0);	/* grants it to the waiter */
		EXPECT_WITHIN(atomic_load(&c.cancelled), TU_WAIT_MS);
		CHECK_EQ(c.rc_wait, 0);
		CHECK_EQ(c.depth_waited, 1);
		CHECK_EQ(c.rc_cancel, 0);
		CHECK_EQ(c.depth_cancelled, 0);
		/* The caller holds nothing: another task gets it at once. */
		CHECK_EQ(rwsem_is_locked(&mm->mmap_lock), 0);
		CHECK_EQ(on_other_thread(other_mmap_write_trylock, mm), 1);
		CHECK_EQ(mmap_lock_speculate_try_begin(mm, &seq), 1);
		atomic_store(&c.cleanup, 1);
		JOIN(c.th, "canceller");
		tr_expect(write ? "S w|A w+|R w" : "S r|A r+|R r", __LINE__);
		tr_watch(NULL, 0);
		free_mm(mm);
	}
	CHECK_EQ(mmap_lock_set_trace_hooks(NULL), 0);
	CHECK_EQ(atomic_load(&lockdep_reports), 0);	/* no bad unlock, no leak */
	mln_lockdep_set_report_hook(NULL);
	mln_lockdep_set_mode(mode);
	mln_lockdep_reset();
}

/* The same one layer down: a bare rwsem, acquired at once or granted while queued. */
struct rwsem_canceller {
	pthread_t th;
	struct rw_semaphore *sem;
	int write;
	_Atomic int cancelled, cleanup;
	int rc_wait, rc_cancel;
};

static void *rwsem_canceller_main(void *arg)
{
	struct rwsem_canceller *c = arg;
	struct rwsem_waiter w;

	memset(&w, 0, sizeof(w));
	c->rc_wait = rwsem_down_wait(c->sem, &w, c->write, UINT64_MAX, 0);
	c->rc_cancel = rwsem_down_cancel(c->sem, &w);
	atomic_store(&c->cancelled, 1);
	EXPECT_WITHIN(atomic_load(&c->cleanup), TU_WAIT_MS);
	if (c->write) {
		if (rwsem_write_owner(c->sem) == task_current())
			up_write(c->sem);
	} else if (rwsem_is_locked(c->sem)) {
		up_read_non_owner(c->sem);
	}
	return NULL;
}

static void t_cancel_after_successful_wait_rwsem(void)
{
	for (int write = 0; write < 2; write++) {
		struct rw_semaphore sem;
		struct rwsem_waiter w;

		/* Free: the first call acquires at once. */
		CHECK_EQ(init_rwsem(&sem), 0);
		memset(&w, 0, sizeof(w));
		CHECK_EQ(rwsem_down_wait(&sem, &w, write, UINT64_MAX, 0), 0);
		CHECK_EQ(rwsem_is_locked(&sem), 1);
		CHECK_EQ(rwsem_down_cancel(&sem, &w), 0);
		CHECK_EQ(rwsem_is_locked(&sem), 0);
		CHECK_EQ(on_other_thread(other_down_write_trylock, &sem), 1);
		if (write && rwsem_write_owner(&sem) == task_current())
			up_write(&sem);		/* leaked: clean up for the next case */
		else if (!write && rwsem_is_locked(&sem))
			up_read_non_owner(&sem);

		/* Held: the waiter queues and is granted the lock by the release. */
		{
			struct rwsem_canceller c = { .sem = &sem, .write = write };

			CHECK_EQ(down_write(&sem), 0);
			tu_create(&c.th, rwsem_canceller_main, &c);
			wait_queued(&sem, !write, write);
			CHECK_EQ(up_write(&sem), 0);
			EXPECT_WITHIN(atomic_load(&c.cancelled), TU_WAIT_MS);
			CHECK_EQ(c.rc_wait, 0);
			CHECK_EQ(c.rc_cancel, 0);
			CHECK_EQ(rwsem_is_locked(&sem), 0);
			CHECK_EQ(on_other_thread(other_down_write_trylock, &sem), 1);
			atomic_store(&c.cleanup, 1);
			JOIN(c.th, "rwsem canceller");
		}
		CHECK_EQ(rwsem_destroy(&sem), 0);
	}
}

/* --------------- 4. a statistics thread number reused while its thread locks */

/*
 * A thread's statistics number goes back to the pool in a pthread key
 * destructor.  The destructor of a key created later (another library's)
 * may still lock the mm on that thread while a new thread already got the
 * number: both then did unlocked load+store updates of one block, losing
 * counts.  Every acquisition must be counted.
 */
#define REUSE_PAIRS 100000
static struct {
	struct mm_struct *mm;
	pthread_key_t late_key;
	_Atomic int in_dtor, arrived;
	_Atomic unsigned int x_number, y_number;
} reuse;

/*
 * The two threads must really run at once: each on a CPU of its own where
 * there are two, and a busy rendezvous (a sleeping one lets the scheduler
 * put both on one CPU, where they take turns and lose nothing).
 */
static void reuse_pin(int which)
{
	cpu_set_t allowed, one;
	int n = 0;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) || CPU_COUNT(&allowed) < 2)
		return;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (CPU_ISSET(cpu, &allowed) && n++ == which) {
			CPU_ZERO(&one);
			CPU_SET(cpu, &one);
			pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
			return;
		}
	}
}

static void reuse_meet(int which)
{
	uint64_t deadline = tu_now_ns() + TU_WAIT_MS * TU_NS_PER_MS;

	reuse_pin(which);
	atomic_fetch_add(&reuse.arrived, 1);
	while (atomic_load(&reuse.arrived) < 2 && tu_now_ns() < deadline)
		;
	CHECK_EQ(atomic_load(&reuse.arrived), 2);
}

static void reuse_hammer(void)
{
	for (int i = 0; i < REUSE_PAIRS; i++) {
		mmap_read_lock(reuse.mm);
		mmap_read_unlock(reuse.mm);
	}
}

static void reuse_late_dtor(void *v)
{
	(void)v;
	atomic_store(&reuse.in_dtor, 1);	/* the library's destructor has run */
	reuse_meet(0);
	reuse_hammer();				/* still locking during thread exit */
}

static void *reuse_x(void *arg)
{
	(void)arg;
	CHECK_EQ(mmap_read_lock(reuse.mm), 0);	/* takes a statistics number */
	CHECK_EQ(mmap_read_unlock(reuse.mm), 0);
	atomic_store(&reuse.x_number, mln_thread_index());
	pthread_setspecific(reuse.late_key, (void *)1);
	return NULL;
}

static void *reuse_y(void *arg)
{
	(void)arg;
	CHECK_EQ(mmap_read_lock(reuse.mm), 0);	/* gets the number x gave back */
	CHECK_EQ(mmap_read_unlock(reuse.mm), 0);
	atomic_store(&reuse.y_number, mln_thread_index());
	reuse_meet(1);
	reuse_hammer();
	return NULL;
}

static void t_stat_number_reuse_exact(void)
{
	struct mmap_lock_stats_snapshot st;
	pthread_t x, y;

	memset(&reuse, 0, sizeof(reuse));
	reuse.mm = new_mm(MMAP_LOCK_NODEBUG);
	CHECK_EQ(mmap_read_lock(reuse.mm), 0);	/* makes the library's key first */
	CHECK_EQ(mmap_read_unlock(reuse.mm), 0);
	CHECK_EQ(pthread_key_create(&reuse.late_key, reuse_late_dtor), 0);
	tu_create(&x, reuse_x, NULL);
	EXPECT_WITHIN(atomic_load(&reuse.in_dtor), TU_WAIT_MS);
	tu_create(&y, reuse_y, NULL);
	JOIN(x, "exiting thread");
	JOIN(y, "new thread");
	CHECK_EQ(pthread_key_delete(reuse.late_key), 0);
	/* The scenario took place: the new thread got the exiting one's number. */
	CHECK_EQ(atomic_load(&reuse.y_number), atomic_load(&reuse.x_number));
	st = stats_of(reuse.mm);
	printf("    read acquisitions %llu, expected %llu\n",
	       (unsigned long long)st.acquisitions[0], 2ull * REUSE_PAIRS + 3);
	CHECK_EQ(st.acquisitions[0], 2ull * REUSE_PAIRS + 3);
	free_mm(reuse.mm);
}

/* ------------------------------- 5. a process-shared mm holds no stats pointer */

/*
 * MMAP_LOCK_SHARED: the mm may live in memory other processes map, so the
 * process-local statistics block must never be hung on it; the calls that
 * would create one say -ENOTSUP.
 */
static void t_shared_mm_no_stats_pointer(void)
{
	size_t len = (sizeof(struct mm_struct) + 4095) & ~(size_t)4095;
	struct mm_struct *mm = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				    -1, 0);
	struct mmap_lock_stats_snapshot st;
	struct mmap_lock_recorder *rec;

	CHECK(mm != MAP_FAILED);
	if (mm == MAP_FAILED)
		return;
	CHECK_EQ(mmap_lock_init(mm, MMAP_LOCK_SHARED), 0);
	CHECK_EQ(mmap_lock_stats_reset(mm), -ENOTSUP);
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);
	CHECK_EQ(mmap_lock_stats_set_hold_sampling(mm, 0), -ENOTSUP);
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mmap_write_trylock(mm), 0);	/* a failure is not counted either */
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);
	CHECK_EQ(mmap_lock_stats_set_enabled(mm, 1), -ENOTSUP);
	CHECK_EQ(mmap_lock_record_start(mm, 16), -ENOTSUP);
	rec = mmap_lock_record_stop(mm);
	CHECK(rec == NULL);
	if (rec)
		mmap_lock_recorder_free(rec);
	CHECK(atomic_load(&mm->mmap_lock_stats) == NULL);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.enabled, 0u);
	CHECK_EQ(st.acquisitions[0] + st.acquisitions[1], 0u);
	CHECK_EQ(mmap_lock_destroy(mm), 0);
	munmap(mm, len);
}

/* ------------------------ 6. the sequence count after a bare rwsem section */

/*
 * The count is even exactly when no write section is open.  A section
 * opened by the bare rwsem (down_write(&mm->mmap_lock)) and closed by
 * mmap_write_unlock(), or opened by mmap_write_lock() and closed by
 * up_write(), used to flip its parity for good: every later write section
 * then ran with an even count and speculation succeeded inside it.
 */
static void t_seq_parity_survives_bare_rwsem(void)
{
	struct mm_struct *mm = new_mm(0);
	unsigned int seq;

	CHECK_EQ(down_write(&mm->mmap_lock), 0);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &seq), 1);	/* even when unlocked */
	CHECK_EQ(seq % 2, 0u);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &seq), 0);	/* odd in a section */
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &seq), 1);
	CHECK_EQ(seq % 2, 0u);

	/* The other way round: the count stays odd (safe) until the next section ends. */
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(up_write(&mm->mmap_lock), 0);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &seq), 0);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &seq), 1);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &seq), 0);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	free_mm(mm);
}

/* --------------------------------- 7. fork() while another thread is in a hook */

/*
 * The hook callers' counts belong to threads that do not exist in a forked
 * child; one left standing made the child's mmap_lock_set_trace_hooks()
 * wait for ever.  The child runs under alarm(5); the parent waits for it
 * with a bounded loop.
 */
static _Atomic int fork_in_hook, fork_release;

static void fork_hook(struct mm_struct *mm, bool write, void *arg)
{
	(void)write;
	if (mm != arg)
		return;
	atomic_store(&fork_in_hook, 1);
	WAIT_UNTIL(atomic_load(&fork_release), TU_WAIT_MS);
}

static void *fork_locker(void *arg)
{
	struct mm_struct *mm = arg;

	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	return NULL;
}

static void t_fork_while_hook_runs(void)
{
	struct mm_struct *mm = new_mm(MMAP_LOCK_NODEBUG);
	struct mmap_lock_trace_hooks hk = { .start_locking = fork_hook, .arg = mm };
	uint64_t deadline;
	pthread_t th;
	pid_t pid, got = 0;
	int status = 0;

	atomic_store(&fork_in_hook, 0);
	atomic_store(&fork_release, 0);
	CHECK_EQ(mmap_lock_set_trace_hooks(&hk), 0);
	tu_create(&th, fork_locker, mm);
	EXPECT_WITHIN(atomic_load(&fork_in_hook), TU_WAIT_MS);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		int rc;

		signal(SIGALRM, SIG_DFL);
		alarm(5);
		rc = mmap_lock_set_trace_hooks(NULL);	/* used to wait for ever */
		if (rc != 0)
			_exit(10);
		if (mmap_read_lock(mm) != 0 || mmap_read_unlock(mm) != 0)
			_exit(11);
		if (mmap_lock_set_trace_hooks(&hk) != 0 || mmap_lock_set_trace_hooks(NULL) != 0)
			_exit(12);
		_exit(0);
	}
	CHECK(pid > 0);
	atomic_store(&fork_release, 1);
	JOIN(th, "locker in the hook");
	CHECK_EQ(mmap_lock_set_trace_hooks(NULL), 0);
	if (pid > 0) {
		deadline = tu_now_ns() + TU_WAIT_MS * TU_NS_PER_MS;
		while ((got = waitpid(pid, &status, WNOHANG)) == 0 && tu_now_ns() < deadline)
			tu_sleep_us(1000);
		if (got == 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			CHECK_MSG(0, "child still running after %u ms", TU_WAIT_MS);
		} else {
			CHECK_EQ(got, pid);
			CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
				  "child: %s %d (SIGALRM %d: mmap_lock_set_trace_hooks hung)",
				  WIFEXITED(status) ? "exit status" : "killed by signal",
				  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
				  SIGALRM);
		}
	}
	free_mm(mm);
}

/* ------------------------------------------------ 8. no stale hold sample */

/*
 * A hold sample belongs to one hold: one released by another thread (a
 * non-owner lock), or while statistics were off, or by another task bound to
 * the thread, must not be ended later by an unrelated, unsampled release of
 * the same mm on this thread (which recorded the whole gap as a hold).
 * Sampling 1 in 2: acquisitions 2 and 4 of the thread are sampled, 1 and 3
 * not, so the third one cannot restart the sample but its release would end
 * a stale one.  (With every hold sampled, each acquisition restarts the
 * sample and hides the bug.)  Nobody holds the lock for 50 ms; no sample
 * may be as long as 2^25 ns (33.5 ms).
 */
#define GAP_US 50000
#define LONG_BUCKET 25

static void check_one_short_read_sample(struct mm_struct *mm, int line)
{
	struct mmap_lock_stats_snapshot st = stats_of(mm);

	CHECK_MSG(st.hold_samples[0] == 1 && long_holds(&st, 0, LONG_BUCKET) == 0 &&
			  st.hold_ns_total[0] < (1ull << LONG_BUCKET),
		  "line %d: %llu read hold samples (want 1), %llu of them >= 2^%d ns, "
		  "%.1f ms in all", line, (unsigned long long)st.hold_samples[0],
		  (unsigned long long)long_holds(&st, 0, LONG_BUCKET), LONG_BUCKET,
		  (double)st.hold_ns_total[0] / 1e6);
}

static void read_pair(struct mm_struct *mm)
{
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mmap_read_unlock(mm), 0);
}

static int other_task_read_unlock(void *arg)
{
	int rc;

	task_set_current(1ull << 40);		/* the task that took it, now here */
	rc = mmap_read_unlock(arg);
	task_set_current(0);
	return rc;
}

static void t_hold_sample_not_stale(void)
{
	struct mm_struct *mm;

	/* Non-owner: taken here, released by another thread. */
	mm = new_mm(MMAP_LOCK_NODEBUG);
	CHECK_EQ(mmap_lock_stats_set_hold_sampling(mm, 1), 0);
	read_pair(mm);						/* 1 */
	CHECK_EQ(mmap_read_trylock_non_owner(mm), 1);		/* 2 */
	CHECK_EQ(on_other_thread(other_read_unlock_non_owner, mm), 0);
	tu_sleep_us(GAP_US);
	read_pair(mm);						/* 3 */
	read_pair(mm);						/* 4: sampled */
	check_one_short_read_sample(mm, __LINE__);
	free_mm(mm);

	/* Released while statistics were off. */
	mm = new_mm(MMAP_LOCK_NODEBUG);
	CHECK_EQ(mmap_lock_stats_set_hold_sampling(mm, 1), 0);
	read_pair(mm);						/* 1 */
	CHECK_EQ(mmap_read_lock(mm), 0);			/* 2 */
	CHECK_EQ(mmap_lock_stats_set_enabled(mm, 0), 0);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_lock_stats_set_enabled(mm, 1), 0);
	tu_sleep_us(GAP_US);
	read_pair(mm);						/* 3 */
	read_pair(mm);						/* 4: sampled */
	check_one_short_read_sample(mm, __LINE__);
	free_mm(mm);

	/* A task that moved to another thread and released it there. */
	mm = new_mm(MMAP_LOCK_NODEBUG);
	CHECK_EQ(mmap_lock_stats_set_hold_sampling(mm, 1), 0);
	read_pair(mm);						/* 1 */
	CHECK_EQ(task_set_current(1ull << 40), 0);
	CHECK_EQ(mmap_read_lock(mm), 0);			/* 2 */
	CHECK_EQ(task_set_current((1ull << 40) + 1), 0);	/* this thread runs another task */
	CHECK_EQ(on_other_thread(other_task_read_unlock, mm), 0);
	tu_sleep_us(GAP_US);
	read_pair(mm);						/* 3 */
	CHECK_EQ(task_set_current(0), 0);
	read_pair(mm);						/* 4: sampled */
	check_one_short_read_sample(mm, __LINE__);
	free_mm(mm);
}

/* ------------------------------------ 9. a refused unlock changes nothing */

/* No `released` tracepoint for a release that did not happen, and the hold sample stays. */
static void t_refused_unlock_changes_nothing(void)
{
	struct mm_struct *mm = new_mm(MMAP_LOCK_NODEBUG);
	struct mmap_lock_stats_snapshot st;

	CHECK_EQ(mmap_lock_stats_set_hold_sampling(mm, 0), 0);	/* every hold */
	CHECK_EQ(mmap_lock_set_trace_hooks(&tr_hooks), 0);
	tr_watch(mm, task_current());
	CHECK_EQ(mmap_read_unlock(mm), -EPERM);
	CHECK_EQ(mmap_write_unlock(mm), -EPERM);
	CHECK_EQ(mmap_read_unlock_non_owner(mm), -EPERM);
	tr_expect("", __LINE__);

	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mmap_write_unlock(mm), -EPERM);	/* read-held: not ours to write-release */
	CHECK_EQ(mmap_write_downgrade(mm), -EPERM);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	tr_expect("S r|A r+|R r", __LINE__);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_read_unlock(mm), -EPERM);		/* write-held: no read to release */
	CHECK_EQ(mmap_read_unlock_non_owner(mm), -EPERM);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	tr_expect("S w|A w+|R w", __LINE__);
	tr_watch(NULL, 0);
	CHECK_EQ(mmap_lock_set_trace_hooks(NULL), 0);

	/* Each hold was sampled once, when it really ended. */
	st = stats_of(mm);
	CHECK_EQ(st.acquisitions[0], 1u);
	CHECK_EQ(st.acquisitions[1], 1u);
	CHECK_EQ(st.hold_samples[0], 1u);
	CHECK_EQ(st.hold_samples[1], 1u);
	free_mm(mm);
}

/* ---------------------------------------------- found reviewing the fixes */

/*
 * A call on a destroyed mm takes the hooked path (UNREGISTERED is one of the
 * bits that route there), and hooked_instr() registers the mm again: the
 * caller then frees it and the hooks' list points at freed memory (the next
 * mmap_lock_set_trace_hooks() or fork() writes to it).
 */
static void t_destroyed_mm_stays_off_hook_list(void)
{
	struct mm_struct *mm = malloc(sizeof(*mm));
	bool registered;

	CHECK(mm != NULL);
	if (!mm)
		return;
	CHECK_EQ(mmap_lock_init(mm, MMAP_LOCK_NODEBUG), 0);
	CHECK_EQ(mmap_lock_destroy(mm), 0);
	CHECK(atomic_load(&mm->mmap_lock_instr) & MMAP_LOCK_INSTR_UNREGISTERED);
	CHECK_EQ(mmap_read_trylock(mm), 0);
	registered = !(atomic_load(&mm->mmap_lock_instr) & MMAP_LOCK_INSTR_UNREGISTERED);
	CHECK_MSG(!registered, "a failed trylock on a destroyed mm put it back on the hooks' list");
	if (!registered)
		free(mm);	/* else it is on the list: freeing it would corrupt later tests */
}

/*
 * The hold-sample fix skips non-owner acquisitions only in the plain path:
 * a binding's mmap_lock_begin(MMAP_OP_TRY | MMAP_OP_NON_OWNER) (and a
 * non-owner mmap_lock_wait()) still arms this thread's sample.
 */
static void t_nonowner_begin_no_sample(void)
{
	struct mm_struct *mm = new_mm(MMAP_LOCK_NODEBUG);

	CHECK_EQ(mmap_lock_stats_set_hold_sampling(mm, 1), 0);
	read_pair(mm);							/* 1 */
	CHECK_EQ(mmap_lock_begin(mm, MMAP_OP_TRY | MMAP_OP_NON_OWNER, 0), 0);	/* 2 */
	CHECK_EQ(on_other_thread(other_read_unlock_non_owner, mm), 0);
	tu_sleep_us(GAP_US);
	read_pair(mm);							/* 3 */
	read_pair(mm);							/* 4: sampled */
	check_one_short_read_sample(mm, __LINE__);
	free_mm(mm);
}

/*
 * A write section opened with the bare rwsem and closed by
 * mmap_write_unlock() no longer moves the count at all (even -> even is
 * skipped), so a speculation that spans the whole section is accepted; before
 * the parity fix, retry saw the change.  Ending with +2 on an even count
 * would keep the parity and still invalidate it.
 */
static void t_seq_bare_section_invalidates_speculation(void)
{
	struct mm_struct *mm = new_mm(0);
	unsigned int seq;

	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &seq), 1);
	CHECK_EQ(down_write(&mm->mmap_lock), 0);		/* a writer changes the data */
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK_MSG(mmap_lock_speculate_retry(mm, seq) == 1,
		  "a speculation spanning a write section was accepted");
	free_mm(mm);
}

/*
 * A process-shared mm is put on this process's hooks' list: its
 * mmap_lock_reg_next/prev, in the shared mapping, hold this process's
 * pointers, and another process that registers an mm writes its own
 * pointer there (here: a forked child's new mm writes the child's mm
 * into the shared mm's reg_prev; the parent's mmap_lock_destroy() of the
 * shared mm would then unlink through it).
 */
static void t_shared_mm_no_list_pointers(void)
{
	size_t len = (sizeof(struct mm_struct) + 4095) & ~(size_t)4095;
	struct mm_struct *mm = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				    -1, 0);
	struct mm_struct *prev_before;
	int status = 0;
	pid_t pid;

	CHECK(mm != MAP_FAILED);
	if (mm == MAP_FAILED)
		return;
	CHECK_EQ(mmap_lock_init(mm, MMAP_LOCK_SHARED), 0);
	prev_before = mm->mmap_lock_reg_prev;
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		alarm(5);
		_exit(new_mm(0) ? 0 : 1);	/* registers a child-local mm */
	}
	CHECK(pid > 0);
	if (pid > 0) {
		uint64_t deadline = tu_now_ns() + TU_WAIT_MS * TU_NS_PER_MS;
		pid_t got;

		while ((got = waitpid(pid, &status, WNOHANG)) == 0 && tu_now_ns() < deadline)
			tu_sleep_us(1000);
		if (got == 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
		}
		CHECK(got == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	CHECK_MSG(mm->mmap_lock_reg_prev == prev_before,
		  "another process wrote its pointer %p into the shared mm (was %p)",
		  (void *)mm->mmap_lock_reg_prev, (void *)prev_before);
	mm->mmap_lock_reg_prev = prev_before;	/* or the destroy below unlinks through it */
	CHECK_EQ(mmap_lock_destroy(mm), 0);
	munmap(mm, len);
}

/* A thread holding an mm for write until told to let go. */
struct edge_holder {
	pthread_t th;
	struct mm_struct *mm;
	_Atomic int held, release;
};

static void *edge_holder_main(void *arg)
{
	struct edge_holder *h = arg;

	CHECK_EQ(mmap_write_lock(h->mm), 0);
	atomic_store(&h->held, 1);
	EXPECT_WITHIN(atomic_load(&h->release), TU_WAIT_MS);
	CHECK_EQ(mmap_write_unlock(h->mm), 0);
	return NULL;
}

/* A cancel after a wait that already failed and was reported undoes nothing more. */
static _Atomic int ar_count;
static _Atomic uint64_t ar_task;

static void count_acquire_returned(struct mm_struct *m, bool write, bool success, void *arg)
{
	(void)m; (void)write; (void)success; (void)arg;
	if (task_current() == atomic_load(&ar_task))
		atomic_fetch_add(&ar_count, 1);
}

static void t_cancel_after_timeout_reports_once(void)
{
	struct mm_struct *mm = new_mm(0);
	struct mmap_lock_trace_hooks h = { .acquire_returned = count_acquire_returned };
	struct edge_holder holder = { .mm = mm };
	struct mmap_lock_waiter w;
	struct mmap_lock_stats_snapshot st;

	atomic_store(&ar_task, task_current());
	atomic_store(&ar_count, 0);
	CHECK_EQ(mmap_lock_set_trace_hooks(&h), 0);
	tu_create(&holder.th, edge_holder_main, &holder);
	EXPECT_WITHIN(atomic_load(&holder.held), TU_WAIT_MS);
	memset(&w, 0, sizeof(w));
	CHECK_EQ(mmap_lock_begin(mm, 0, 0), 1);
	CHECK_EQ(mmap_lock_wait(mm, &w, 0, rwsem_now_ns() + 1000000, 0), -ETIMEDOUT);
	CHECK_EQ(mmap_lock_cancel(mm, &w, 0), 0);
	CHECK_EQ(atomic_load(&ar_count), 1);
	atomic_store(&holder.release, 1);
	JOIN(holder.th, "holder");
	CHECK_EQ(mmap_lock_set_trace_hooks(NULL), 0);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.timeouts[0], 1u);
	free_mm(mm);
}

static const struct tu_test tests[] = {
	TU_TEST(t_hooks_no_straggler_after_set),
	TU_TEST(t_destroyed_mm_gets_no_stats),
	TU_TEST(t_cancel_after_successful_wait_mmap),
	TU_TEST(t_cancel_after_successful_wait_rwsem),
	TU_TEST(t_stat_number_reuse_exact),
	TU_TEST(t_shared_mm_no_stats_pointer),
	TU_TEST(t_seq_parity_survives_bare_rwsem),
	TU_TEST(t_fork_while_hook_runs),
	TU_TEST(t_hold_sample_not_stale),
	TU_TEST(t_refused_unlock_changes_nothing),
	TU_TEST(t_cancel_after_timeout_reports_once),
	TU_TEST(t_destroyed_mm_stays_off_hook_list),
	TU_TEST(t_nonowner_begin_no_sample),
	TU_TEST(t_seq_bare_section_invalidates_speculation),
	TU_TEST(t_shared_mm_no_list_pointers),
};
#define N_TESTS ((int)(sizeof(tests) / sizeof(tests[0])))

int main(int argc, char **argv)
{
	return tu_run("test_mmap_lock_edges", tests, N_TESTS, argc, argv, NULL);
}
