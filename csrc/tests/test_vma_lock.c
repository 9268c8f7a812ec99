/* SPDX-License-Identifier: MIT */
/*
 * test_vma_lock.c - the per_vma design's own contract (vma_lock.h,
 * mm_lock_vma_under_rcu in mm_fault.c): faults bypass the mmap lock, a VMA
 * being changed is never used, a writer waits for a VMA's readers, and a
 * freed or reused VMA is refused.  Each test fails on a design that skips
 * the step it names.  (test_mm and test_mm_stale run the whole mm contract
 * and the stale-mapping stress on this design as on every other.)
 */
#include <sched.h>

#include "mm.h"
#include "mm_internal.h"
#include "mmap_lock.h"
#include "mmap_lock_stats.h"
#include "test_util.h"
#include "vma_lock.h"

#define PG ((uint64_t)MM_PAGE_SIZE)
#define RW (PROT_READ | PROT_WRITE)
#define ANON_PRIV (MAP_PRIVATE | MAP_ANONYMOUS)
#define BASE 0x300000000ull
/* How long a negative check ("still blocked") looks before it believes it. */
#define STILL_BLOCKED_MS 100

static struct mm_struct *new_mm(void)
{
	struct mm_struct *mm = mm_alloc_backend(0, MMAP_LOCK_BACKEND_PER_VMA);

	if (!mm) {
		fprintf(stderr, "mm_alloc_backend(per_vma) failed\n");
		exit(2);
	}
	return mm;
}

static void map_at(struct mm_struct *mm, uint64_t addr, uint64_t npages)
{
	CHECK_EQ(mm_mmap(mm, addr, npages * PG, RW, ANON_PRIV | MAP_FIXED), (int64_t)addr);
}

static struct mmap_lock_stats_snapshot stats(struct mm_struct *mm)
{
	struct mmap_lock_stats_snapshot s;

	CHECK_EQ(mmap_lock_stats_read(mm, &s), 0);
	return s;
}

/* A thread running one call, so a test can see whether it blocks. */
struct call {
	pthread_t th;
	struct mm_struct *mm;
	uint64_t addr;
	int (*fn)(struct call *c);
	_Atomic int started, done;
	int rc;
};

static void *call_main(void *arg)
{
	struct call *c = arg;

	atomic_store(&c->started, 1);
	c->rc = c->fn(c);
	atomic_store(&c->done, 1);
	return NULL;
}

static void call_start(struct call *c)
{
	tu_create(&c->th, call_main, c);
	EXPECT_WITHIN(atomic_load(&c->started), TU_WAIT_MS);
}

static int do_fault(struct call *c)
{
	return mm_fault(c->mm, c->addr, 1);
}

static int do_munmap(struct call *c)
{
	return mm_munmap(c->mm, c->addr, PG);
}

/* --------------------------------------------------------------- the tests */

/* A fault takes the VMA's lock, not the mmap lock; an unmapped address misses. */
static void t_fault_bypasses_mmap_lock(void)
{
	struct mm_struct *mm = new_mm();
	struct mmap_lock_stats_snapshot a, b;

	CHECK_EQ(mmap_lock_has_vma_locks(mm), 1);
	CHECK_EQ(mmap_lock_backend_id(mm), MMAP_LOCK_BACKEND_PER_VMA);
	map_at(mm, BASE, 4);
	a = stats(mm);
	CHECK_EQ(mm_fault(mm, BASE, 1), 0);
	CHECK_EQ(mm_fault(mm, BASE + PG, 0), 0);
	b = stats(mm);
	CHECK_EQ(b.acquisitions[0], a.acquisitions[0]);	/* no mmap_read_lock */
	CHECK_EQ(b.vma_lock[MMAP_VMA_LOCK_SUCCESS], a.vma_lock[MMAP_VMA_LOCK_SUCCESS] + 2);
	CHECK_EQ(mm_fault(mm, BASE + 8 * PG, 0), SEGV_MAPERR);
	a = stats(mm);
	CHECK_EQ(a.vma_lock[MMAP_VMA_LOCK_MISS], b.vma_lock[MMAP_VMA_LOCK_MISS] + 1);
	CHECK_EQ(a.acquisitions[0], b.acquisitions[0] + 1);	/* the fallback's */
	CHECK_EQ(mm_free(mm), 0);
}

/* Another task's mmap write lock does not stop a fault on a VMA it leaves alone. */
static void t_fault_runs_beside_a_writer(void)
{
	struct mm_struct *mm = new_mm();
	struct call c = { .mm = mm, .addr = BASE, .fn = do_fault };

	map_at(mm, BASE, 1);
	CHECK_EQ(mmap_write_lock(mm), 0);
	call_start(&c);
	EXPECT_WITHIN(atomic_load(&c.done), TU_WAIT_MS);
	CHECK_EQ(mmap_write_unlock(mm), 0);
	JOIN(c.th, "fault");
	CHECK_EQ(c.rc, 0);
	CHECK_EQ(mm_free(mm), 0);
}

/* A VMA write-locked in the current write section is not used: the fault waits. */
static void t_fault_waits_for_the_vma_writer(void)
{
	struct mm_struct *mm = new_mm();
	struct call c = { .mm = mm, .addr = BASE, .fn = do_fault };
	struct vm_area_struct *v;
	struct mmap_lock_stats_snapshot a;

	map_at(mm, BASE, 1);
	CHECK_EQ(mmap_write_lock(mm), 0);
	v = vma_lookup(&mm->mm_vmas, BASE);
	mm_vma_lock(mm, v);
	CHECK_EQ(vma_is_write_locked(mm, &v->vm_lock), 1);
	a = stats(mm);
	call_start(&c);
	CHECK(!WAIT_UNTIL(atomic_load(&c.done), STILL_BLOCKED_MS));
	CHECK(stats(mm).vma_lock[MMAP_VMA_LOCK_ABORT] > a.vma_lock[MMAP_VMA_LOCK_ABORT]);
	CHECK_EQ(mmap_write_unlock(mm), 0);	/* ends every VMA write lock at once */
	CHECK_EQ(vma_is_write_locked(mm, &v->vm_lock), 0);
	JOIN(c.th, "fault");
	CHECK_EQ(c.rc, 0);
	CHECK_EQ(mm_free(mm), 0);
}

/* Downgrade ends the VMA write locks too (munmap's teardown runs after it). */
static void t_downgrade_ends_vma_write_locks(void)
{
	struct mm_struct *mm = new_mm();
	struct vm_area_struct *v;

	map_at(mm, BASE, 1);
	CHECK_EQ(mmap_write_lock(mm), 0);
	v = vma_lookup(&mm->mm_vmas, BASE);
	mm_vma_lock(mm, v);
	CHECK_EQ(mmap_write_downgrade(mm), 0);
	CHECK_EQ(vma_is_write_locked(mm, &v->vm_lock), 0);
	CHECK_EQ(mmap_read_unlock(mm), 0);
	CHECK_EQ(mm_free(mm), 0);
}

/* A writer that changes a VMA waits until the VMA's readers have left. */
static void t_writer_waits_for_vma_readers(void)
{
	struct mm_struct *mm = new_mm();
	struct call c = { .mm = mm, .addr = BASE, .fn = do_munmap };
	struct vm_area_struct *v;

	map_at(mm, BASE, 1);
	v = mm_lock_vma_under_rcu(mm, BASE);
	CHECK(v != NULL);
	if (!v)
		return;
	call_start(&c);
	CHECK(!WAIT_UNTIL(atomic_load(&c.done), STILL_BLOCKED_MS));
	CHECK_EQ(v->vm_start, BASE);		/* untouched while we read it */
	vma_end_read(&v->vm_lock);
	JOIN(c.th, "munmap");
	CHECK_EQ(c.rc, 0);
	CHECK_EQ(mm_fault(mm, BASE, 0), SEGV_MAPERR);
	CHECK_EQ(mm_free(mm), 0);
}

/* A reader holds one VMA lock at a time: a second is refused, never waited for. */
static void t_one_vma_read_lock_per_thread(void)
{
	struct mm_struct *mm = new_mm();
	struct vm_area_struct *v, *w;

	map_at(mm, BASE, 1);
	map_at(mm, BASE + 2 * PG, 1);
	v = mm_lock_vma_under_rcu(mm, BASE);
	CHECK(v != NULL);
	w = mm_lock_vma_under_rcu(mm, BASE + 2 * PG);
	CHECK(w == NULL);
	if (v)
		vma_end_read(&v->vm_lock);
	w = mm_lock_vma_under_rcu(mm, BASE + 2 * PG);
	CHECK(w != NULL);
	if (w)
		vma_end_read(&w->vm_lock);
	CHECK_EQ(mm_free(mm), 0);
}

/*
 * A VMA pointer found before a munmap (as a lockless lookup may hold one) is
 * refused afterwards: detached, then reused by another mm for another range.
 */
static void t_freed_and_reused_vma_refused(void)
{
	struct mm_struct *mm = new_mm(), *other = new_mm();
	struct vm_area_struct *v, *reused;
	int hits = 0;

	map_at(mm, BASE, 1);
	v = vma_lookup_lockless(&mm->mm_vmas, BASE);
	CHECK(v != NULL);
	CHECK_EQ(mm_munmap(mm, BASE, PG), 0);
	CHECK_EQ(vma_start_read(mm, &v->vm_lock), 0);		/* detached */
	/* The pool hands freed VMAs out again: one of these is v's memory. */
	for (int i = 0; i < 64 && !hits; i++) {
		map_at(other, BASE + (uint64_t)i * 2 * PG, 1);
		reused = vma_lookup(&other->mm_vmas, BASE + (uint64_t)i * 2 * PG);
		hits += reused == v;
	}
	CHECK_EQ(hits, 1);
	/* Attached and unlocked, in another mm: only the mm check refuses it. */
	if (vma_start_read(mm, &v->vm_lock)) {
		CHECK(v->vm_mm != mm);
		vma_end_read(&v->vm_lock);
	}
	CHECK(mm_lock_vma_under_rcu(mm, BASE) == NULL);
	CHECK_EQ(mm_fault(mm, BASE, 0), SEGV_MAPERR);
	CHECK_EQ(mm_free(other), 0);
	CHECK_EQ(mm_free(mm), 0);
}

/* A copy-on-write copy calls notifiers: retried under the mmap lock, data right. */
static void t_cow_retries_under_mmap_lock(void)
{
	struct mm_struct *mm = new_mm(), *child;
	struct mmap_lock_stats_snapshot a, b;
	uint64_t v = 42, r = 0, fa;
	int err;

	map_at(mm, BASE, 1);
	CHECK_EQ(mm_access(mm, BASE, &v, 8, 1, &fa), 0);
	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	CHECK_EQ(mmap_lock_backend_id(child), MMAP_LOCK_BACKEND_PER_VMA);
	a = stats(mm);
	v = 43;
	CHECK_EQ(mm_access(mm, BASE, &v, 8, 1, &fa), 0);
	b = stats(mm);
	CHECK_EQ(b.vma_lock[MMAP_VMA_LOCK_RETRY], a.vma_lock[MMAP_VMA_LOCK_RETRY] + 1);
	CHECK_EQ(b.acquisitions[0], a.acquisitions[0] + 1);
	CHECK_EQ(mm_access(child, BASE, &r, 8, 0, &fa), 0);
	CHECK_EQ(r, 42);
	CHECK_EQ(mm_access(mm, BASE, &r, 8, 0, &fa), 0);
	CHECK_EQ(r, 43);
	CHECK_EQ(mm_free(child), 0);
	CHECK_EQ(mm_free(mm), 0);
}

/* An access across VMAs moves its read lock from one VMA to the next. */
static void t_access_spans_vmas(void)
{
	struct mm_struct *mm = new_mm();
	uint8_t buf[3 * 4096], back[sizeof(buf)];
	struct mmap_lock_stats_snapshot a, b;
	uint64_t fa;

	map_at(mm, BASE, 1);
	CHECK_EQ(mm_mmap(mm, BASE + PG, PG, PROT_READ | PROT_WRITE | PROT_EXEC,
			 ANON_PRIV | MAP_FIXED), (int64_t)(BASE + PG));	/* not merged */
	map_at(mm, BASE + 2 * PG, 1);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7);
	a = stats(mm);
	CHECK_EQ(mm_access(mm, BASE + 100, buf, sizeof(buf) - 200, 1, &fa), 0);
	b = stats(mm);
	CHECK_EQ(b.vma_lock[MMAP_VMA_LOCK_SUCCESS], a.vma_lock[MMAP_VMA_LOCK_SUCCESS] + 3);
	CHECK_EQ(b.acquisitions[0], a.acquisitions[0]);
	CHECK_EQ(mm_access(mm, BASE + 100, back, sizeof(buf) - 200, 0, &fa), 0);
	CHECK(memcmp(buf, back, sizeof(buf) - 200) == 0);
	CHECK_EQ(mm_free(mm), 0);
}

/* Other designs' VMAs carry the same lock word, and it stays exact, unused. */
static void t_other_designs_have_no_vma_locks(void)
{
	struct mm_struct *mm = mm_alloc_backend(0, MMAP_LOCK_BACKEND_RWSEM);
	struct mmap_lock_stats_snapshot s;

	CHECK_EQ(mmap_lock_has_vma_locks(mm), 0);
	map_at(mm, BASE, 1);
	CHECK_EQ(mm_fault(mm, BASE, 1), 0);
	s = stats(mm);
	CHECK_EQ(s.vma_lock[MMAP_VMA_LOCK_SUCCESS] + s.vma_lock[MMAP_VMA_LOCK_MISS], 0);
	CHECK_EQ(mm_free(mm), 0);
	CHECK(mm_alloc_backend(MMAP_LOCK_SHARED, MMAP_LOCK_BACKEND_PER_VMA) == NULL);
}

static const struct tu_test tests[] = {
	TU_TEST(t_fault_bypasses_mmap_lock),
	TU_TEST(t_fault_runs_beside_a_writer),
	TU_TEST(t_fault_waits_for_the_vma_writer),
	TU_TEST(t_downgrade_ends_vma_write_locks),
	TU_TEST(t_writer_waits_for_vma_readers),
	TU_TEST(t_one_vma_read_lock_per_thread),
	TU_TEST(t_freed_and_reused_vma_refused),
	TU_TEST(t_cow_retries_under_mmap_lock),
	TU_TEST(t_access_spans_vmas),
	TU_TEST(t_other_designs_have_no_vma_locks),
};

int main(int argc, char **argv)
{
	return tu_run("test_vma_lock", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc, argv,
		      NULL);
}
