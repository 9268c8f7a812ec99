/* SPDX-License-Identifier: MIT */
/*
 * test_bravo.c - the bravo design's own contract (mmap_lock_bravo.h): reads
 * on the biased fast path leave the rwsem untouched; a writer revokes the
 * bias and waits for them, with every give-up exit of the rwsem (kill,
 * timeout, trylock, a cancelled resumable wait) leaving nothing held; new
 * readers queue behind a waiting writer; re-biasing waits out the inhibit
 * window.  The whole mm suite and the stress run on bravo as on every
 * design (test_mm, test_mm_stale).
 */
#include "mm.h"
#include "mmap_lock.h"
#include "mmap_lock_stats.h"
#include "task.h"
#include "test_util.h"

#define STILL_BLOCKED_MS 100

static struct mm_struct *new_mm(void)
{
	struct mm_struct *mm = mm_alloc_backend(0, MMAP_LOCK_BACKEND_BRAVO);

	if (!mm) {
		fprintf(stderr, "mm_alloc_backend(bravo) failed\n");
		exit(2);
	}
	return mm;
}

static struct mmap_lock_stats_snapshot stats(struct mm_struct *mm)
{
	struct mmap_lock_stats_snapshot s;

	CHECK_EQ(mmap_lock_stats_read(mm, &s), 0);
	return s;
}

/* Readers the rwsem itself counts (the fast path's are not among them). */
static uint32_t rwsem_readers(struct mm_struct *mm)
{
	return rwsem_count(&mm->mmap_lock) >> 8;
}

/* One slow read acquisition re-biases a lock whose window has passed. */
static void bias_on(struct mm_struct *mm)
{
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mmap_read_unlock(mm), 0);
}

/* A thread that runs one lock call, then waits to be told to release. */
struct holder {
	pthread_t th;
	struct mm_struct *mm;
	int (*lock)(struct mm_struct *mm);
	int (*unlock)(struct mm_struct *mm);
	_Atomic int started, locked, release, done;
	_Atomic uint64_t task;
	int rc;
};

static void *holder_main(void *arg)
{
	struct holder *h = arg;

	atomic_store(&h->task, task_current());
	atomic_store(&h->started, 1);
	h->rc = h->lock(h->mm);
	atomic_store(&h->locked, 1);
	if (h->rc == 0) {
		if (WAIT_UNTIL(atomic_load(&h->release), TU_WAIT_MS))
			CHECK_EQ(h->unlock(h->mm), 0);
		else
			CHECK_MSG(0, "holder never told to release");
	}
	atomic_store(&h->done, 1);
	return NULL;
}

static void holder_start(struct holder *h, struct mm_struct *mm, int (*lock)(struct mm_struct *),
			 int (*unlock)(struct mm_struct *))
{
	*h = (struct holder){ .mm = mm, .lock = lock, .unlock = unlock };
	tu_create(&h->th, holder_main, h);
	EXPECT_WITHIN(atomic_load(&h->started), TU_WAIT_MS);
}

static void holder_finish(struct holder *h)
{
	atomic_store(&h->release, 1);
	JOIN(h->th, "holder");
}

/* --------------------------------------------------------------- the tests */

static void t_fast_reads_leave_the_rwsem_alone(void)
{
	struct mm_struct *mm = new_mm();
	struct mmap_lock_stats_snapshot a, b;

	CHECK_EQ(mmap_lock_backend_id(mm), MMAP_LOCK_BACKEND_BRAVO);
	bias_on(mm);
	a = stats(mm);
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(rwsem_readers(mm), 0);
	CHECK_EQ(mmap_lock_fast_readers(mm), 1);
	CHECK_EQ(mmap_lock_check_held(mm, 0), MMAP_CHECK_OK);
	CHECK_EQ(mmap_lock_check_held(mm, 1), MMAP_CHECK_NOT_WRITE);
	CHECK_EQ(mm_free(mm), -EBUSY);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_lock_fast_readers(mm), 0);
	b = stats(mm);
	CHECK_EQ(b.bravo_fast_reads, a.bravo_fast_reads + 1);
	CHECK_EQ(b.acquisitions[0], a.acquisitions[0] + 1);
	/* Misuse is refused as by the rwsem: nothing held, nothing changes. */
	CHECK_EQ(mmap_read_unlock(mm), -EPERM);
	CHECK_EQ(mmap_write_unlock(mm), -EPERM);
	CHECK_EQ(mm_free(mm), 0);
}

static void t_writer_revokes_and_waits(void)
{
	struct mm_struct *mm = new_mm();
	struct holder r, w;
	struct mmap_lock_stats_snapshot a;

	bias_on(mm);
	a = stats(mm);
	holder_start(&r, mm, mmap_read_lock, mmap_read_unlock);
	EXPECT_WITHIN(atomic_load(&r.locked), TU_WAIT_MS);
	CHECK_EQ(rwsem_readers(mm), 0);		/* it is a fast reader */
	holder_start(&w, mm, mmap_write_lock, mmap_write_unlock);
	CHECK(!WAIT_UNTIL(atomic_load(&w.locked), STILL_BLOCKED_MS));
	CHECK_EQ(mmap_lock_is_contended(mm), 1);
	holder_finish(&r);
	EXPECT_WITHIN(atomic_load(&w.locked), TU_WAIT_MS);
	CHECK_EQ(w.rc, 0);
	CHECK_EQ(rwsem_write_owner(&mm->mmap_lock), atomic_load(&w.task));
	holder_finish(&w);
	CHECK_EQ(stats(mm).bravo_revocations, a.bravo_revocations + 1);
	CHECK(stats(mm).bravo_inhibit_ns > a.bravo_inhibit_ns);
	/* Inhibited now: the next read takes the rwsem. */
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(rwsem_readers(mm), 1);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mm_free(mm), 0);
}

/* After a revocation that took T, the bias returns only after about 9 T. */
static void t_inhibit_window(void)
{
	struct mm_struct *mm = new_mm();
	struct holder r, w;
	uint64_t end, inhibit;

	bias_on(mm);
	holder_start(&r, mm, mmap_read_lock, mmap_read_unlock);
	EXPECT_WITHIN(atomic_load(&r.locked), TU_WAIT_MS);
	holder_start(&w, mm, mmap_write_lock, mmap_write_unlock);
	tu_sleep_us(20000);		/* the revocation lasts at least this */
	holder_finish(&r);
	EXPECT_WITHIN(atomic_load(&w.locked), TU_WAIT_MS);
	holder_finish(&w);
	end = tu_now_ns();
	inhibit = stats(mm).bravo_inhibit_ns;
	CHECK(inhibit >= 9 * 20 * TU_NS_PER_MS);
	bias_on(mm);			/* too early to re-bias */
	CHECK_EQ(mmap_read_lock(mm), 0);
	if (tu_now_ns() - end < inhibit)
		CHECK_EQ(rwsem_readers(mm), 1);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	tu_sleep_us((unsigned int)(inhibit / 1000) + 1000);
	bias_on(mm);			/* past the window: re-biased */
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(rwsem_readers(mm), 0);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mm_free(mm), 0);
}

static void t_write_trylock_never_waits_for_fast_readers(void)
{
	struct mm_struct *mm = new_mm();
	struct holder r;

	bias_on(mm);
	holder_start(&r, mm, mmap_read_lock, mmap_read_unlock);
	EXPECT_WITHIN(atomic_load(&r.locked), TU_WAIT_MS);
	CHECK_EQ(mmap_write_trylock(mm), 0);
	CHECK_EQ(rwsem_count(&mm->mmap_lock), 0);	/* it let the rwsem go again */
	CHECK_EQ(stats(mm).trylock_failures[1], 1);
	holder_finish(&r);
	CHECK_EQ(mmap_write_trylock(mm), 1);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK_EQ(mm_free(mm), 0);
}

static int write_killable(struct mm_struct *mm)
{
	return mmap_write_lock_killable(mm);
}

/* A killed writer gives up inside the revocation and leaves nothing held. */
static void t_killed_writer_in_revocation(void)
{
	struct mm_struct *mm = new_mm();
	struct holder r, w;

	bias_on(mm);
	holder_start(&r, mm, mmap_read_lock, mmap_read_unlock);
	EXPECT_WITHIN(atomic_load(&r.locked), TU_WAIT_MS);
	holder_start(&w, mm, write_killable, mmap_write_unlock);
	CHECK(!WAIT_UNTIL(atomic_load(&w.locked), STILL_BLOCKED_MS));
	CHECK_EQ(task_kill(atomic_load(&w.task)), 0);
	EXPECT_WITHIN(atomic_load(&w.done), TU_WAIT_MS);
	CHECK_EQ(w.rc, -EINTR);
	JOIN(w.th, "killed writer");
	CHECK_EQ(task_revive(atomic_load(&w.task)), 0);
	CHECK_EQ(rwsem_is_write_locked(&mm->mmap_lock), 0);
	CHECK_EQ(stats(mm).killable_failures[1], 1);
	holder_finish(&r);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK_EQ(mm_free(mm), 0);
}

/* The bindings' resumable wait: timeout and cancel inside the revocation. */
static void t_resumable_wait_gives_up_in_revocation(void)
{
	struct mm_struct *mm = new_mm();
	struct mmap_lock_waiter w;
	struct holder r;
	int rc;

	bias_on(mm);
	holder_start(&r, mm, mmap_read_lock, mmap_read_unlock);
	EXPECT_WITHIN(atomic_load(&r.locked), TU_WAIT_MS);

	CHECK_EQ(mmap_write_lock_begin(mm), 1);
	CHECK_EQ(rwsem_count(&mm->mmap_lock), 0);	/* begin let it go */
	memset(&w, 0, sizeof(w));
	rc = mmap_lock_wait(mm, &w, MMAP_OP_WRITE, rwsem_now_ns() + 30 * TU_NS_PER_MS, 0);
	CHECK_EQ(rc, -ETIMEDOUT);
	CHECK_EQ(rwsem_count(&mm->mmap_lock), 0);
	CHECK_EQ(stats(mm).timeouts[1], 1);

	CHECK_EQ(mmap_write_lock_begin(mm), 1);
	memset(&w, 0, sizeof(w));
	rc = mmap_lock_wait(mm, &w, MMAP_OP_WRITE, UINT64_MAX, RWSEM_WAIT_SIGNALS);
	CHECK_EQ(rc, RWSEM_WAIT_INTERRUPTED);		/* the signal poll, in the revocation */
	CHECK_EQ(rwsem_is_write_locked(&mm->mmap_lock), 1);
	CHECK_EQ(mmap_lock_cancel(mm, &w, MMAP_OP_WRITE), 0);
	CHECK_EQ(rwsem_count(&mm->mmap_lock), 0);

	holder_finish(&r);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK_EQ(mm_free(mm), 0);
}

/* Writer preference: once a writer waits, a new reader queues behind it. */
static void t_readers_queue_behind_a_waiting_writer(void)
{
	struct mm_struct *mm = new_mm();
	struct holder r1, w, r2;

	bias_on(mm);
	holder_start(&r1, mm, mmap_read_lock, mmap_read_unlock);
	EXPECT_WITHIN(atomic_load(&r1.locked), TU_WAIT_MS);
	holder_start(&w, mm, mmap_write_lock, mmap_write_unlock);
	EXPECT_WITHIN(rwsem_is_write_locked(&mm->mmap_lock), TU_WAIT_MS);	/* revoking */
	holder_start(&r2, mm, mmap_read_lock, mmap_read_unlock);
	CHECK(!WAIT_UNTIL(atomic_load(&r2.locked), STILL_BLOCKED_MS));
	holder_finish(&r1);
	EXPECT_WITHIN(atomic_load(&w.locked), TU_WAIT_MS);
	CHECK_EQ(atomic_load(&r2.locked), 0);
	holder_finish(&w);
	EXPECT_WITHIN(atomic_load(&r2.locked), TU_WAIT_MS);
	holder_finish(&r2);
	CHECK_EQ(mm_free(mm), 0);
}

/* Downgrade and non-owner reads are the rwsem's (never on the fast path). */
static void t_downgrade_and_non_owner(void)
{
	struct mm_struct *mm = new_mm();

	bias_on(mm);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_write_downgrade(mm), 0);
	CHECK_EQ(rwsem_readers(mm), 1);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_read_trylock_non_owner(mm), 1);
	CHECK_EQ(rwsem_readers(mm), 1);
	CHECK_EQ(mmap_read_unlock_non_owner(mm), 0);
	CHECK_EQ(rwsem_count(&mm->mmap_lock), 0);
	CHECK_EQ(mm_free(mm), 0);
}

static const struct tu_test tests[] = {
	TU_TEST(t_fast_reads_leave_the_rwsem_alone),
	TU_TEST(t_writer_revokes_and_waits),
	TU_TEST(t_inhibit_window),
	TU_TEST(t_write_trylock_never_waits_for_fast_readers),
	TU_TEST(t_killed_writer_in_revocation),
	TU_TEST(t_resumable_wait_gives_up_in_revocation),
	TU_TEST(t_readers_queue_behind_a_waiting_writer),
	TU_TEST(t_downgrade_and_non_owner),
};

int main(int argc, char **argv)
{
	return tu_run("test_bravo", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc, argv,
		      NULL);
}
