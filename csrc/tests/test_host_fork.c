/* SPDX-License-Identifier: MIT */
/*
 * test_host_fork.c - host-backed mms across a host fork() (frames.h, "Host
 * fork"): the child's copies of the parent's mms are refused (-ESTALE),
 * freeing one there releases nothing of the parent's, an unpin there frees
 * only the descriptor, and an mm the child makes has a frame file of its
 * own, so nothing the child writes reaches memory the parent maps later.
 */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host_backing_util.h"

#define PAGES 64u

/* In the child: each failed expectation is one exit code, checked by the parent. */
#define EXPECT_OR_EXIT(cond, code)	\
	do {				\
		if (!(cond))		\
			_exit(code);	\
	} while (0)

static void child_uses_the_stale_mm_and_one_of_its_own(struct mm_struct *parent_mm, uint64_t a,
							struct mm_pin *pin)
{
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
	EXPECT_OR_EXIT(mm_fork(parent_mm, &(int){ 0 }) == NULL, 15);
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
	struct mm_pin pin;
	pid_t pid;
	int status;

	*at(&hr, a) = 0x11;
	poke(mm, a + PG, 0x22);
	CHECK_EQ(mm_pin_pages(mm, a, 1, MM_ACCESS_READ, 0, &pin, &fa), 0);
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		child_uses_the_stale_mm_and_one_of_its_own(mm, a, &pin);
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
	/* Memory the parent maps now is demand zero: the child's writes went elsewhere. */
	c = map(mm, 0, PAGES, 0);
	hr = range(mm, c, MM_ACCESS_READ);
	CHECK(hr.start <= c && hr.end >= c + PAGES * PG);	/* merged with a's VMA, maybe */
	for (uint64_t p = 0; p < PAGES; p++)
		CHECK_EQ(*at(&hr, c + p * PG), 0);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

static const struct tu_test tests[] = {
	TU_TEST(t_a_forked_child_cannot_reach_the_parents_frames),
};

int main(int argc, char **argv)
{
	return tu_run("test_host_fork", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc,
		      argv, NULL);
}
