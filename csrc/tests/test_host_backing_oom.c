/* SPDX-License-Identifier: MIT */
/*
 * test_host_backing_oom.c - contiguous host backing when the host runs out
 * (frames.h's fault injection): a fault that finds no frame gets a page of
 * its own and the window is made around it later; a copy-on-write break
 * that cannot get a frame, or cannot map the copy over the window, fails
 * with ENOMEM and changes nothing; a fork that cannot back the child fails
 * and leaves the parent whole.  After each, every frame is given back.
 */
#include <errno.h>

#include "frames.h"
#include "host_backing_util.h"

static void t_fault_without_frames_gets_a_page_of_its_own(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm(), *child;
	uint64_t a = map(mm, 0, 8, 0);
	struct mm_host_range hr;
	int err = 0;

	frames_inject_failures(FRAMES_FAIL_ALLOC);
	poke(mm, a + 3 * PG, 0x33);
	hr = range(mm, a + 3 * PG, MM_ACCESS_READ);
	frames_inject_failures(0);
	/* One page, not a window: no frame was taken. */
	CHECK_EQ(hr.start, a + 3 * PG);
	CHECK_EQ(hr.end, a + 4 * PG);
	CHECK_EQ(*at(&hr, a + 3 * PG), 0x33);
	CHECK_EQ(mm_host_frames(), base);
	/* With frames again, the windows are made around that page. */
	hr = range(mm, a + 5 * PG, MM_ACCESS_WRITE);
	CHECK_EQ(hr.start, a + 4 * PG);
	CHECK_EQ(hr.end, a + 8 * PG);
	*at(&hr, a + 6 * PG) = 0x66;
	hr = range(mm, a, MM_ACCESS_WRITE);
	CHECK_EQ(hr.start, a);
	CHECK_EQ(hr.end, a + 3 * PG);
	CHECK_EQ(peek(mm, a + 3 * PG), 0x33);
	CHECK_EQ(peek(mm, a + 6 * PG), 0x66);
	/* Both kinds of page are copy-on-write across fork, both ways. */
	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	if (!child)
		return;
	poke(child, a + 3 * PG, 0x44);
	poke(mm, a + 6 * PG, 0x67);
	CHECK_EQ(peek(mm, a + 3 * PG), 0x33);
	CHECK_EQ(peek(child, a + 6 * PG), 0x66);
	/* DONTNEED zeroes both kinds. */
	CHECK_EQ(mm_madvise(mm, a, 8 * PG, MADV_DONTNEED), 0);
	CHECK_EQ(peek(mm, a + 3 * PG), 0);
	CHECK_EQ(peek(mm, a + 6 * PG), 0);
	CHECK_EQ(peek(child, a + 3 * PG), 0x44);
	CHECK_EQ(mm_free(child), 0);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

/* A write fault on @a of @mm, shared copy-on-write with @child, that fails as @what makes it. */
static void cow_break_fails(struct mm_struct *mm, struct mm_struct *child, uint64_t a,
			    unsigned int what)
{
	size_t before = mm_host_frames();
	struct mm_host_range hp = range(mm, a, MM_ACCESS_READ);

	frames_inject_failures(what);
	CHECK_EQ(mm_fault(mm, a, 1), -ENOMEM);
	frames_inject_failures(0);
	/* Nothing changed: the same data both sides, still shared read-only, same window. */
	CHECK_EQ(mm_host_frames(), before);
	CHECK_EQ(peek(mm, a), 0x11);
	CHECK_EQ(peek(child, a), 0x11);
	CHECK_EQ(range(mm, a, MM_ACCESS_READ).prot, (uint32_t)PROT_READ);
	CHECK_EQ(range(mm, a, MM_ACCESS_READ).host, hp.host);
	CHECK_EQ(*at(&hp, a), 0x11);
}

static void t_cow_break_without_frames_fails_and_changes_nothing(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm(), *child;
	uint64_t a = map(mm, 0, 4, 0);
	struct mm_host_range hp;
	int err = 0;

	poke(mm, a, 0x11);
	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	if (!child)
		return;
	cow_break_fails(mm, child, a, FRAMES_FAIL_ALLOC);	/* no frame for the copy */
	cow_break_fails(mm, child, a, FRAMES_FAIL_MAP);	/* the copy not mapped over the window */
	/* Then it works, at the same host address. */
	hp = range(mm, a, MM_ACCESS_WRITE);
	CHECK(hp.prot & PROT_WRITE);
	*at(&hp, a) = 0xA1;
	CHECK_EQ(peek(mm, a), 0xA1);
	CHECK_EQ(peek(child, a), 0x11);
	CHECK_EQ(mm_free(child), 0);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

static void fork_fails(unsigned int what)
{
	size_t base = mm_host_frames(), before;
	struct mm_struct *mm = new_mm();
	uint64_t a = map(mm, 0, 16, 0);
	struct mm_host_range hp = range(mm, a, MM_ACCESS_WRITE);
	int err = 0;

	for (int i = 0; i < 4; i++)
		poke(mm, a + (uint64_t)i * PG, (uint8_t)(0x10 + i));
	*at(&hp, a + 4 * PG) = 0x14;		/* through the window, never faulted */
	before = mm_host_frames();
	frames_inject_failures(what);
	CHECK(mm_fork(mm, &err) == NULL);
	frames_inject_failures(0);
	CHECK_EQ(err, -ENOMEM);
	CHECK_EQ(mm_host_frames(), before);	/* the child's frames all given back */
	/* The parent is whole: its data, its window, and writes reach both. */
	for (int i = 0; i < 5; i++)
		CHECK_EQ(peek(mm, a + (uint64_t)i * PG), 0x10 + i);
	CHECK_EQ(range(mm, a, MM_ACCESS_WRITE).host, hp.host);
	poke(mm, a, 0xB0);
	CHECK_EQ(*at(&hp, a), 0xB0);
	*at(&hp, a + 9 * PG) = 0xB9;
	CHECK_EQ(peek(mm, a + 9 * PG), 0xB9);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

static void t_fork_without_frames_fails_and_leaves_the_parent_whole(void)
{
	fork_fails(FRAMES_FAIL_ALLOC);
	fork_fails(FRAMES_FAIL_MAP);
}

static const struct tu_test tests[] = {
	TU_TEST(t_fault_without_frames_gets_a_page_of_its_own),
	TU_TEST(t_cow_break_without_frames_fails_and_changes_nothing),
	TU_TEST(t_fork_without_frames_fails_and_leaves_the_parent_whole),
};

int main(int argc, char **argv)
{
	return tu_run("test_host_backing_oom", tests, (int)(sizeof(tests) / sizeof(tests[0])),
		      argc, argv, NULL);
}
