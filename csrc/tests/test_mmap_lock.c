/* SPDX-License-Identifier: MIT */
/*
 * test_mmap_lock.c - the mmap locking API in C: every name, the sequence
 * count, the tracepoints' firing order, the statistics against a counted
 * workload, hook replacement under load, and debug-mode assertions.
 *
 *   test_mmap_lock [--list] [--only NAME]
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lockdep.h"
#include "mm.h"
#include "mmap_lock.h"
#include "mmap_lock_stats.h"
#include "mmap_lock_trace.h"
#include "test_util.h"

/* The kernel's pattern: a statically initialised mm, usable without an init call. */
static struct mm_struct init_mm = { MMAP_LOCK_INITIALIZER(init_mm) };

static struct mm_struct *new_mm(unsigned int flags)
{
	struct mm_struct *mm = mm_alloc(flags);

	if (!mm) {
		fprintf(stderr, "mm_alloc failed\n");
		exit(2);
	}
	return mm;
}

static void free_mm(struct mm_struct *mm)
{
	CHECK_EQ(mm_free(mm), 0);
}

static void wait_queued(struct mm_struct *mm, uint32_t readers, uint32_t writers)
{
	uint32_t r = 0, w = 0;
	uint64_t h;

	EXPECT_WITHIN((rwsem_queue_info(&mm->mmap_lock, &r, &w, &h), r == readers && w == writers),
		      TU_WAIT_MS);
}

/* A thread running one call on an mm. */
enum op { OP_READ, OP_WRITE, OP_READ_KILLABLE, OP_WRITE_KILLABLE, OP_WRITE_NESTED };

struct caller {
	pthread_t th;
	struct mm_struct *mm;
	enum op op;
	int unlock;		/* release right after acquiring */
	_Atomic uint64_t task;
	_Atomic int started, done, rc;
};

static void *caller_main(void *arg)
{
	struct caller *c = arg;
	int rc = -1;

	atomic_store(&c->task, task_current());
	atomic_store(&c->started, 1);
	switch (c->op) {
	case OP_READ: rc = mmap_read_lock(c->mm); break;
	case OP_WRITE: rc = mmap_write_lock(c->mm); break;
	case OP_READ_KILLABLE: rc = mmap_read_lock_killable(c->mm); break;
	case OP_WRITE_KILLABLE: rc = mmap_write_lock_killable(c->mm); break;
	case OP_WRITE_NESTED: rc = mmap_write_lock_nested(c->mm, SINGLE_DEPTH_NESTING); break;
	}
	if (rc == 0 && c->unlock)
		rc = (c->op == OP_READ || c->op == OP_READ_KILLABLE) ? mmap_read_unlock(c->mm)
								     : mmap_write_unlock(c->mm);
	atomic_store(&c->rc, rc);
	atomic_store(&c->done, 1);
	return NULL;
}

/* A thread holding @mm for write until told to let go. */
struct holder {
	pthread_t th;
	struct mm_struct *mm;
	_Atomic int held, release;
};

static void *holder_main(void *arg)
{
	struct holder *h = arg;

	CHECK_EQ(mmap_write_lock(h->mm), 0);
	atomic_store(&h->held, 1);
	EXPECT_WITHIN(atomic_load(&h->release), TU_WAIT_MS);
	CHECK_EQ(mmap_write_unlock(h->mm), 0);
	return NULL;
}

static void hold_write(struct holder *h, struct mm_struct *mm)
{
	memset(h, 0, sizeof(*h));
	h->mm = mm;
	tu_create(&h->th, holder_main, h);
	EXPECT_WITHIN(atomic_load(&h->held), TU_WAIT_MS);
}

static void let_go(struct holder *h)
{
	atomic_store(&h->release, 1);
	JOIN(h->th, "holder");
}

static void start_caller(struct caller *c, struct mm_struct *mm, enum op op, int unlock)
{
	memset(c, 0, sizeof(*c));
	c->mm = mm;
	c->op = op;
	c->unlock = unlock;
	tu_create(&c->th, caller_main, c);
	EXPECT_WITHIN(atomic_load(&c->started), TU_WAIT_MS);
}

/* ------------------------------------------------------------------ API */

static void t_static_initializer(void)
{
	unsigned int seq;

	CHECK_EQ(mmap_read_lock(&init_mm), 0);
	mmap_assert_locked(&init_mm);
	CHECK_EQ(mmap_read_unlock(&init_mm), 0);
	CHECK_EQ(mmap_write_lock(&init_mm), 0);
	mmap_assert_write_locked(&init_mm);
	CHECK_EQ(mmap_lock_speculate_try_begin(&init_mm, &seq), 0);
	CHECK_EQ(mmap_write_unlock(&init_mm), 0);
	CHECK_EQ(mmap_lock_speculate_try_begin(&init_mm, &seq), 1);
	CHECK_EQ(seq % 2, 0u);
	CHECK_EQ(rwsem_is_locked(&init_mm.mmap_lock), 0);
}

static void t_every_name(void)
{
	struct mm_struct *mm = new_mm(0);
	struct mm_struct *child = new_mm(0);

	struct mm_struct *raw = malloc(sizeof(*raw));

	CHECK_EQ(mmap_init_lock(raw), 0);	/* the kernel's run-time init */
	CHECK_EQ(mmap_write_lock(raw), 0);
	CHECK_EQ(mmap_write_unlock(raw), 0);
	CHECK_EQ(mmap_lock_destroy(raw), 0);
	free(raw);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_write_lock_nested(child, SINGLE_DEPTH_NESTING), 0);
	CHECK_EQ(mmap_write_unlock(child), 0);
	CHECK_EQ(mmap_write_downgrade(mm), 0);
	CHECK_EQ(mmap_lock_check_held(mm, 0), MMAP_CHECK_OK);
	CHECK_EQ(mmap_lock_check_held(mm, 1), MMAP_CHECK_NOT_WRITE);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_write_lock_killable(mm), 0);
	CHECK_EQ(mmap_write_trylock(mm), 0);
	CHECK_EQ(mmap_read_trylock(mm), 0);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK_EQ(mmap_read_lock_killable(mm), 0);
	CHECK_EQ(mmap_read_trylock(mm), 1);
	CHECK_EQ(mmap_write_trylock(mm), 0);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_read_trylock_non_owner(mm), 1);
	CHECK_EQ(mmap_read_unlock_non_owner(mm), 0);
	CHECK_EQ(mmap_lock_check_held(mm, 0), MMAP_CHECK_UNLOCKED);
	CHECK_EQ(mmap_lock_is_contended(mm), 0);
	free_mm(child);
	free_mm(mm);
}

static void t_misuse(void)
{
	struct mm_struct *mm = new_mm(0);
	unsigned int seq0, seq1;

	CHECK_EQ(mmap_read_unlock(mm), -EPERM);
	CHECK_EQ(mmap_write_unlock(mm), -EPERM);
	CHECK_EQ(mmap_write_downgrade(mm), -EPERM);
	CHECK_EQ(mmap_write_lock_nested(mm, RWSEM_MAX_SUBCLASSES), -EINVAL);
	CHECK_EQ(mmap_write_lock_nested(mm, -1), -EINVAL);
	CHECK_EQ(mmap_lock_init(mm, 0x100), -EINVAL);
	CHECK_EQ(mmap_lock_init(mm, MMAP_LOCK_DEBUG | MMAP_LOCK_NODEBUG), -EINVAL);
	/* A refused write unlock must not move the sequence count. */
	mmap_lock_speculate_try_begin(mm, &seq0);
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mmap_write_unlock(mm), -EPERM);
	CHECK_EQ(mmap_write_downgrade(mm), -EPERM);
	mmap_lock_speculate_try_begin(mm, &seq1);
	CHECK_EQ(seq0, seq1);
	CHECK_EQ(mm_free(mm), -EBUSY);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_write_lock(mm), -EDEADLK);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	free_mm(mm);
}

static void t_killable_killed(void)
{
	struct mm_struct *mm = new_mm(0);
	struct mmap_lock_stats_snapshot st;
	struct caller c[2];

	CHECK_EQ(mmap_write_lock(mm), 0);
	start_caller(&c[0], mm, OP_READ_KILLABLE, 1);
	start_caller(&c[1], mm, OP_WRITE_KILLABLE, 1);
	wait_queued(mm, 1, 1);
	CHECK_EQ(task_kill(atomic_load(&c[0].task)), 0);
	CHECK_EQ(task_kill(atomic_load(&c[1].task)), 0);
	JOIN(c[0].th, "killed reader");
	JOIN(c[1].th, "killed writer");
	CHECK_EQ(atomic_load(&c[0].rc), -EINTR);
	CHECK_EQ(atomic_load(&c[1].rc), -EINTR);
	task_revive(atomic_load(&c[0].task));
	task_revive(atomic_load(&c[1].task));
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.killable_failures[0], 1u);
	CHECK_EQ(st.killable_failures[1], 1u);
	CHECK_EQ(st.acquisitions[1], 1u);
	free_mm(mm);
}

/* ------------------------------------------------------- sequence count */

static void t_seqcount(void)
{
	struct mm_struct *mm = new_mm(0);
	struct caller c;
	unsigned int seq, s2;

	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &seq), 1);
	CHECK_EQ(mmap_lock_speculate_retry(mm, seq), 0);
	CHECK_EQ(mmap_read_lock(mm), 0);	/* readers do not disturb speculation */
	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &s2), 1);
	CHECK_EQ(s2, seq);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_lock_speculate_retry(mm, seq), 1);	/* a section began */
	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &s2), 0);
	CHECK_EQ(s2 % 2, 1u);
	CHECK_EQ(mmap_write_downgrade(mm), 0);		/* ends the write section */
	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &s2), 1);
	CHECK_EQ(s2, seq + 2);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	/* A failed killable or trylock leaves it alone. */
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mmap_write_trylock(mm), 0);
	start_caller(&c, mm, OP_WRITE_KILLABLE, 1);
	wait_queued(mm, 0, 1);
	CHECK_EQ(task_kill(atomic_load(&c.task)), 0);
	JOIN(c.th, "killed writer");
	CHECK_EQ(atomic_load(&c.rc), -EINTR);
	task_revive(atomic_load(&c.task));
	CHECK_EQ(mmap_lock_speculate_try_begin(mm, &s2), 1);
	CHECK_EQ(s2, seq + 2);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	free_mm(mm);
}

/* A speculating reader never accepts a torn pair written under the write lock. */
struct spec {
	struct mm_struct *mm;
	_Atomic uint64_t a, b;
	_Atomic int stop;
	_Atomic long accepted, retried;
};

static void *spec_reader(void *arg)
{
	struct spec *s = arg;

	while (!atomic_load(&s->stop)) {
		unsigned int seq;
		uint64_t a, b;

		if (!mmap_lock_speculate_try_begin(s->mm, &seq)) {
			atomic_fetch_add(&s->retried, 1);
			continue;
		}
		a = atomic_load_explicit(&s->a, memory_order_relaxed);
		b = atomic_load_explicit(&s->b, memory_order_relaxed);
		if (mmap_lock_speculate_retry(s->mm, seq)) {
			atomic_fetch_add(&s->retried, 1);
			continue;
		}
		CHECK_MSG(a == b, "speculation accepted a torn pair %llu/%llu",
			  (unsigned long long)a, (unsigned long long)b);
		atomic_fetch_add(&s->accepted, 1);
	}
	return NULL;
}

static void t_seqcount_speculation_consistent(void)
{
	struct spec s = { .mm = new_mm(0) };
	pthread_t th;

	uint64_t deadline = tu_now_ns() + 2000 * TU_NS_PER_MS;
	uint64_t i;

	tu_create(&th, spec_reader, &s);
	/* Until the reader has both accepted and retried plenty (or 2 s passed). */
	for (i = 1; (atomic_load(&s.accepted) < 10000 || atomic_load(&s.retried) < 1000) &&
		    tu_now_ns() < deadline; i++) {
		CHECK_EQ(mmap_write_lock(s.mm), 0);
		atomic_store_explicit(&s.a, i, memory_order_relaxed);
		tu_spin(50);
		atomic_store_explicit(&s.b, i, memory_order_relaxed);
		CHECK_EQ(mmap_write_unlock(s.mm), 0);
		tu_spin(50);
	}
	atomic_store(&s.stop, 1);
	JOIN(th, "speculating reader");
	printf("    speculation: %llu write sections, %ld accepted, %ld retried\n",
	       (unsigned long long)i, atomic_load(&s.accepted), atomic_load(&s.retried));
	CHECK(atomic_load(&s.accepted) > 0);
	free_mm(s.mm);
}

/* ------------------------------------------------------------ tracepoints */

#define MAX_EV 64
static struct {
	_Atomic int n;
	char ev[MAX_EV][8];
	int locked_at_release[MAX_EV];
	struct mm_struct *filter;
} tr;

static void tr_add(struct mm_struct *mm, const char *what)
{
	int i;

	if (mm != tr.filter)
		return;
	i = atomic_fetch_add(&tr.n, 1);
	if (i < MAX_EV) {
		snprintf(tr.ev[i], sizeof(tr.ev[i]), "%s", what);
		tr.locked_at_release[i] = rwsem_is_locked(&mm->mmap_lock);
	}
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

/* Compare the events so far with @want (a space-free list joined by '|'). */
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

static void t_tracepoint_order(void)
{
	struct mm_struct *mm = new_mm(0), *child = new_mm(0);
	struct caller c;

	tr.filter = mm;
	CHECK_EQ(mmap_lock_trace_enabled(), 0);
	CHECK_EQ(mmap_lock_set_trace_hooks(&tr_hooks), 0);
	CHECK_EQ(mmap_lock_trace_enabled(), 1);
	atomic_store(&tr.n, 0);

	mmap_read_lock(mm);
	mmap_read_unlock(mm);
	tr_expect("S r|A r+|R r", __LINE__);
	CHECK_EQ(tr.locked_at_release[2], 1);	/* released fires before the release */
	mmap_write_lock(mm);
	mmap_write_unlock(mm);
	tr_expect("S w|A w+|R w", __LINE__);
	mmap_write_lock_killable(mm);
	mmap_write_downgrade(mm);		/* reported as a read acquisition */
	mmap_read_unlock(mm);
	tr_expect("S w|A w+|A r+|R r", __LINE__);
	CHECK_EQ(mmap_read_trylock(mm), 1);
	CHECK_EQ(mmap_write_trylock(mm), 0);	/* failed trylock: start, then failure */
	mmap_read_unlock(mm);
	tr_expect("S r|A r+|S w|A w-|R r", __LINE__);
	CHECK_EQ(mmap_read_trylock_non_owner(mm), 1);
	CHECK_EQ(mmap_read_unlock_non_owner(mm), 0);
	tr_expect("S r|A r+|R r", __LINE__);
	mmap_write_lock(child);				/* filtered out: only mm is traced */
	mmap_write_lock_nested(mm, SINGLE_DEPTH_NESTING);
	tr_expect("S w|A w+", __LINE__);
	mmap_write_unlock(mm);
	mmap_write_unlock(child);
	tr_expect("R w", __LINE__);
	/* A killed killable wait: start, then failure. */
	mmap_write_lock(child);
	mmap_read_lock(mm);
	atomic_store(&tr.n, 0);
	start_caller(&c, mm, OP_WRITE_KILLABLE, 1);
	wait_queued(mm, 0, 1);
	CHECK_EQ(task_kill(atomic_load(&c.task)), 0);
	JOIN(c.th, "killed writer");
	task_revive(atomic_load(&c.task));
	tr_expect("S w|A w-", __LINE__);
	mmap_read_unlock(mm);
	mmap_write_unlock(child);
	tr_expect("R r", __LINE__);
	/* A refused misuse fires nothing: nothing was released. */
	CHECK_EQ(mmap_read_unlock(mm), -EPERM);
	CHECK_EQ(mmap_write_unlock(mm), -EPERM);
	tr_expect("", __LINE__);

	CHECK_EQ(mmap_lock_set_trace_hooks(NULL), 0);
	CHECK_EQ(mmap_lock_trace_enabled(), 0);
	mmap_read_lock(mm);
	mmap_read_unlock(mm);
	tr_expect("", __LINE__);
	free_mm(child);
	free_mm(mm);
}

/* Hooks reach a statically initialised mm, whether set before or after its first use. */
static struct mm_struct static_mm_a = { MMAP_LOCK_INITIALIZER(static_mm_a) };
static struct mm_struct static_mm_b = { MMAP_LOCK_INITIALIZER(static_mm_b) };

static void t_tracepoints_static_mm(void)
{
	mmap_read_lock(&static_mm_a);		/* first use: puts it on the list */
	mmap_read_unlock(&static_mm_a);
	atomic_store(&tr.n, 0);
	CHECK_EQ(mmap_lock_set_trace_hooks(&tr_hooks), 0);
	tr.filter = &static_mm_a;
	mmap_write_lock(&static_mm_a);
	mmap_write_unlock(&static_mm_a);
	tr_expect("S w|A w+|R w", __LINE__);
	tr.filter = &static_mm_b;		/* never used before the hooks were set */
	mmap_read_lock(&static_mm_b);
	mmap_read_unlock(&static_mm_b);
	tr_expect("S r|A r+|R r", __LINE__);
	CHECK_EQ(mmap_lock_set_trace_hooks(NULL), 0);
	mmap_read_lock(&static_mm_b);
	mmap_read_unlock(&static_mm_b);
	tr_expect("", __LINE__);
}

/* Hooks replaced while other threads lock: a replaced set's @arg may be freed at once. */
struct hammer_arg {
	struct mm_struct *mm;
	_Atomic int stop;
	_Atomic long pairs;
};

static void *hooks_hammer(void *arg)
{
	struct hammer_arg *h = arg;

	while (!atomic_load(&h->stop)) {
		CHECK_EQ(mmap_read_lock(h->mm), 0);
		CHECK_EQ(mmap_read_unlock(h->mm), 0);
		atomic_fetch_add(&h->pairs, 1);
	}
	return NULL;
}

static void count_hook(struct mm_struct *mm, bool write, void *arg)
{
	(void)mm; (void)write;
	atomic_fetch_add((_Atomic long *)arg, 1);	/* ASan: a use after free shows here */
}

static void t_hooks_replaced_under_load(void)
{
	struct hammer_arg h = { .mm = new_mm(0) };
	pthread_t th[2];
	long calls = 0;

	for (int i = 0; i < 2; i++)
		tu_create(&th[i], hooks_hammer, &h);
	for (int i = 0; i < 300; i++) {
		_Atomic long *counter = malloc(sizeof(*counter));
		struct mmap_lock_trace_hooks hk = { .start_locking = count_hook,
						    .released = count_hook, .arg = counter };

		atomic_init(counter, 0);
		CHECK_EQ(mmap_lock_set_trace_hooks(&hk), 0);
		tu_spin(2000);
		CHECK_EQ(mmap_lock_set_trace_hooks(i % 2 ? NULL : &tr_hooks), 0);
		calls += atomic_load(counter);
		free((void *)counter);
	}
	CHECK_EQ(mmap_lock_set_trace_hooks(NULL), 0);
	atomic_store(&h.stop, 1);
	for (int i = 0; i < 2; i++)
		JOIN(th[i], "hammer");
	printf("    %ld pairs, %ld hook calls across 300 replacements\n",
	       atomic_load(&h.pairs), calls);
	free_mm(h.mm);
}

/*
 * A hook may make and free mms while another thread changes the hooks (a
 * binding's garbage collector may free one in any hook): the setter waits
 * for the hook, and the hook's mm needs the registry the setter used to hold
 * all along, so both hung.  A hook that changes the hooks itself is refused.
 */
static _Atomic long churn_rc_sum, churn_calls;

static void churn_hook(struct mm_struct *mm, bool write, void *arg)
{
	struct mm_struct *tmp = mm_alloc(0);

	(void)mm; (void)write; (void)arg;
	if (tmp)
		CHECK_EQ(mm_free(tmp), 0);
	atomic_fetch_add(&churn_rc_sum, mmap_lock_set_trace_hooks(NULL));
	atomic_fetch_add(&churn_calls, 1);
}

static void t_hooks_making_mms_while_hooks_change(void)
{
	struct hammer_arg h = { .mm = new_mm(0) };
	struct mmap_lock_trace_hooks churn = { .start_locking = churn_hook };
	pthread_t th[2];

	atomic_store(&churn_rc_sum, 0);
	atomic_store(&churn_calls, 0);
	for (int i = 0; i < 2; i++)
		tu_create(&th[i], hooks_hammer, &h);
	for (int i = 0; i < 200; i++) {
		CHECK_EQ(mmap_lock_set_trace_hooks(&churn), 0);
		tu_spin(50000);
		CHECK_EQ(mmap_lock_set_trace_hooks(i % 2 ? NULL : &tr_hooks), 0);
	}
	CHECK_EQ(mmap_lock_set_trace_hooks(NULL), 0);
	atomic_store(&h.stop, 1);
	for (int i = 0; i < 2; i++)
		JOIN(th[i], "hammer");
	printf("    %ld hook calls made and freed an mm while the hooks changed 400 times\n",
	       atomic_load(&churn_calls));
	CHECK(atomic_load(&churn_calls) >= 10);
	/* Every hook's own attempt to change the hooks was refused. */
	CHECK_EQ(atomic_load(&churn_rc_sum), -EDEADLK * atomic_load(&churn_calls));
	free_mm(h.mm);
}

/* ------------------------------------------------------------- statistics */

static void t_stats_counted(void)
{
	struct mm_struct *mm = new_mm(0);
	struct mmap_lock_stats_snapshot st;
	struct holder h;

	CHECK_EQ(mmap_lock_stats_set_hold_sampling(mm, 0), 0);
	for (int i = 0; i < 1000; i++) {
		mmap_read_lock(mm);
		mmap_read_unlock(mm);
	}
	for (int i = 0; i < 300; i++) {
		mmap_write_lock(mm);
		mmap_write_unlock(mm);
	}
	mmap_write_lock(mm);
	mmap_write_downgrade(mm);
	mmap_read_unlock(mm);
	/* Trylock failures while another thread holds it for write. */
	hold_write(&h, mm);
	for (int i = 0; i < 7; i++)
		CHECK_EQ(mmap_read_trylock(mm), 0);
	for (int i = 0; i < 5; i++)
		CHECK_EQ(mmap_write_trylock(mm), 0);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.acquisitions[0], 1000u);
	CHECK_EQ(st.acquisitions[1], 302u);
	CHECK_EQ(st.trylock_failures[0], 7u);
	CHECK_EQ(st.trylock_failures[1], 5u);
	CHECK_EQ(st.downgrades, 1u);
	CHECK_EQ(st.contended[0] + st.contended[1], 0u);
	/* Every hold of this thread was timed; the other thread's is still open. */
	CHECK_EQ(st.hold_samples[0], 1001u);
	CHECK_EQ(st.hold_samples[1], 301u);
	let_go(&h);
	CHECK_EQ(mmap_lock_stats_reset(mm), 0);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.acquisitions[0] + st.acquisitions[1] + st.trylock_failures[0] +
		 st.downgrades + st.hold_samples[0], 0u);
	mmap_read_lock(mm);		/* counting resumes after a reset */
	mmap_read_unlock(mm);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.acquisitions[0], 1u);
	free_mm(mm);
}

static void t_stats_contended_wait(void)
{
	struct mm_struct *mm = new_mm(0);
	struct mmap_lock_stats_snapshot st;
	struct caller c;
	uint64_t sum = 0;

	CHECK_EQ(mmap_read_lock(mm), 0);
	start_caller(&c, mm, OP_WRITE, 1);
	wait_queued(mm, 0, 1);
	tu_sleep_us(2000);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	JOIN(c.th, "writer");
	CHECK_EQ(atomic_load(&c.rc), 0);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.contended[1], 1u);
	CHECK_EQ(st.acquisitions[1], 1u);
	CHECK(st.max_wait_ns >= 2000 * TU_NS_PER_US);
	CHECK_EQ(st.wait_ns_total[1], st.max_wait_ns);
	for (int b = 0; b < MMAP_LOCK_HIST_BUCKETS; b++)
		sum += st.wait_hist[1][b];
	CHECK_EQ(sum, 1u);
	{
		int b = 63 - __builtin_clzll(st.max_wait_ns);

		CHECK_EQ(st.wait_hist[1][b < MMAP_LOCK_HIST_BUCKETS ? b : MMAP_LOCK_HIST_BUCKETS - 1], 1u);
	}
	CHECK_EQ(mmap_lock_stats_reset(mm), 0);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.max_wait_ns, 0u);
	CHECK_EQ(st.contended[1], 0u);
	free_mm(mm);
}

/* More threads than private blocks: the overflow block must count exactly too. */
#define MANY 140
#define MANY_PAIRS 200
struct many_arg {
	struct mm_struct *mm;
	pthread_barrier_t *go;
};

static void *many_main(void *arg)
{
	struct many_arg *m = arg;

	pthread_barrier_wait(m->go);
	for (int i = 0; i < MANY_PAIRS; i++) {
		mmap_read_lock(m->mm);
		mmap_read_unlock(m->mm);
	}
	/* Hold on until all have counted, so that no thread number is reused. */
	pthread_barrier_wait(m->go);
	return NULL;
}

static void t_stats_many_threads(void)
{
	struct many_arg m = { .mm = new_mm(0) };
	struct mmap_lock_stats_snapshot st;
	pthread_barrier_t go;
	pthread_t th[MANY];

	pthread_barrier_init(&go, NULL, MANY);
	m.go = &go;
	for (int i = 0; i < MANY; i++)
		tu_create(&th[i], many_main, &m);
	for (int i = 0; i < MANY; i++)
		JOIN(th[i], "counting thread");
	pthread_barrier_destroy(&go);
	CHECK_EQ(mmap_lock_stats_read(m.mm, &st), 0);
	CHECK_EQ(st.acquisitions[0], (uint64_t)MANY * MANY_PAIRS);
	free_mm(m.mm);
}

static void t_stats_disabled(void)
{
	struct mm_struct *mm = new_mm(MMAP_LOCK_NOSTATS);
	struct mmap_lock_stats_snapshot st;

	mmap_read_lock(mm);
	mmap_read_unlock(mm);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.enabled, 0u);
	CHECK_EQ(st.acquisitions[0], 0u);
	CHECK_EQ(mmap_lock_stats_set_enabled(mm, 1), 0);
	mmap_read_lock(mm);
	mmap_read_unlock(mm);
	CHECK_EQ(mmap_lock_stats_read(mm, &st), 0);
	CHECK_EQ(st.enabled, 1u);
	CHECK_EQ(st.acquisitions[0], 1u);
	CHECK_EQ(mmap_lock_stats_set_hold_sampling(mm, 21), -EINVAL);
	free_mm(mm);
}

/* ---------------------------------------------------- recorder integration */

static void t_recorder_sees_calls(void)
{
	struct mm_struct *mm = new_mm(0);
	struct mmap_lock_recorder *rec;
	const struct mmap_lock_event *ev;
	static const uint8_t want[][3] = {	/* event, write, success */
		{ MMAP_LOCK_EV_START_LOCKING, 1, 0 }, { MMAP_LOCK_EV_ACQUIRE_RETURNED, 1, 1 },
		{ MMAP_LOCK_EV_ACQUIRE_RETURNED, 0, 1 }, { MMAP_LOCK_EV_RELEASED, 0, 0 },
		{ MMAP_LOCK_EV_START_LOCKING, 0, 0 }, { MMAP_LOCK_EV_ACQUIRE_RETURNED, 0, 1 },
		{ MMAP_LOCK_EV_START_LOCKING, 1, 0 }, { MMAP_LOCK_EV_ACQUIRE_RETURNED, 1, 0 },
		{ MMAP_LOCK_EV_RELEASED, 0, 0 },
	};
	size_t n = sizeof(want) / sizeof(want[0]);

	CHECK_EQ(mmap_lock_record_start(mm, 64), 0);
	mmap_write_lock(mm);
	mmap_write_downgrade(mm);
	mmap_read_unlock(mm);
	CHECK_EQ(mmap_read_trylock(mm), 1);
	CHECK_EQ(mmap_write_trylock(mm), 0);
	mmap_read_unlock(mm);
	rec = mmap_lock_record_stop(mm);
	CHECK(rec != NULL);
	if (!rec)
		return;
	CHECK_EQ(mmap_lock_recorder_count(rec), n);
	CHECK_EQ(mmap_lock_recorder_dropped(rec), 0u);
	ev = mmap_lock_recorder_events(rec);
	for (size_t i = 0; i < n && i < mmap_lock_recorder_count(rec); i++) {
		CHECK_MSG(ev[i].event == want[i][0] && ev[i].write == want[i][1] &&
			  ev[i].success == want[i][2], "event %zu: %u/%u/%u", i, ev[i].event,
			  ev[i].write, ev[i].success);
		CHECK_EQ(ev[i].task, task_current());
		CHECK_EQ(ev[i].mm, (uint64_t)(uintptr_t)mm);
		if (i)
			CHECK(ev[i].ts_ns >= ev[i - 1].ts_ns);
	}
	CHECK_EQ(ev[7].op, MMAP_OP_WRITE | MMAP_OP_TRY);
	mmap_lock_recorder_free(rec);
	/* After stop, calls are no longer recorded and the fast path is back. */
	CHECK_EQ(mmap_lock_record_stop(mm), NULL);
	free_mm(mm);
}

/* --------------------------------------------------------- debug mode */

struct check_arg {
	struct mm_struct *mm;
	int want_read, want_write;	/* MMAP_CHECK_* expected from another thread */
};

static void *other_thread_check(void *arg)
{
	struct check_arg *c = arg;

	CHECK_EQ(mmap_lock_check_held(c->mm, 0), c->want_read);
	CHECK_EQ(mmap_lock_check_held(c->mm, 1), c->want_write);
	return NULL;
}

static void t_debug_assertions_check_current_task(void)
{
	struct mm_struct *mm = new_mm(MMAP_LOCK_DEBUG);
	struct mm_struct *plain = new_mm(MMAP_LOCK_NODEBUG);
	pthread_t th;

	mln_lockdep_reset();
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mmap_lock_check_held(mm, 0), MMAP_CHECK_OK);
	CHECK_EQ(mmap_lock_check_held(mm, 1), MMAP_CHECK_HELD_READ);
	tu_create(&th, other_thread_check,
		  &(struct check_arg){ mm, MMAP_CHECK_NOT_HELD, MMAP_CHECK_NOT_HELD });
	JOIN(th, "checker");
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_write_lock(mm), 0);
	CHECK_EQ(mmap_lock_check_held(mm, 1), MMAP_CHECK_OK);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	CHECK_EQ(mmap_lock_check_held(mm, 0), MMAP_CHECK_UNLOCKED);
	/* Non-owner read locks are not attributed to the task. */
	CHECK_EQ(mmap_read_trylock_non_owner(mm), 1);
	CHECK_EQ(mmap_lock_check_held(mm, 0), MMAP_CHECK_NOT_HELD);
	CHECK_EQ(mmap_read_unlock_non_owner(mm), 0);
	/* Without debug mode the check is the kernel's: locked at all. */
	CHECK_EQ(mmap_read_lock(plain), 0);
	tu_create(&th, other_thread_check,
		  &(struct check_arg){ plain, MMAP_CHECK_OK, MMAP_CHECK_NOT_WRITE });
	JOIN(th, "checker");
	CHECK_EQ(mmap_read_unlock(plain), 0);
	free_mm(plain);
	free_mm(mm);
}

static void t_debug_refusal_leaves_lock_alone(void)
{
	struct mm_struct *mm = new_mm(MMAP_LOCK_DEBUG);
	int mode = mln_lockdep_get_mode();

	mln_lockdep_reset();
	CHECK_EQ(mln_lockdep_set_mode(MLN_LOCKDEP_RAISE), 0);
	CHECK_EQ(mmap_read_lock(mm), 0);
	CHECK_EQ(mmap_read_lock(mm), -EDEADLK);		/* recursion: refused, untouched */
	CHECK_EQ(mln_lockdep_last_report_kind(), MLN_LOCKDEP_RECURSION);
	CHECK(strstr(mln_lockdep_last_report(), "recursive") != NULL);
	CHECK_EQ(rwsem_count(&mm->mmap_lock) >> 8, 1u);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mmap_read_unlock(mm), -EDEADLK);	/* bad unlock: refused */
	CHECK_EQ(mln_lockdep_last_report_kind(), MLN_LOCKDEP_BAD_UNLOCK);
	CHECK_EQ(mln_lockdep_depth(), 0);
	mln_lockdep_set_mode(mode);
	mln_lockdep_reset();
	free_mm(mm);
}

/* Every lock design excludes writers (TSan checks the plain counter below). */
struct backend_hammer {
	struct mm_struct *mm;
	long counter;		/* plain: only ever touched under the write lock */
	_Atomic long reads;
};

static void *backend_hammer_main(void *arg)
{
	struct backend_hammer *h = arg;

	for (int i = 0; i < 2000; i++) {
		CHECK_EQ(mmap_write_lock(h->mm), 0);
		h->counter++;
		CHECK_EQ(mmap_write_unlock(h->mm), 0);
		CHECK_EQ(mmap_read_lock(h->mm), 0);
		atomic_fetch_add(&h->reads, 1);
		CHECK_EQ(mmap_read_unlock(h->mm), 0);
	}
	return NULL;
}

static void t_backends_exclude_writers(void)
{
	for (int b = MMAP_LOCK_BACKEND_RWSEM; b < MMAP_LOCK_NR_BACKENDS; b++) {
		struct backend_hammer h = { .mm = mm_alloc_backend(0, b) };
		struct mmap_lock_stats_snapshot st;
		pthread_t th[3];

		CHECK(h.mm != NULL);
		if (!h.mm)
			continue;
		CHECK_EQ(mmap_lock_backend_id(h.mm), b);
		for (int i = 0; i < 3; i++)
			tu_create(&th[i], backend_hammer_main, &h);
		for (int i = 0; i < 3; i++)
			JOIN(th[i], "backend hammer");
		CHECK_EQ(h.counter, 6000);
		CHECK_EQ(mmap_lock_stats_read(h.mm, &st), 0);
		CHECK_EQ(st.acquisitions[1], 6000u);
		CHECK_EQ(st.acquisitions[0], 6000u);
		CHECK_EQ(mmap_lock_check_held(h.mm, 0), MMAP_CHECK_UNLOCKED);
		free_mm(h.mm);
	}
	CHECK_EQ(mm_alloc_backend(0, 99), NULL);
	CHECK_EQ(mm_alloc_backend(0, -1), NULL);
	CHECK_EQ(mm_alloc_backend(0, MMAP_LOCK_NR_BACKENDS), NULL);
}

/* One name per design: the C init by name, and back. */
static void t_design_names(void)
{
	static const char *const names[] = { "rwsem", "pthread_rwlock", "pthread_rwlock_writer",
					      "mutex", "per_vma", "bravo" };

	CHECK_EQ(sizeof(names) / sizeof(names[0]), MMAP_LOCK_NR_BACKENDS);
	for (int b = 0; b < MMAP_LOCK_NR_BACKENDS; b++) {
		struct mm_struct *mm;

		CHECK(strcmp(mmap_lock_backend_name(b), names[b]) == 0);
		CHECK_EQ(mmap_lock_backend_by_name(names[b]), b);
		mm = mm_alloc_backend(0, mmap_lock_backend_by_name(names[b]));
		CHECK(mm != NULL);
		if (mm) {
			CHECK_EQ(mmap_lock_backend_id(mm), b);
			free_mm(mm);
		}
	}
	CHECK(mmap_lock_backend_name(-1) == NULL);
	CHECK(mmap_lock_backend_name(MMAP_LOCK_NR_BACKENDS) == NULL);
	CHECK_EQ(mmap_lock_backend_by_name("rwsem "), -EINVAL);
	CHECK_EQ(mmap_lock_backend_by_name(""), -EINVAL);
	CHECK_EQ(mmap_lock_backend_by_name(NULL), -EINVAL);
}

static const struct tu_test tests[] = {
	TU_TEST(t_static_initializer),
	TU_TEST(t_hooks_making_mms_while_hooks_change),
	TU_TEST(t_backends_exclude_writers),
	TU_TEST(t_design_names),
	TU_TEST(t_every_name),
	TU_TEST(t_misuse),
	TU_TEST(t_killable_killed),
	TU_TEST(t_seqcount),
	TU_TEST(t_seqcount_speculation_consistent),
	TU_TEST(t_tracepoint_order),
	TU_TEST(t_tracepoints_static_mm),
	TU_TEST(t_hooks_replaced_under_load),
	TU_TEST(t_stats_counted),
	TU_TEST(t_stats_contended_wait),
	TU_TEST(t_stats_many_threads),
	TU_TEST(t_stats_disabled),
	TU_TEST(t_recorder_sees_calls),
	TU_TEST(t_debug_assertions_check_current_task),
	TU_TEST(t_debug_refusal_leaves_lock_alone),
};

int main(int argc, char **argv)
{
	return tu_run("test_mmap_lock", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc,
		      argv, NULL);
}
