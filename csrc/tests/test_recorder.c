/* SPDX-License-Identifier: MIT */
/*
 * test_recorder.c - the per-mm event recorder (mmap_lock_recorder.c):
 * attach/detach, the recorded fields, capacity and dropped events, and the
 * detach-and-drain handshake under concurrent emitters.
 *
 * The mm is a zero-initialised struct mm_struct that is never locked: the
 * tests call mmap_lock_record_event() directly, as a call site would.
 *
 *   test_recorder [--only NAME]... [--list]
 *
 * Other arguments (make check's TEST_ARGS, e.g. --seconds N) are ignored.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm_types.h"
#include "mmap_lock.h"
#include "mmap_lock_internal.h"
#include "mmap_lock_trace.h"
#include "rwsem.h"
#include "task.h"
#include "test_util.h"

/* Huge allocations must fail with NULL, not abort, under the sanitizers too. */
const char *__asan_default_options(void);
const char *__tsan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}
const char *__tsan_default_options(void)
{
	return "allocator_may_return_null=1";
}

static struct mm_struct *new_mm(void)
{
	struct mm_struct *mm = calloc(1, sizeof(*mm));

	if (!mm) {
		perror("calloc");
		exit(2);
	}
	return mm;
}

static uint32_t instr(struct mm_struct *mm)
{
	return atomic_load(&mm->mmap_lock_instr);
}

/* ------------------------------------------------------------------ */

static void t_round_trip(void)
{
	struct mm_struct *mm = new_mm();
	struct mmap_lock_recorder *rec;
	const struct mmap_lock_event *ev;
	uint64_t t0, t1, me = task_current();

	/* Other instrumentation bits must survive start and stop. */
	atomic_store(&mm->mmap_lock_instr, MMAP_LOCK_INSTR_DEBUG | MMAP_LOCK_INSTR_NOSTATS);
	CHECK_EQ(mmap_lock_record_start(mm, 8), 0);
	CHECK(atomic_load(&mm->mmap_lock_recorder) != NULL);
	CHECK_EQ(instr(mm), MMAP_LOCK_INSTR_DEBUG | MMAP_LOCK_INSTR_NOSTATS |
				    MMAP_LOCK_INSTR_RECORD);

	t0 = tu_now_ns();
	mmap_lock_record_event(mm, MMAP_LOCK_EV_START_LOCKING, true, false,
			       MMAP_OP_WRITE | MMAP_OP_KILLABLE);
	mmap_lock_record_event(mm, MMAP_LOCK_EV_ACQUIRE_RETURNED, true, true,
			       MMAP_OP_WRITE | MMAP_OP_KILLABLE);
	mmap_lock_record_event(mm, MMAP_LOCK_EV_RELEASED, false, false, MMAP_OP_NON_OWNER);
	t1 = tu_now_ns();

	rec = mmap_lock_record_stop(mm);
	CHECK(rec != NULL);
	CHECK(atomic_load(&mm->mmap_lock_recorder) == NULL);
	CHECK_EQ(instr(mm), MMAP_LOCK_INSTR_DEBUG | MMAP_LOCK_INSTR_NOSTATS);
	CHECK_EQ(atomic_load(&mm->mmap_lock_rec_inflight), 0);
	if (!rec)
		goto out;
	CHECK_EQ(mmap_lock_recorder_count(rec), 3);
	CHECK_EQ(mmap_lock_recorder_dropped(rec), 0);
	ev = mmap_lock_recorder_events(rec);
	for (int i = 0; i < 3; i++) {
		CHECK_MSG(ev[i].ts_ns >= t0 && ev[i].ts_ns <= t1, "event %d ts out of range", i);
		if (i)
			CHECK(ev[i].ts_ns >= ev[i - 1].ts_ns);
		CHECK_EQ(ev[i].task, me);
		CHECK_EQ(ev[i].mm, (uint64_t)(uintptr_t)mm);
		CHECK_EQ(ev[i].reserved, 0);
	}
	CHECK_EQ(ev[0].event, MMAP_LOCK_EV_START_LOCKING);
	CHECK_EQ(ev[0].write, 1);
	CHECK_EQ(ev[0].success, 0);
	CHECK_EQ(ev[0].op, MMAP_OP_WRITE | MMAP_OP_KILLABLE);
	CHECK_EQ(ev[1].event, MMAP_LOCK_EV_ACQUIRE_RETURNED);
	CHECK_EQ(ev[1].write, 1);
	CHECK_EQ(ev[1].success, 1);
	CHECK_EQ(ev[1].op, MMAP_OP_WRITE | MMAP_OP_KILLABLE);
	CHECK_EQ(ev[2].event, MMAP_LOCK_EV_RELEASED);
	CHECK_EQ(ev[2].write, 0);
	CHECK_EQ(ev[2].success, 0);
	CHECK_EQ(ev[2].op, MMAP_OP_NON_OWNER);

	/* Nothing attached now: events go nowhere and count nothing. */
	mmap_lock_record_event(mm, MMAP_LOCK_EV_RELEASED, true, false, 0);
	CHECK_EQ(mmap_lock_recorder_count(rec), 3);
	CHECK_EQ(mmap_lock_recorder_dropped(rec), 0);
	CHECK_EQ(atomic_load(&mm->mmap_lock_rec_inflight), 0);
out:
	mmap_lock_recorder_free(rec);
	free(mm);
}

/* A bound task id is what gets recorded. */
static void t_bound_task_recorded(void)
{
	struct mm_struct *mm = new_mm();
	struct mmap_lock_recorder *rec;

	CHECK_EQ(mmap_lock_record_start(mm, 2), 0);
	CHECK_EQ(task_set_current(12345), 0);
	mmap_lock_record_event(mm, MMAP_LOCK_EV_START_LOCKING, false, false, 0);
	CHECK_EQ(task_set_current(0), 0);
	mmap_lock_record_event(mm, MMAP_LOCK_EV_START_LOCKING, false, false, 0);
	rec = mmap_lock_record_stop(mm);
	CHECK(rec != NULL);
	if (rec) {
		CHECK_EQ(mmap_lock_recorder_count(rec), 2);
		CHECK_EQ(mmap_lock_recorder_events(rec)[0].task, 12345);
		CHECK_EQ(mmap_lock_recorder_events(rec)[1].task, task_current());
	}
	mmap_lock_recorder_free(rec);
	free(mm);
}

static void t_double_start_ebusy(void)
{
	struct mm_struct *mm = new_mm();
	struct mmap_lock_recorder *rec, *first;

	CHECK_EQ(mmap_lock_record_start(mm, 4), 0);
	first = atomic_load(&mm->mmap_lock_recorder);
	CHECK_EQ(mmap_lock_record_start(mm, 4), -EBUSY);
	CHECK_EQ(mmap_lock_record_start(mm, 100), -EBUSY);
	/* The refused starts left the first recorder in place. */
	CHECK(atomic_load(&mm->mmap_lock_recorder) == first);
	CHECK(instr(mm) & MMAP_LOCK_INSTR_RECORD);
	rec = mmap_lock_record_stop(mm);
	CHECK(rec == first);
	mmap_lock_recorder_free(rec);
	/* Stopped: a new start succeeds. */
	CHECK_EQ(mmap_lock_record_start(mm, 4), 0);
	mmap_lock_recorder_free(mmap_lock_record_stop(mm));
	free(mm);
}

static void t_bad_capacity(void)
{
	struct mm_struct *mm = new_mm();

	CHECK_EQ(mmap_lock_record_start(mm, 0), -EINVAL);
	CHECK_EQ(mmap_lock_record_start(mm, SIZE_MAX), -EINVAL);
	CHECK_EQ(mmap_lock_record_start(mm, SIZE_MAX / sizeof(struct mmap_lock_event) + 1),
		 -EINVAL);
	/* Representable, but no address space has room (sanitizers warn, return NULL). */
	CHECK_EQ(mmap_lock_record_start(mm, SIZE_MAX / 2 / sizeof(struct mmap_lock_event)),
		 -ENOMEM);
	/* None of that attached anything. */
	CHECK(atomic_load(&mm->mmap_lock_recorder) == NULL);
	CHECK_EQ(instr(mm), 0);
	CHECK(mmap_lock_record_stop(mm) == NULL);
	free(mm);
}

/* A process-shared mm cannot hold a process-local pointer. */
static void t_shared_mm_refused(void)
{
	struct mm_struct *mm = new_mm();

	mm->mmap_lock.flags = RWSEM_SHARED;
	CHECK_EQ(mmap_lock_record_start(mm, 8), -ENOTSUP);
	CHECK(atomic_load(&mm->mmap_lock_recorder) == NULL);
	CHECK_EQ(instr(mm), 0);
	free(mm);
}

static void t_dropped_counted(void)
{
	static const size_t caps[] = { 1, 4, 10, 11 };

	for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
		struct mm_struct *mm = new_mm();
		struct mmap_lock_recorder *rec;
		size_t cap = caps[c], n = 10, kept = cap < n ? cap : n;

		CHECK_EQ(mmap_lock_record_start(mm, cap), 0);
		for (size_t i = 0; i < n; i++)
			mmap_lock_record_event(mm, (int)(i % 3), i & 1, false, (unsigned int)i);
		rec = mmap_lock_record_stop(mm);
		CHECK(rec != NULL);
		if (!rec) {
			free(mm);
			continue;
		}
		CHECK_EQ(mmap_lock_recorder_count(rec), kept);
		CHECK_EQ(mmap_lock_recorder_dropped(rec), n - kept);
		/* The kept events are the first ones, in order. */
		for (size_t i = 0; i < kept; i++) {
			const struct mmap_lock_event *ev = &mmap_lock_recorder_events(rec)[i];

			CHECK_EQ(ev->op, i);
			CHECK_EQ(ev->event, i % 3);
			CHECK_EQ(ev->write, i & 1);
		}
		mmap_lock_recorder_free(rec);
		free(mm);
	}
}

static void t_stop_nothing_attached(void)
{
	struct mm_struct *mm = new_mm();

	CHECK(mmap_lock_record_stop(mm) == NULL);
	CHECK(mmap_lock_record_stop(mm) == NULL);
	mmap_lock_recorder_free(NULL);
	mmap_lock_recorder_release_mm(mm);	/* nothing to release: fine */
	/* An emitter with nothing attached leaves no trace. */
	mmap_lock_record_event(mm, MMAP_LOCK_EV_START_LOCKING, false, false, 0);
	CHECK_EQ(atomic_load(&mm->mmap_lock_rec_inflight), 0);
	CHECK_EQ(instr(mm), 0);
	free(mm);
}

/* release_mm frees an attached recorder (the leak checker would object). */
static void t_release_mm(void)
{
	struct mm_struct *mm = new_mm();

	CHECK_EQ(mmap_lock_record_start(mm, 16), 0);
	mmap_lock_record_event(mm, MMAP_LOCK_EV_START_LOCKING, false, false, 0);
	mmap_lock_recorder_release_mm(mm);
	CHECK(atomic_load(&mm->mmap_lock_recorder) == NULL);
	CHECK_EQ(instr(mm) & MMAP_LOCK_INSTR_RECORD, 0);
	CHECK_EQ(mmap_lock_record_start(mm, 16), 0);
	mmap_lock_recorder_release_mm(mm);
	free(mm);
}

/* Two threads race to start: exactly one wins. */
struct starter {
	pthread_t th;
	struct mm_struct *mm;
	atomic_int *go;
	int rc;
};

static void *starter_main(void *arg)
{
	struct starter *s = arg;

	while (!atomic_load(s->go))
		sched_yield();
	s->rc = mmap_lock_record_start(s->mm, 8);
	return NULL;
}

static void t_racing_starts(void)
{
	for (int round = 0; round < 100; round++) {
		struct mm_struct *mm = new_mm();
		struct starter s[3];
		atomic_int go = 0;
		int won = 0, busy = 0;

		for (int i = 0; i < 3; i++) {
			s[i].mm = mm;
			s[i].go = &go;
			s[i].rc = 1;
			tu_create(&s[i].th, starter_main, &s[i]);
		}
		atomic_store(&go, 1);
		for (int i = 0; i < 3; i++) {
			JOIN(s[i].th, "starter");
			won += s[i].rc == 0;
			busy += s[i].rc == -EBUSY;
		}
		CHECK_EQ(won, 1);
		CHECK_EQ(busy, 2);
		mmap_lock_recorder_release_mm(mm);
		free(mm);
	}
}

/* ------------------------------------------------------------------ */
/*
 * Concurrency.  Emitter i runs as task TASK_BASE + i and emits events
 * numbered seq = 0..K-1, each encoding (i, seq) in every field that can
 * carry it, so a torn or misplaced slot shows:
 *
 *   op      = i | (seq % 32) << 3            (i < 8)
 *   event   = (seq % 32) % 3
 *   write   = (seq % 32) >> 4 & 1
 *   success = ((seq % 32) ^ i) & 1
 *   task    = TASK_BASE + i
 */
#define NR_EMITTERS 4
#define TASK_BASE 1000

struct emitter {
	pthread_t th;
	struct mm_struct *mm;
	atomic_int *go;
	atomic_int *stop;		/* NULL, or: end early once set */
	unsigned int id;
	unsigned int count;		/* K, at most */
	unsigned int emitted;		/* how many it did */
};

static void *emitter_main(void *arg)
{
	struct emitter *e = arg;
	unsigned int seq;

	if (task_set_current(TASK_BASE + e->id) != 0)
		abort();
	while (!atomic_load(e->go))
		;
	for (seq = 0; seq < e->count; seq++) {
		unsigned int s = seq % 32;

		if (e->stop && atomic_load_explicit(e->stop, memory_order_relaxed))
			break;
		mmap_lock_record_event(e->mm, (int)(s % 3), (s >> 4) & 1, (s ^ e->id) & 1,
				       e->id | s << 3);
	}
	e->emitted = seq;
	return NULL;
}

static void start_emitters(struct emitter *em, struct mm_struct *mm, atomic_int *go,
			   atomic_int *stop, unsigned int k)
{
	atomic_store(go, 0);
	for (unsigned int i = 0; i < NR_EMITTERS; i++) {
		em[i].mm = mm;
		em[i].go = go;
		em[i].stop = stop;
		em[i].id = i;
		em[i].count = k;
		em[i].emitted = 0;
		tu_create(&em[i].th, emitter_main, &em[i]);
	}
}

/*
 * Check every kept event of @rec for consistency; per emitter, consecutive
 * kept events must have consecutive sequence numbers (mod 32) and
 * non-decreasing timestamps.  Adds each emitter's kept count to @per_task.
 */
static void check_recorder(const struct mmap_lock_recorder *rec, struct mm_struct *mm,
			   uint64_t t0, uint64_t *per_task)
{
	const struct mmap_lock_event *ev = mmap_lock_recorder_events(rec);
	size_t n = mmap_lock_recorder_count(rec);
	int last_seq[NR_EMITTERS];
	uint64_t last_ts[NR_EMITTERS];
	int bad = 0;

	for (int i = 0; i < NR_EMITTERS; i++) {
		last_seq[i] = -1;
		last_ts[i] = 0;
	}
	for (size_t j = 0; j < n && bad < 5; j++) {
		unsigned int id = ev[j].op & 7u, s = ev[j].op >> 3;
		bool ok = id < NR_EMITTERS && ev[j].task == TASK_BASE + id &&
			  ev[j].mm == (uint64_t)(uintptr_t)mm && ev[j].event == s % 3 &&
			  ev[j].write == ((s >> 4) & 1) && ev[j].success == ((s ^ id) & 1) &&
			  ev[j].reserved == 0 && ev[j].ts_ns >= t0;

		if (!ok) {
			CHECK_MSG(0, "slot %zu torn: task %llu op %#x event %u write %u success %u",
				  j, (unsigned long long)ev[j].task, ev[j].op, ev[j].event,
				  ev[j].write, ev[j].success);
			bad++;
			continue;
		}
		if (last_seq[id] >= 0 && (unsigned int)(last_seq[id] + 1) % 32 != s) {
			CHECK_MSG(0, "slot %zu: emitter %u seq %u after %d", j, id, s,
				  last_seq[id]);
			bad++;
		}
		if (ev[j].ts_ns < last_ts[id]) {
			CHECK_MSG(0, "slot %zu: emitter %u ts goes back", j, id);
			bad++;
		}
		last_seq[id] = (int)s;
		last_ts[id] = ev[j].ts_ns;
		per_task[id]++;
	}
}

/* Recorders come and go while the emitters run, CHURN_ROUNDS times. */
#define CHURN_ROUNDS 200

static void t_churn(void)
{
	struct mm_struct *mm = new_mm();
	struct emitter em[NR_EMITTERS];
	atomic_int go, stop = 0;
	uint64_t t0 = tu_now_ns(), seed = 0x9e3779b97f4a7c15ull, per_task[NR_EMITTERS] = { 0 };
	uint64_t recorded = 0, kept = 0, emitted = 0;

	start_emitters(em, mm, &go, &stop, UINT_MAX);
	atomic_store(&go, 1);
	for (int round = 0; round < CHURN_ROUNDS; round++) {
		struct mmap_lock_recorder *rec;
		size_t cap = 1 + (size_t)(tu_rand(&seed) % 4096);
		unsigned int spin = (unsigned int)(tu_rand(&seed) % 20000);

		CHECK_EQ(mmap_lock_record_start(mm, cap), 0);
		if (tu_rand(&seed) % 16 == 0)
			sched_yield();
		else
			tu_spin(spin);
		rec = mmap_lock_record_stop(mm);
		CHECK(rec != NULL);
		if (!rec)
			break;
		CHECK(mmap_lock_recorder_count(rec) <= cap);
		recorded += mmap_lock_recorder_count(rec) + mmap_lock_recorder_dropped(rec);
		kept += mmap_lock_recorder_count(rec);
		check_recorder(rec, mm, t0, per_task);
		mmap_lock_recorder_free(rec);
		if (tu_rand(&seed) % 16 == 0)
			sched_yield();		/* let the emitters run with nothing attached */
		if (atomic_load(&tu_test_failures))
			break;
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < NR_EMITTERS; i++) {
		JOIN(em[i].th, "emitter");
		emitted += em[i].emitted;
	}
	CHECK(recorded <= emitted);
	CHECK_EQ(atomic_load(&mm->mmap_lock_rec_inflight), 0);
	CHECK(atomic_load(&mm->mmap_lock_recorder) == NULL);
	printf("     %d recorders: %llu events kept, %llu reserved, of %llu emitted\n",
	       CHURN_ROUNDS, (unsigned long long)kept, (unsigned long long)recorded,
	       (unsigned long long)emitted);
	free(mm);
}

/* Recording stays on for the whole run: every event is kept or counted. */
static void always_on(size_t cap, unsigned int k)
{
	struct mm_struct *mm = new_mm();
	struct emitter em[NR_EMITTERS];
	struct mmap_lock_recorder *rec;
	atomic_int go;
	uint64_t t0 = tu_now_ns(), per_task[NR_EMITTERS] = { 0 }, total = (uint64_t)NR_EMITTERS * k;

	CHECK_EQ(mmap_lock_record_start(mm, cap), 0);
	start_emitters(em, mm, &go, NULL, k);
	atomic_store(&go, 1);
	for (int i = 0; i < NR_EMITTERS; i++)
		JOIN(em[i].th, "emitter");
	rec = mmap_lock_record_stop(mm);
	CHECK(rec != NULL);
	if (rec) {
		size_t count = mmap_lock_recorder_count(rec);
		uint64_t dropped = mmap_lock_recorder_dropped(rec);

		CHECK_EQ(count + dropped, total);
		CHECK_EQ(count, cap < total ? cap : total);
		check_recorder(rec, mm, t0, per_task);
		if (cap >= total) {
			/* Nothing dropped: each emitter's K events, all of them. */
			for (int i = 0; i < NR_EMITTERS; i++)
				CHECK_EQ(per_task[i], k);
		}
	}
	mmap_lock_recorder_free(rec);
	free(mm);
}

static void t_always_on_all_kept(void)
{
	always_on(NR_EMITTERS * 50000, 50000);
}

static void t_always_on_overflow(void)
{
	always_on(NR_EMITTERS * 50000 / 3, 50000);
}

/* ------------------------------------------------------------------ */

#define T(fn) { #fn + 2, fn }
static const struct tu_test tests[] = {
	T(t_round_trip),
	T(t_bound_task_recorded),
	T(t_double_start_ebusy),
	T(t_bad_capacity),
	T(t_shared_mm_refused),
	T(t_dropped_counted),
	T(t_stop_nothing_attached),
	T(t_release_mm),
	T(t_racing_starts),
	T(t_churn),
	T(t_always_on_all_kept),
	T(t_always_on_overflow),
};
#define NR_TESTS ((int)(sizeof(tests) / sizeof(tests[0])))

int main(int argc, char **argv)
{
	return tu_run("test_recorder", tests, NR_TESTS, argc, argv, NULL);
}
