/* SPDX-License-Identifier: MIT */
/*
 * test_host_fork.c - host-backed mms across a host fork() (frames.h, "Host
 * fork"): the child's copies of the parent's mms are refused (-ESTALE),
 * freeing one there releases nothing of the parent's, an unpin there frees
 * only the descriptor, and an mm the child makes has a frame file of its
 * own, so nothing the child writes reaches memory the parent maps later.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frames.h"
#include "host_backing_util.h"
#include "mm_inval.h"

#define PAGES 64u

/* In the child: each failed expectation is one exit code, checked by the parent. */
#define EXPECT_OR_EXIT(cond, code)	\
	do {				\
		if (!(cond))		\
			_exit(code);	\
	} while (0)

static void child_uses_the_stale_mm_and_one_of_its_own(struct mm_struct *parent_mm, uint64_t a,
							struct mm_pin *pin, struct mm_tlb *tlb)
{
	int err = 0;
	struct mm_struct *mm;
	struct mm_host_range hr;
	uint64_t b, fa = 0;
	uint8_t byte = 0;

	alarm(10);		/* a hang ends the child, and the parent sees the signal */
	/* The parent's mm is refused, whatever the call, and cannot be freed here. */
	EXPECT_OR_EXIT(mm_mmap(parent_mm, 0, PG, RW, ANON_PRIV) == -ESTALE, 10);
	EXPECT_OR_EXIT(mm_fault(parent_mm, a, 1) == -ESTALE, 11);
	EXPECT_OR_EXIT(mm_access(parent_mm, a, &byte, 1, 0, &fa) == -ESTALE, 12);
	EXPECT_OR_EXIT(mm_munmap(parent_mm, a, PG) == -ESTALE, 13);
	EXPECT_OR_EXIT(mm_host_range(parent_mm, a, MM_ACCESS_READ, 0, &hr) == -ESTALE, 14);
	EXPECT_OR_EXIT(mm_fork(parent_mm, &err) == NULL && err == -ESTALE, 15);
	/* No guest may enter: its windows are the parent's memory. */
	EXPECT_OR_EXIT(mm_tlb_enter(tlb) == -ESTALE, 23);
	EXPECT_OR_EXIT(mm_free(parent_mm) == -ESTALE, 16);
	/* The inherited pin reads the data it pinned; unpinning frees only the descriptor. */
	EXPECT_OR_EXIT(((volatile uint8_t *)(uintptr_t)pin->host)[0] == 0x11, 17);
	EXPECT_OR_EXIT(mm_unpin_pins(pin, 1) == 1, 18);
	/* An mm of the child's own works, in a frame file of its own: fill it and leave. */
	mm = mm_alloc_opts(0, MMAP_LOCK_DEFAULT_BACKEND, MM_HOST_BACKING);
	EXPECT_OR_EXIT(mm != NULL, 19);
	b = (uint64_t)mm_mmap(mm, 0, PAGES * PG, RW, ANON_PRIV);
	EXPECT_OR_EXIT(mm_host_range(mm, b, MM_ACCESS_WRITE, 0, &hr) == 0, 20);
	EXPECT_OR_EXIT(hr.end - hr.start == PAGES * PG, 21);
	memset((void *)(uintptr_t)hr.host, 0xCC, PAGES * PG);
	EXPECT_OR_EXIT(mm_access(mm, b + 5 * PG, &byte, 1, 0, &fa) == 0 && byte == 0xCC, 22);
	_exit(0);		/* not freed: its frames stay written as the child leaves */
}

static void t_a_forked_child_cannot_reach_the_parents_frames(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm();
	uint64_t a = map(mm, 0, 16, 0), c, fa = 0;
	struct mm_host_range hr = range(mm, a, MM_ACCESS_WRITE);
	struct mm_tlb *tlb = NULL;
	struct mm_pin pin;
	pid_t pid;
	int status;

	*at(&hr, a) = 0x11;
	poke(mm, a + PG, 0x22);
	CHECK_EQ(mm_pin_pages(mm, a, 1, MM_ACCESS_READ, 0, &pin, &fa), 0);
	CHECK_EQ(mm_tlb_register(mm, NULL, NULL, 0, &tlb), 0);
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		child_uses_the_stale_mm_and_one_of_its_own(mm, a, &pin, tlb);
	CHECK(pid > 0);
	if (pid < 0)
		return;
	status = tu_wait_child(pid, 10000);
	CHECK_MSG(status == 0, "child: exit status %d (10+: which expectation, 128+: a signal)",
		  status);
	/* The parent's data, its window, its pin are as they were. */
	CHECK_EQ(peek(mm, a), 0x11);
	CHECK_EQ(peek(mm, a + PG), 0x22);
	CHECK_EQ(*at(&hr, a), 0x11);
	CHECK_EQ(((volatile uint8_t *)(uintptr_t)pin.host)[0], 0x11);
	CHECK_EQ(mm_unpin_pins(&pin, 1), 1u);
	CHECK_EQ(mm_tlb_enter(tlb), 0);		/* the parent's guest still enters */
	mm_tlb_exit(tlb);
	CHECK_EQ(mm_tlb_unregister(tlb), 0);
	/* Memory the parent maps now is demand zero: the child's writes went elsewhere. */
	c = map(mm, 0, PAGES, 0);
	hr = range(mm, c, MM_ACCESS_READ);
	CHECK(hr.start <= c && hr.end >= c + PAGES * PG);	/* merged with a's VMA, maybe */
	for (uint64_t p = 0; p < PAGES; p++)
		CHECK_EQ(*at(&hr, c + p * PG), 0);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

#define CHURN_PAGES 256u
#define FORKS 600
#define FORK_BUDGET_MS 5000u

/* A thread that maps, touches and unmaps on mms of its own until told to stop. */
static atomic_bool churn_stop;

static void *churn(void *arg)
{
	(void)arg;
	while (!atomic_load(&churn_stop)) {
		struct mm_struct *mm = mm_alloc_opts(0, MMAP_LOCK_DEFAULT_BACKEND, MM_HOST_BACKING);
		struct mm_struct *plain = mm_alloc(0);

		if (!mm || !plain)
			break;
		/* Bursts of pages: past the per-thread caches, into the slab's lock. */
		for (int i = 0; i < 8; i++) {
			uint64_t a = map(mm, 0, CHURN_PAGES, 0), b = map(plain, 0, CHURN_PAGES, 0);

			for (uint64_t p = 0; p < CHURN_PAGES; p++) {
				poke(mm, a + p * PG, 1);
				poke(plain, b + p * PG, 1);
			}
			CHECK_EQ(mm_munmap(mm, a, CHURN_PAGES * PG), 0);
			CHECK_EQ(mm_munmap(plain, b, CHURN_PAGES * PG), 0);
		}
		CHECK_EQ(mm_free(mm), 0);
		CHECK_EQ(mm_free(plain), 0);
	}
	return NULL;
}

/*
 * A fork while another thread is inside the allocators (slab pages, VMAs,
 * frames): each is fenced, so a child's own new mm never finds one of
 * their locks held by a thread that does not exist there.
 */
static void t_a_fork_beside_allocating_threads_leaves_the_child_usable(void)
{
	uint64_t deadline = tu_now_ns() + FORK_BUDGET_MS * TU_NS_PER_MS;
	pthread_t th;
	int hung = 0, failed = 0, forks = 0;

	atomic_store(&churn_stop, false);
	tu_create(&th, churn, NULL);
	/* FORKS, or as many as FORK_BUDGET_MS allows (an emulator forks slowly), 10 at least. */
	for (; forks < FORKS && (forks < 10 || tu_now_ns() < deadline); forks++) {
		pid_t pid;
		int status;

		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			/* Slab pages and VMAs (a new frame file is the line test's business). */
			struct mm_struct *plain;
			uint64_t b;

			alarm(5);
			plain = mm_alloc(0);
			EXPECT_OR_EXIT(plain != NULL, 30);
			b = (uint64_t)mm_mmap(plain, 0, 4 * PG, RW, ANON_PRIV);
			EXPECT_OR_EXIT(mm_fault(plain, b, 1) == 0 && mm_fault(plain, b + PG, 0) == 0, 31);
			EXPECT_OR_EXIT(mm_free(plain) == 0, 32);
			_exit(0);
		}
		CHECK(pid > 0);
		if (pid < 0)
			break;
		status = tu_wait_child(pid, 10000);
		hung += status == 128 + SIGALRM || status == -1;
		failed += status != 0;
	}
	atomic_store(&churn_stop, true);
	JOIN(th, "the allocating thread");
	printf("     %d forks beside the allocating thread\n", forks);
	CHECK_MSG(failed == 0, "%d of %d children failed (%d hung in an allocator)", failed,
		  forks, hung);
}

/*
 * One generation of a line of host-backed forks (in a child; never
 * returns): make a host-backed mm, pin a page of it (0x5A) and unmap it, so
 * that the pin alone holds the frame, and fork; the child drops the pin it
 * inherited and goes on, until a generation gets no host backing (the
 * frame layer ran out of room to remember its ancestors' pools).  There,
 * the inherited pin is dropped too, and a plain mm's new pages must not be
 * the ancestor's frame.  Each parent checks its page after its child left.
 */
static void host_backed_generations(void)
{
	struct mm_pin pin;
	bool have_pin = false;
	uint64_t fa = 0;

	for (int gen = 1; gen <= FRAMES_OLD_POOLS_MAX + 2; gen++) {
		struct mm_struct *mm = mm_alloc_opts(0, MMAP_LOCK_DEFAULT_BACKEND, MM_HOST_BACKING);
		int64_t a;
		pid_t pid;
		int status;

		alarm(10);
		if (have_pin) {
			EXPECT_OR_EXIT(((volatile uint8_t *)(uintptr_t)pin.host)[0] == 0x5A, 40);
			EXPECT_OR_EXIT(mm_unpin_pins(&pin, 1) == 1, 41);
		}
		if (!mm) {
			struct mm_struct *plain = mm_alloc(0);
			struct mm_pin pins[64];
			int64_t p;

			EXPECT_OR_EXIT(have_pin && plain, 42);
			p = mm_mmap(plain, 0, 64 * PG, RW, ANON_PRIV);
			EXPECT_OR_EXIT(p > 0 && mm_pin_pages(plain, (uint64_t)p, 64, MM_ACCESS_WRITE,
							  0, pins, &fa) == 0, 43);
			for (int i = 0; i < 64; i++)
				EXPECT_OR_EXIT(pins[i].host != pin.host, 44);
			_exit(0);
		}
		a = mm_mmap(mm, 0, 4 * PG, RW, ANON_PRIV);
		EXPECT_OR_EXIT(a > 0 && mm_access(mm, (uint64_t)a, &(uint8_t){ 0x5A }, 1, 1, NULL) == 0,
			       45);
		EXPECT_OR_EXIT(mm_pin_pages(mm, (uint64_t)a, 1, MM_ACCESS_WRITE, 0, &pin, &fa) == 0,
			       46);
		EXPECT_OR_EXIT(mm_munmap(mm, (uint64_t)a, 4 * PG) == 0, 47);
		have_pin = true;
		fflush(NULL);
		pid = fork();
		EXPECT_OR_EXIT(pid >= 0, 48);
		if (pid > 0) {
			alarm(0);	/* this generation's work is done: the wait is bounded */
			status = tu_wait_child(pid, 45000);
			/* The child's unpin left this generation's frame as it was. */
			EXPECT_OR_EXIT(((volatile uint8_t *)(uintptr_t)pin.host)[0] == 0x5A, 49);
			_exit(status);
		}
	}
	_exit(50);		/* never ran out of room: the limit is not where it is said to be */
}

static void t_a_line_of_host_backed_forks_never_frees_an_ancestors_frame(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0)
		host_backed_generations();
	CHECK(pid > 0);
	if (pid > 0)
		CHECK_MSG(tu_wait_child(pid, 50000) == 0, "a generation failed (40+: which check, "
			  "128+: a signal)");
}

static const struct tu_test tests[] = {
	TU_TEST(t_a_forked_child_cannot_reach_the_parents_frames),
	TU_TEST(t_a_fork_beside_allocating_threads_leaves_the_child_usable),
	TU_TEST(t_a_line_of_host_backed_forks_never_frees_an_ancestors_frame),
};

int main(int argc, char **argv)
{
	return tu_run("test_host_fork", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc,
		      argv, NULL);
}
