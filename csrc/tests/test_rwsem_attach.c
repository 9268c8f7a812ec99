/* SPDX-License-Identifier: MIT */
/*
 * test_rwsem_attach.c - memory that holds no semaphore (issue 10, B9).
 *
 * A process that attaches to memory another one set up (the Python
 * bindings' attach=True) checks it with rwsem_validate() before it waits on
 * anything there; and no wait inside the semaphore is unbounded, the
 * wait-lock's included: a wait-lock word no holder writes is reported, a
 * timed call returns by its deadline and a killable one on task_kill(), even
 * while the wait-lock stays held.  Before these, each such case hung.
 *
 *   test_rwsem_attach [--only NAME]... [--list]
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "process.h"
#include "rwsem.h"
#include "task.h"
#include "test_util.h"
#include "wait_lock.h"

/*
 * The wait-lock word (wait_lock.h): 0 free, else the holder's id, bit 31 for
 * sleepers.  A private semaphore's holder is 1; a shared one's is its pid
 * and the low 9 bits of its start time at bit 22, so a word with no pid in
 * it is no holder's.
 */
#define WL_HELD		1u
#define WL_WAITERS	(1u << 31)
#define WL_NO_PID	(0x1ffu << 22)

/* A word a holder writes, held for good: 1, or (shared) this very process. */
static uint32_t held_word(int shared)
{
	return shared ? mln_wl_shared_id(mln_self()) : WL_HELD;
}

static uint64_t ms_from_now(unsigned int ms)
{
	return rwsem_now_ns() + (uint64_t)ms * TU_NS_PER_MS;
}

/* ------------------------------------------------------------------------
 * rwsem_validate().
 */
static void t_validate_initialised(void)
{
	struct rw_semaphore sem;

	CHECK_EQ(rwsem_init(&sem, 0), 0);
	CHECK_EQ(rwsem_validate(&sem, 0), 0);
	CHECK_EQ(rwsem_validate(&sem, RWSEM_SHARED), -ENOTSUP);
	CHECK_EQ(rwsem_magic_word(&sem), RWSEM_MAGIC);
	CHECK_EQ(down_write(&sem), 0);		/* a held lock is still a semaphore */
	CHECK_EQ(rwsem_validate(&sem, 0), 0);
	CHECK_EQ(up_write(&sem), 0);

	CHECK_EQ(rwsem_init(&sem, RWSEM_SHARED), 0);
	CHECK_EQ(rwsem_validate(&sem, RWSEM_SHARED), 0);
	CHECK_EQ(rwsem_validate(&sem, 0), -ENOTSUP);
}

static void t_validate_refuses_what_is_no_semaphore(void)
{
	struct {
		struct rw_semaphore sem;
		unsigned char tail[16];
	} area;
	struct rw_semaphore *shifted = (struct rw_semaphore *)((char *)&area + 8);

	memset(&area, 0xa5, sizeof(area));		/* garbage */
	CHECK_EQ(rwsem_validate(&area.sem, RWSEM_SHARED), -EINVAL);
	memset(&area, 0, sizeof(area));			/* zeroes: a private lock, not attachable */
	CHECK_EQ(rwsem_validate(&area.sem, RWSEM_SHARED), -EINVAL);
	CHECK_EQ(rwsem_init(&area.sem, RWSEM_SHARED), 0);
	CHECK_EQ(rwsem_validate(shifted, RWSEM_SHARED), -EINVAL);	/* a wrong offset */

	area.sem.magic = RWSEM_MAGIC_BASE | (RWSEM_LAYOUT_VERSION + 1);
	CHECK_EQ(rwsem_validate(&area.sem, RWSEM_SHARED), -EPROTO);

	CHECK_EQ(rwsem_init(&area.sem, 0), 0);
	atomic_store(&area.sem.wait_lock, 0xdeadbeef);
	CHECK_EQ(rwsem_validate(&area.sem, 0), -EUCLEAN);
	CHECK_EQ(rwsem_init(&area.sem, RWSEM_SHARED), 0);
	atomic_store(&area.sem.wait_lock, WL_NO_PID);
	CHECK_EQ(rwsem_validate(&area.sem, RWSEM_SHARED), -EUCLEAN);
	CHECK_EQ(rwsem_init(&area.sem, RWSEM_SHARED), 0);
	atomic_fetch_or(&area.sem.count, 0x40u);	/* a reserved bit */
	CHECK_EQ(rwsem_validate(&area.sem, RWSEM_SHARED), -EUCLEAN);
}

/* ------------------------------------------------------------------------
 * Bounded waits on the wait-lock.  A helper thread makes one call and
 * reports; the test joins it within TU_WAIT_MS (JOIN reports a hang).
 */
enum call { C_DOWN_READ, C_DOWN_WRITE, C_READ_TIMED, C_WRITE_TIMED, C_WRITE_KILLABLE,
	    C_QUEUE_INFO };

struct caller {
	struct rw_semaphore *sem;
	enum call call;
	uint64_t deadline_ns;
	_Atomic uint64_t task;
	atomic_int started;
	int rc;
	uint64_t took_ns;
	pthread_t th;
};

static void *caller_main(void *arg)
{
	struct caller *c = arg;
	uint32_t r, w;
	uint64_t h, t0;

	atomic_store(&c->task, task_current());
	atomic_store(&c->started, 1);
	t0 = rwsem_now_ns();
	switch (c->call) {
	case C_DOWN_READ:
		c->rc = down_read(c->sem);
		break;
	case C_DOWN_WRITE:
		c->rc = down_write(c->sem);
		break;
	case C_READ_TIMED:
		c->rc = down_read_timed(c->sem, c->deadline_ns);
		break;
	case C_WRITE_TIMED:
		c->rc = down_write_timed(c->sem, c->deadline_ns);
		break;
	case C_WRITE_KILLABLE:
		c->rc = down_write_killable(c->sem);
		break;
	case C_QUEUE_INFO:
		c->rc = rwsem_queue_info(c->sem, &r, &w, &h);
		break;
	}
	c->took_ns = rwsem_now_ns() - t0;
	return NULL;
}

static void call_in_thread(struct caller *c, struct rw_semaphore *sem, enum call call,
			   uint64_t deadline_ns)
{
	memset(c, 0, sizeof(*c));
	c->sem = sem;
	c->call = call;
	c->deadline_ns = deadline_ns;
	tu_create(&c->th, caller_main, c);
}

/*
 * Memory whose wait-lock word no holder writes (garbage in a semaphore that
 * is write-held, so every acquisition takes the slow path): each slow path
 * reports -EINVAL.  The old futex mutex marked it "held with sleepers" and
 * slept on it for good.  (Garbage that looks like a shared holder's id names
 * a process that is not alive: test_rwsem_robust takes such a lock over.)
 */
static void t_garbage_wait_lock_is_reported(void)
{
	static const enum call calls[] = { C_DOWN_READ, C_DOWN_WRITE, C_READ_TIMED,
					   C_WRITE_KILLABLE, C_QUEUE_INFO };
	struct rw_semaphore sem;

	for (int shared = 0; shared < 2; shared++) {
		for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
			struct caller c;

			CHECK_EQ(rwsem_init(&sem, shared ? RWSEM_SHARED : 0), 0);
			CHECK_EQ(down_write(&sem), 0);
			atomic_store(&sem.wait_lock, shared ? WL_NO_PID : 0x5a5a5a5a);
			call_in_thread(&c, &sem, calls[i], ms_from_now(TU_WAIT_MS));
			JOIN(c.th, "caller on a garbage wait-lock");
			CHECK_MSG(c.rc == -EINVAL, "shared=%d call %d: rc %d, want -EINVAL", shared,
				  (int)calls[i], c.rc);
		}
	}
}

/*
 * The wait-lock stays held (a word a holder writes, but nobody will release
 * it): a timed acquisition still returns -ETIMEDOUT by its deadline.
 */
static void t_timed_wait_bounded_by_a_held_wait_lock(void)
{
	static const enum call calls[] = { C_READ_TIMED, C_WRITE_TIMED };
	struct rw_semaphore sem;

	for (size_t i = 0; i < 2 * sizeof(calls) / sizeof(calls[0]); i++) {
		int shared = i & 1;
		struct caller c;

		CHECK_EQ(rwsem_init(&sem, shared ? RWSEM_SHARED : 0), 0);
		CHECK_EQ(down_write(&sem), 0);
		atomic_store(&sem.wait_lock, held_word(shared));
		call_in_thread(&c, &sem, calls[i / 2], ms_from_now(50));
		JOIN(c.th, "timed caller behind a held wait-lock");
		CHECK_EQ(c.rc, -ETIMEDOUT);
		CHECK_MSG(c.took_ns < 2000 * TU_NS_PER_MS, "took %.1f ms for a 50 ms deadline",
			  (double)c.took_ns / 1e6);
	}
}

/* ... and a killable one returns -EINTR once its task is killed. */
static void t_killable_wait_ends_on_kill_behind_a_held_wait_lock(void)
{
	struct rw_semaphore sem;

	for (int shared = 0; shared < 2; shared++) {
		struct caller c;

		CHECK_EQ(rwsem_init(&sem, shared ? RWSEM_SHARED : 0), 0);
		CHECK_EQ(down_write(&sem), 0);
		atomic_store(&sem.wait_lock, held_word(shared));
		call_in_thread(&c, &sem, C_WRITE_KILLABLE, 0);
		EXPECT_WITHIN(atomic_load(&c.started) &&
			      (atomic_load(&sem.wait_lock) & WL_WAITERS), TU_WAIT_MS);
		CHECK_EQ(task_kill(atomic_load(&c.task)), 0);
		JOIN(c.th, "killable caller behind a held wait-lock");
		CHECK_EQ(c.rc, -EINTR);
		CHECK_EQ(task_revive(atomic_load(&c.task)), 0);
	}
}

/* Queries too (Python's repr() calls this one): -ETIMEDOUT after RWSEM_QUERY_WAIT_NS. */
static void t_queue_info_bounded_by_a_held_wait_lock(void)
{
	struct rw_semaphore sem;
	struct caller c;

	CHECK_EQ(rwsem_init(&sem, RWSEM_SHARED), 0);
	atomic_store(&sem.wait_lock, held_word(1));
	call_in_thread(&c, &sem, C_QUEUE_INFO, 0);
	JOIN(c.th, "rwsem_queue_info behind a held wait-lock");
	CHECK_EQ(c.rc, -ETIMEDOUT);
	CHECK(c.took_ns >= RWSEM_QUERY_WAIT_NS);
	atomic_store(&sem.wait_lock, 0);
	CHECK_EQ(down_write(&sem), 0);
	CHECK_EQ(up_write(&sem), 0);
}

/* Garbage past the first words: the slow path refuses a wrong magic word too. */
static void t_slow_path_checks_the_magic(void)
{
	struct rw_semaphore sem;
	struct caller c;

	CHECK_EQ(rwsem_init(&sem, RWSEM_SHARED), 0);
	CHECK_EQ(down_write(&sem), 0);
	sem.magic = 0xa5a5a5a5;
	call_in_thread(&c, &sem, C_WRITE_TIMED, ms_from_now(TU_WAIT_MS));
	JOIN(c.th, "caller on a semaphore with a wrong magic");
	CHECK_EQ(c.rc, -EINVAL);
}

#define T(fn) TU_TEST(fn)
static const struct tu_test tests[] = {
	T(t_validate_initialised),
	T(t_validate_refuses_what_is_no_semaphore),
	T(t_garbage_wait_lock_is_reported),
	T(t_timed_wait_bounded_by_a_held_wait_lock),
	T(t_killable_wait_ends_on_kill_behind_a_held_wait_lock),
	T(t_queue_info_bounded_by_a_held_wait_lock),
	T(t_slow_path_checks_the_magic),
};

int main(int argc, char **argv)
{
	return tu_run("test_rwsem_attach", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc,
		      argv, NULL);
}
