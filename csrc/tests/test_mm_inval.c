/* SPDX-License-Identifier: MIT */
/*
 * test_mm_inval.c - the invalidation queue of secondary MMUs (mm_inval.h):
 * records and their reasons, changed_since, drain and its overflow, and the
 * shootdown: an invalidation waits, kicking, until a consumer in its guest
 * has left, even when the first kicks are lost.  On every lock design.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mm.h"
#include "mm_guest.h"
#include "mm_inval.h"
#include "mmap_lock.h"
#include "test_designs.h"
#include "test_util.h"

#define PG ((uint64_t)MM_PAGE_SIZE)
#define RW (PROT_READ | PROT_WRITE)
#define ANON_PRIV (MAP_ANONYMOUS | MAP_PRIVATE)

static struct mm_struct *new_mm(void)
{
	struct mm_struct *mm = tu_mm_alloc(0);

	CHECK(mm != NULL);
	return mm;
}

static struct mm_tlb *new_tlb(struct mm_struct *mm, mm_tlb_kick_fn kick, void *arg,
			      unsigned int flags)
{
	struct mm_tlb *t = NULL;

	CHECK_EQ(mm_tlb_register(mm, kick, arg, flags, &t), 0);
	CHECK(t != NULL);
	return t;
}

static void t_records(void)
{
	struct mm_struct *mm = new_mm(), *child;
	struct mm_tlb *t;
	struct mm_inval_record r[16];
	uint64_t a, s0;
	size_t n;
	int err;

	a = (uint64_t)mm_mmap(mm, 0, 4 * PG, RW, ANON_PRIV);
	CHECK_EQ(mm_fault(mm, a, 1), 0);
	t = new_tlb(mm, NULL, NULL, MM_TLB_EVENTFD);
	s0 = mm_tlb_seq(t);
	CHECK_EQ(mm_tlb_pending(t), 0u);		/* what came before is not its business */
	CHECK_EQ(mm_mprotect(mm, a, PG, PROT_READ), 0);
	CHECK_EQ(mm_madvise(mm, a + PG, PG, MADV_DONTNEED), 0);
	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	CHECK_EQ(mm_fault(mm, a + 2 * PG, 1), 0);	/* a COW break? no: never faulted, a new page */
	CHECK_EQ(mm_fault(mm, a + 3 * PG, 0), 0);
	CHECK_EQ(mm_munmap(mm, a + 3 * PG, PG), 0);
	CHECK_EQ(mm_tlb_pending(t), 5u);	/* fork write-protects each of the 2 private VMAs */
	CHECK_EQ(mm_tlb_changed_since(t, s0, a + 3 * PG, a + 4 * PG), 1);
	CHECK_EQ(mm_tlb_changed_since(t, mm_tlb_seq(t), a, a + 4 * PG), 0);
	CHECK_EQ(mm_tlb_changed_since(t, s0 + 3, a, a + PG), 0);	/* only the munmap since */
	CHECK_EQ(mm_tlb_changed_since(t, s0 + 100, a, a + PG), 1);	/* not a count of ours */
	n = mm_tlb_drain(t, r, 16);
	CHECK_EQ(n, 5u);
	CHECK_EQ(r[0].reason, MM_INVAL_PROTECT);
	CHECK_EQ(r[0].new_prot, PROT_READ);
	CHECK_EQ(r[0].start, a);
	CHECK_EQ(r[0].end, a + PG);
	CHECK_EQ(r[0].seq, s0 + 1);
	CHECK_EQ(r[1].reason, MM_INVAL_DONTNEED);
	CHECK_EQ(r[2].reason, MM_INVAL_WRPROTECT);	/* fork: the read-only VMA... */
	CHECK_EQ(r[2].new_prot, PROT_READ);
	CHECK_EQ(r[3].reason, MM_INVAL_WRPROTECT);	/* ...and the writable one, less write */
	CHECK_EQ(r[3].new_prot, PROT_READ);
	CHECK_EQ(r[4].reason, MM_INVAL_UNMAP);
	CHECK_EQ(mm_tlb_pending(t), 0u);
	CHECK_EQ(mm_tlb_drain(t, r, 16), 0u);
	{
		uint64_t count = 0;

		CHECK_EQ(read(mm_tlb_eventfd(t), &count, sizeof(count)), (ssize_t)sizeof(count));
		CHECK_EQ(count, 5u);
	}
	/* A copy-on-write break: one page, reason COW. */
	CHECK_EQ(mm_mprotect(mm, a, 3 * PG, RW), 0);
	mm_tlb_drain(t, r, 16);
	CHECK_EQ(mm_fault(mm, a, 1), 0);
	CHECK_EQ(mm_tlb_drain(t, r, 16), 1u);
	CHECK_EQ(r[0].reason, MM_INVAL_COW);
	CHECK_EQ(r[0].end - r[0].start, PG);
	CHECK_EQ(mm_tlb_unregister(t), 0);
	CHECK_EQ(mm_free(child), 0);
	CHECK_EQ(mm_free(mm), 0);
}

static void t_overflow(void)
{
	struct mm_struct *mm = new_mm();
	struct mm_tlb *t = new_tlb(mm, NULL, NULL, 0);
	struct mm_inval_record r[4];
	uint64_t a = (uint64_t)mm_mmap(mm, 0, PG, RW, ANON_PRIV), s0 = mm_tlb_seq(t);

	for (int i = 0; i < MM_INVAL_RING + 5; i++)
		CHECK_EQ(mm_mprotect(mm, a, PG, i & 1 ? RW : PROT_READ), 0);
	CHECK_EQ(mm_tlb_changed_since(t, s0, 0, PG), 1);	/* older than the ring: changed */
	CHECK_EQ(mm_tlb_drain(t, r, 4), 1u);
	CHECK_EQ(r[0].reason, MM_INVAL_OVERFLOW);
	CHECK_EQ(r[0].start, 0u);
	CHECK_EQ(r[0].end, MM_TASK_SIZE);
	CHECK_EQ(mm_tlb_pending(t), 0u);
	/* A small cap drains in pieces, oldest first. */
	for (int i = 0; i < 6; i++)
		CHECK_EQ(mm_mprotect(mm, a, PG, i & 1 ? RW : PROT_READ), 0);
	CHECK_EQ(mm_tlb_drain(t, r, 4), 4u);
	CHECK_EQ(r[3].seq, r[0].seq + 3);
	CHECK_EQ(mm_tlb_drain(t, r, 4), 2u);
	CHECK_EQ(mm_tlb_drain(t, r, 0), 0u);
	CHECK_EQ(mm_tlb_unregister(t), 0);
	CHECK_EQ(mm_free(mm), 0);
}

/* A guest: enters, spins until kicked (a kick ignored @ignore times), leaves. */
struct guest {
	struct mm_struct *mm;
	struct mm_tlb *tlb;
	_Atomic int in, stop, ignore, kicks, refused;
	uint64_t addr;
};

static int kick(void *arg)
{
	struct guest *g = arg;

	atomic_fetch_add(&g->kicks, 1);
	if (atomic_fetch_sub(&g->ignore, 1) <= 0)
		atomic_store(&g->stop, 1);
	return 0;
}

static void *guest_thread(void *arg)
{
	struct guest *g = arg;
	struct mm_inval_record r[8];

	while (mm_tlb_enter(g->tlb) == -EAGAIN)
		mm_tlb_drain(g->tlb, r, 8);
	/* Calls into the mm from inside the guest are refused. */
	if (mm_fault(g->mm, g->addr, 0) == -EDEADLK && mm_munmap(g->mm, g->addr, PG) == -EDEADLK)
		atomic_store(&g->refused, 1);
	atomic_store(&g->in, 1);
	while (!atomic_load(&g->stop))
		sched_yield();
	mm_tlb_exit(g->tlb);
	return NULL;
}

static void shootdown(int ignore)
{
	struct mm_struct *mm = new_mm();
	struct guest g;
	pthread_t th;
	uint64_t a = (uint64_t)mm_mmap(mm, 0, PG, RW, ANON_PRIV);

	memset(&g, 0, sizeof(g));
	g.mm = mm;
	g.addr = a;
	atomic_store(&g.ignore, ignore);
	g.tlb = new_tlb(mm, kick, &g, 0);
	CHECK_EQ(pthread_create(&th, NULL, guest_thread, &g), 0);
	while (!atomic_load(&g.in))
		sched_yield();
	/* The munmap returns only once the guest has left. */
	CHECK_EQ(mm_munmap(mm, a, PG), 0);
	CHECK_EQ(atomic_load(&g.stop), 1);
	CHECK(atomic_load(&g.kicks) >= ignore + 1);
	CHECK(mm_tlb_kicks(g.tlb) >= (uint64_t)ignore + 1);
	CHECK_EQ(atomic_load(&g.refused), 1);
	CHECK_EQ(pthread_join(th, NULL), 0);
	/* Not entered again until drained. */
	CHECK_EQ(mm_tlb_enter(g.tlb), -EAGAIN);
	CHECK_EQ(mm_tlb_pending(g.tlb), 1u);
	CHECK_EQ(mm_tlb_unregister(g.tlb), 0);
	CHECK_EQ(mm_free(mm), 0);
}

static void t_shootdown_waits_for_the_guest(void)
{
	shootdown(0);
}

static void t_shootdown_survives_lost_kicks(void)
{
	shootdown(3);
}

static void t_abandon_and_closed(void)
{
	struct mm_struct *mm = new_mm();
	struct mm_tlb *u = NULL;
	uint64_t a = (uint64_t)mm_mmap(mm, 0, PG, RW, ANON_PRIV);
	struct guest g;
	pthread_t th;

	/* Abandoned while in its guest (and never kicked): not waited for. */
	memset(&g, 0, sizeof(g));
	g.mm = mm;
	g.addr = a;
	g.tlb = new_tlb(mm, NULL, NULL, 0);
	CHECK_EQ(pthread_create(&th, NULL, guest_thread, &g), 0);
	while (!atomic_load(&g.in))
		sched_yield();
	mm_tlb_abandon(g.tlb);
	CHECK_EQ(mm_munmap(mm, a, PG), 0);
	atomic_store(&g.stop, 1);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK_EQ(mm_tlb_register(mm, NULL, NULL, 2, &u), -EINVAL);
	CHECK_EQ(mm_exit_mmap(mm), 0);
	CHECK_EQ(mm_tlb_register(mm, NULL, NULL, 0, &u), -EINVAL);	/* closed */
	CHECK_EQ(mm_free(mm), 0);	/* frees the abandoned one */
}

/*
 * A count read while an invalidation is in progress (here: from an MMU
 * notifier's invalidate_range_end, which runs before the queue's end) must
 * not let that invalidation go unseen once it has ended: a lookup made
 * after reading the count could have seen the PTEs before the change.
 */
static struct mm_tlb *mid_tlb;
static uint64_t mid_seq;

static void read_seq_mid(struct mm_struct *mm, uint64_t start, uint64_t end, void *arg)
{
	(void)mm, (void)start, (void)end, (void)arg;
	mid_seq = mm_tlb_seq(mid_tlb);
	CHECK_EQ(mm_tlb_changed_since(mid_tlb, mid_seq, start, end), 1);	/* in progress */
}

static void t_count_read_mid_invalidation(void)
{
	static const struct mmu_notifier_ops ops = { .invalidate_range_end = read_seq_mid };
	struct mm_struct *mm = new_mm();
	uint64_t a = (uint64_t)mm_mmap(mm, 0, 2 * PG, RW, ANON_PRIV);
	int id;

	mid_tlb = new_tlb(mm, NULL, NULL, 0);
	id = mm_register_notifier(mm, &ops, NULL);
	CHECK(id > 0);
	CHECK_EQ(mm_munmap(mm, a, PG), 0);
	CHECK_EQ(mm_tlb_changed_since(mid_tlb, mid_seq, a, a + PG), 1);	/* ended since */
	CHECK_EQ(mm_tlb_changed_since(mid_tlb, mid_seq, a + PG, a + 2 * PG), 0);
	CHECK_EQ(mm_tlb_changed_since(mid_tlb, mm_tlb_seq(mid_tlb), a, a + PG), 0);
	CHECK_EQ(mm_unregister_notifier(mm, id), 0);	/* it reads mid_tlb */
	CHECK_EQ(mm_tlb_unregister(mid_tlb), 0);
	CHECK_EQ(mm_free(mm), 0);
}

static const struct tu_test tests[] = {
	TU_TEST(t_count_read_mid_invalidation),
	TU_TEST(t_records),
	TU_TEST(t_overflow),
	TU_TEST(t_shootdown_waits_for_the_guest),
	TU_TEST(t_shootdown_survives_lost_kicks),
	TU_TEST(t_abandon_and_closed),
};

int main(int argc, char **argv)
{
	return tu_run_designs("test_mm_inval", tests, (int)(sizeof(tests) / sizeof(tests[0])),
			      argc, argv, NULL);
}
