/* SPDX-License-Identifier: MIT */
/*
 * test_host_backing.c - contiguous host backing (MM_HOST_BACKING,
 * host_backing.h): a whole VMA in one host range, demand zero, writes made
 * straight through the window, copy-on-write fork both ways, pins that
 * outlive munmap and DONTNEED, splits, merges and mremap keeping data and
 * host addresses, madvise's fork advice and prefaulting, and every frame
 * given back.
 */
#include <pthread.h>
#include <stdlib.h>

#include "host_backing_util.h"

static void t_whole_vma_demand_zero(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm();
	uint64_t a = map(mm, 0, 64, 0);
	struct mm_host_range hr = range(mm, a + 5 * PG + 12, MM_ACCESS_WRITE);

	/* One range for the whole VMA, writable, zero. */
	CHECK_EQ(hr.start, a);
	CHECK_EQ(hr.end, a + 64 * PG);
	CHECK_EQ(hr.prot, (uint32_t)RW);
	CHECK(mm_host_frames() >= base + 64);
	CHECK_EQ(*at(&hr, a + 63 * PG + 100), 0);
	CHECK_EQ(mm_nr_pages(mm), 1u);		/* only the faulted page has a PTE */
	/* A write straight through the window is the page's content once faulted. */
	*at(&hr, a + 10 * PG + 7) = 0x5A;
	CHECK_EQ(peek(mm, a + 10 * PG + 7), 0x5A);
	CHECK_EQ(mm_nr_pages(mm), 2u);
	/* And a write by the mm shows in the window. */
	poke(mm, a + 20 * PG, 0x33);
	CHECK_EQ(*at(&hr, a + 20 * PG), 0x33);
	/* A pin sees the window's data at a stable address of its own. */
	{
		struct mm_pin pin;
		uint64_t fa = 0;

		*at(&hr, a + 30 * PG + 1) = 0x77;
		CHECK_EQ(mm_pin_pages(mm, a + 30 * PG, 1, MM_ACCESS_READ, 0, &pin, &fa), 0);
		CHECK_EQ(((volatile uint8_t *)(uintptr_t)pin.host)[1], 0x77);
		CHECK_EQ(mm_unpin_pins(&pin, 1), 1u);
	}
	/* The same host range again: the window does not move. */
	CHECK_EQ(range(mm, a + 40 * PG, MM_ACCESS_READ).host, hr.host);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

static void t_fork_cow_both_ways(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm(), *child;
	uint64_t a = map(mm, 0, 16, 0);
	struct mm_host_range hp = range(mm, a, MM_ACCESS_WRITE), hc;
	int err = 0;

	for (int i = 0; i < 4; i++)
		poke(mm, a + (uint64_t)i * PG, (uint8_t)(0x10 + i));
	*at(&hp, a + 4 * PG) = 0x14;		/* written through the window, never faulted */
	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	if (!child)
		return;
	/* The child sees the parent's data, the window write included. */
	hc = range(child, a, MM_ACCESS_READ);
	CHECK_EQ(hc.start, a);
	CHECK_EQ(hc.end, a + 16 * PG);
	CHECK_EQ(hc.prot, (uint32_t)PROT_READ);	/* copy-on-write shared: read-only */
	CHECK(hc.host != hp.host);
	for (int i = 0; i < 5; i++) {
		CHECK_EQ(*at(&hc, a + (uint64_t)i * PG), 0x10 + i);
		CHECK_EQ(peek(child, a + (uint64_t)i * PG), 0x10 + i);
	}
	/* The parent writes: the child keeps the old data. */
	poke(mm, a, 0xA0);
	CHECK_EQ(peek(child, a), 0x10);
	CHECK_EQ(*at(&hc, a), 0x10);
	CHECK_EQ(*at(&hp, a), 0xA0);		/* the parent's window shows its copy */
	/* The child writes through its window after a write fault: the parent keeps its data. */
	hc = range(child, a + PG, MM_ACCESS_WRITE);
	CHECK(hc.prot & PROT_WRITE);
	*at(&hc, a + PG) = 0xC1;
	CHECK_EQ(peek(child, a + PG), 0xC1);
	CHECK_EQ(peek(mm, a + PG), 0x11);
	hp = range(mm, a + 2 * PG, MM_ACCESS_WRITE);
	*at(&hp, a + 2 * PG) = 0xA2;
	CHECK_EQ(peek(child, a + 2 * PG), 0x12);
	/* Pages nobody touched stay separate too. */
	hp = range(mm, a + 9 * PG, MM_ACCESS_WRITE);
	*at(&hp, a + 9 * PG) = 0xA9;
	CHECK_EQ(peek(child, a + 9 * PG), 0);
	CHECK_EQ(mm_free(child), 0);
	CHECK_EQ(peek(mm, a + PG), 0x11);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

static void t_pins_outlive_munmap_and_dontneed(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm();
	uint64_t a = map(mm, 0, 8, 0), fa = 0;
	struct mm_host_range hr = range(mm, a, MM_ACCESS_WRITE);
	struct mm_pin pins[2];
	volatile uint8_t *p0, *p1;

	poke(mm, a + PG, 0x41);
	poke(mm, a + 2 * PG, 0x42);
	CHECK_EQ(mm_pin_pages(mm, a + PG, 2, MM_ACCESS_WRITE, 0, pins, &fa), 0);
	p0 = (volatile uint8_t *)(uintptr_t)pins[0].host;
	p1 = (volatile uint8_t *)(uintptr_t)pins[1].host;
	/* DONTNEED: the guest and the window read zero, the pin keeps its data. */
	CHECK_EQ(mm_madvise(mm, a + PG, PG, MADV_DONTNEED), 0);
	CHECK_EQ(*p0, 0x41);
	CHECK_EQ(peek(mm, a + PG), 0);
	CHECK_EQ(*at(&hr, a + PG), 0);
	/* A page written only through the window is zeroed too. */
	*at(&hr, a + 5 * PG) = 0x55;
	CHECK_EQ(mm_madvise(mm, a + 5 * PG, PG, MADV_DONTNEED), 0);
	CHECK_EQ(*at(&hr, a + 5 * PG), 0);
	CHECK_EQ(peek(mm, a + 5 * PG), 0);
	/* munmap: the pin still reads its data, and its memory is not reused. */
	CHECK_EQ(mm_munmap(mm, a, 8 * PG), 0);
	CHECK_EQ(*p1, 0x42);
	{
		uint64_t b = map(mm, 0, 8, 0);
		struct mm_host_range h2 = range(mm, b + 2 * PG, MM_ACCESS_WRITE);

		for (uint64_t i = 0; i < 8; i++)
			*at(&h2, b + i * PG) = 0x99;
		CHECK_EQ(*p1, 0x42);
		CHECK_EQ(*p0, 0x41);
	}
	CHECK_EQ(mm_unpin_pins(pins, 2), 2u);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

static void t_split_merge_keep_data_and_host(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm();
	uint64_t a = map(mm, 0, 16, 0);
	struct mm_host_range hr = range(mm, a, MM_ACCESS_WRITE), h2;

	for (uint64_t i = 0; i < 16; i++)
		*at(&hr, a + i * PG) = (uint8_t)(0x20 + i);
	/* mprotect splits: each part keeps its host addresses and data. */
	CHECK_EQ(mm_mprotect(mm, a + 4 * PG, 4 * PG, PROT_READ), 0);
	CHECK_EQ(mm_map_count(mm), 3);
	h2 = range(mm, a + 5 * PG, MM_ACCESS_READ);
	CHECK_EQ(h2.start, a + 4 * PG);
	CHECK_EQ(h2.end, a + 8 * PG);
	CHECK_EQ(h2.prot, (uint32_t)PROT_READ);
	CHECK_EQ(h2.host, hr.host + 4 * PG);
	CHECK_EQ(range(mm, a, MM_ACCESS_READ).end, a + 4 * PG);
	/* Merged back: one range again, same host, once the page faulted read-only while
	 * the part was read-only is written (its PTE stays read-only until then, as Linux's). */
	CHECK_EQ(mm_mprotect(mm, a + 4 * PG, 4 * PG, RW), 0);
	CHECK_EQ(mm_map_count(mm), 1);
	CHECK_EQ(range(mm, a + 9 * PG, MM_ACCESS_WRITE).start, a + 6 * PG);
	poke(mm, a + 5 * PG, 0x25);
	h2 = range(mm, a + 9 * PG, MM_ACCESS_WRITE);
	CHECK_EQ(h2.start, a);
	CHECK_EQ(h2.end, a + 16 * PG);
	CHECK_EQ(h2.host, hr.host);
	for (uint64_t i = 0; i < 16; i++)
		CHECK_EQ(peek(mm, a + i * PG), 0x20 + i);
	/* A hole punched and mapped again: zero there, the rest kept. */
	CHECK_EQ(mm_munmap(mm, a + 7 * PG, PG), 0);
	CHECK_EQ(map(mm, a + 7 * PG, 1, MAP_FIXED), a + 7 * PG);
	CHECK_EQ(mm_map_count(mm), 1);
	CHECK_EQ(peek(mm, a + 7 * PG), 0);
	for (uint64_t i = 0; i < 16; i++)
		if (i != 7)
			CHECK_EQ(peek(mm, a + i * PG), 0x20 + i);
	/* The new page's window sits in the hole, so the VMA is one range again. */
	h2 = range(mm, a, MM_ACCESS_WRITE);
	CHECK_EQ(h2.end, a + 16 * PG);
	/* Growing by an adjacent mapping below: data kept, new pages zero. */
	CHECK_EQ(map(mm, a - 4 * PG, 4, MAP_FIXED), a - 4 * PG);
	CHECK_EQ(mm_map_count(mm), 1);
	CHECK_EQ(peek(mm, a - PG), 0);
	CHECK_EQ(peek(mm, a), 0x20);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

static void t_mremap_moves_and_grows(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm();
	uint64_t a = map(mm, 0, 8, 0), b;
	struct mm_host_range hr = range(mm, a, MM_ACCESS_WRITE), h2;
	int64_t r;

	for (uint64_t i = 0; i < 8; i++)
		*at(&hr, a + i * PG) = (uint8_t)(0x30 + i);
	/* Touch half of them through the mm, so both kinds of page move. */
	for (uint64_t i = 0; i < 8; i += 2)
		CHECK_EQ(peek(mm, a + i * PG), 0x30 + i);
	b = a + (1ull << 30);
	r = mm_mremap(mm, a, 8 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, b);
	CHECK_EQ(r, (int64_t)b);
	h2 = range(mm, b + 3 * PG, MM_ACCESS_READ);
	CHECK_EQ(h2.start, b);
	CHECK_EQ(h2.end, b + 8 * PG);
	CHECK_EQ(h2.host, hr.host);		/* the window stays: only the guest address moved */
	for (uint64_t i = 0; i < 8; i++)
		CHECK_EQ(peek(mm, b + i * PG), 0x30 + i);
	/* Grown (moved if it must): old data kept, the new part zero. */
	r = mm_mremap(mm, b, 8 * PG, 24 * PG, MREMAP_MAYMOVE, 0);
	CHECK(r > 0);
	for (uint64_t i = 0; i < 8; i++)
		CHECK_EQ(peek(mm, (uint64_t)r + i * PG), 0x30 + i);
	CHECK_EQ(peek(mm, (uint64_t)r + 20 * PG), 0);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

static void t_brk_and_stack_growth(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm();
	int64_t brk0 = mm_get_brk(mm);
	uint64_t s;

	CHECK_EQ(mm_brk(mm, (uint64_t)brk0 + 4 * PG), brk0 + (int64_t)(4 * PG));
	poke(mm, (uint64_t)brk0 + PG, 0x61);
	CHECK_EQ(mm_brk(mm, (uint64_t)brk0 + 16 * PG), brk0 + (int64_t)(16 * PG));
	poke(mm, (uint64_t)brk0 + 12 * PG, 0x62);
	CHECK_EQ(peek(mm, (uint64_t)brk0 + PG), 0x61);
	CHECK_EQ(peek(mm, (uint64_t)brk0 + 12 * PG), 0x62);
	s = map(mm, 0, 4, MAP_GROWSDOWN);
	poke(mm, s, 0x71);
	poke(mm, s - PG, 0x72);			/* grows the stack */
	CHECK_EQ(peek(mm, s), 0x71);
	CHECK_EQ(peek(mm, s - PG), 0x72);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

/*
 * Threads at once on one host-backed mm: writers fault and store their own
 * bytes, one thread DONTNEEDs, one forks and frees children, one asks for
 * host ranges.  Every byte read is zero or its writer's own (never another
 * thread's, never stale garbage), and every frame comes back.
 */
#define RACE_PAGES 32
#define RACE_ROUNDS 300

struct race {
	struct mm_struct *mm;
	uint64_t base;
	int id;
	atomic_int bad;
};

static void *race_writer(void *arg)
{
	struct race *r = arg;

	for (int k = 0; k < RACE_ROUNDS; k++) {
		/* Thread id's pages are the odd or even ones. */
		uint64_t a = r->base + (uint64_t)(2 * (k % (RACE_PAGES / 2)) + r->id) * PG;
		uint8_t b = (uint8_t)(0x40 + r->id), got = 0;

		if (mm_access(r->mm, a + 8, &b, 1, 1, NULL) ||
		    mm_access(r->mm, a + 8, &got, 1, 0, NULL) || (got != 0 && got != b))
			atomic_fetch_add(&r->bad, 1);
	}
	return NULL;
}

static void *race_dontneed(void *arg)
{
	struct race *r = arg;

	for (int k = 0; k < RACE_ROUNDS; k++)
		if (mm_madvise(r->mm, r->base + (uint64_t)(k % (RACE_PAGES - 1)) * PG, 2 * PG,
			       MADV_DONTNEED))
			atomic_fetch_add(&r->bad, 1);
	return NULL;
}

static void *race_fork(void *arg)
{
	struct race *r = arg;

	for (int k = 0; k < RACE_ROUNDS / 10; k++) {
		int err = 0;
		struct mm_struct *c = mm_fork(r->mm, &err);
		uint8_t got = 0xEE;

		if (!c) {
			atomic_fetch_add(&r->bad, 1);
			continue;
		}
		/* The child's bytes are some writer's, or zero. */
		if (mm_access(c, r->base + (uint64_t)(k % RACE_PAGES) * PG + 8, &got, 1, 0, NULL) ||
		    (got != 0 && got != 0x40 && got != 0x41))
			atomic_fetch_add(&r->bad, 1);
		if (mm_free(c))
			atomic_fetch_add(&r->bad, 1);
	}
	return NULL;
}

static void *race_ranges(void *arg)
{
	struct race *r = arg;

	for (int k = 0; k < RACE_ROUNDS; k++) {
		struct mm_host_range hr;
		uint64_t a = r->base + (uint64_t)(k % RACE_PAGES) * PG;

		if (mm_host_range(r->mm, a, MM_ACCESS_READ, 0, &hr) || a < hr.start || a >= hr.end)
			atomic_fetch_add(&r->bad, 1);
	}
	return NULL;
}

static void t_threads_fault_dontneed_fork(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm();
	struct race r[2] = { { .mm = mm, .id = 0 }, { .mm = mm, .id = 1 } };
	pthread_t th[5];

	r[0].base = r[1].base = map(mm, 0, RACE_PAGES, 0);
	tu_create(&th[0], race_writer, &r[0]);
	tu_create(&th[1], race_writer, &r[1]);
	tu_create(&th[2], race_dontneed, &r[0]);
	tu_create(&th[3], race_fork, &r[1]);
	tu_create(&th[4], race_ranges, &r[0]);
	for (int i = 0; i < 5; i++)
		JOIN(th[i], "race thread");
	CHECK_EQ(atomic_load(&r[0].bad) + atomic_load(&r[1].bad), 0);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

/* A fork of @mm that must succeed. */
static struct mm_struct *fork_ok(struct mm_struct *mm)
{
	int err = 1;
	struct mm_struct *child = mm_fork(mm, &err);

	CHECK_EQ(err, 0);
	if (!child)
		exit(1);
	return child;
}

/*
 * madvise's fork advice on a host-backed mm: MADV_DONTFORK leaves the range
 * out of the child; MADV_WIPEONFORK gives the child the VMA with fresh
 * windows reading zero (a page written only through the parent's window
 * too), and leaves the parent's pages writable, its window as it was.
 */
static void t_madvise_dontfork_wipeonfork(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm(), *child;
	uint64_t a = map(mm, 0, 16, 0);
	struct mm_host_range hp = range(mm, a, MM_ACCESS_WRITE), hc;
	uint8_t b;

	for (int i = 0; i < 8; i++)
		poke(mm, a + (uint64_t)i * PG, (uint8_t)(0x10 + i));
	*at(&hp, a + 8 * PG) = 0x18;		/* written through the window, never faulted */
	CHECK_EQ(mm_madvise(mm, a + 2 * PG, 2 * PG, MADV_DONTFORK), 0);
	CHECK_EQ(mm_madvise(mm, a + 4 * PG, 6 * PG, MADV_WIPEONFORK), 0);
	CHECK_EQ(mm_map_count(mm), 4);
	child = fork_ok(mm);
	CHECK_EQ(mm_map_count(child), 3);
	CHECK_EQ(mm_access(child, a + 2 * PG, &b, 1, 0, NULL), SEGV_MAPERR);
	CHECK_EQ(peek(child, a + PG), 0x11);
	CHECK_EQ(peek(child, a + 10 * PG), 0);
	/* Wiped: zero through a fault and through the child's own window. */
	for (uint64_t i = 4; i < 10; i++)
		CHECK_EQ(peek(child, a + i * PG), 0);
	hc = range(child, a + 8 * PG, MM_ACCESS_WRITE);
	CHECK(hc.host != hp.host + 8 * PG);
	CHECK_EQ(*at(&hc, a + 8 * PG), 0);
	*at(&hc, a + 8 * PG) = 0xC8;
	poke(child, a + 5 * PG, 0xC5);
	/* The parent: its data, its window, writable (nothing was made copy-on-write). */
	hp = range(mm, a + 5 * PG, MM_ACCESS_READ);
	CHECK_EQ(hp.prot, (uint32_t)RW);
	CHECK_EQ(*at(&hp, a + 5 * PG), 0x15);
	CHECK_EQ(*at(&hp, a + 8 * PG), 0x18);
	CHECK_EQ(peek(mm, a + 8 * PG), 0x18);
	CHECK_EQ(range(mm, a + 2 * PG, MM_ACCESS_READ).prot, (uint32_t)RW);	/* not copied */
	CHECK_EQ(range(mm, a, MM_ACCESS_READ).prot, (uint32_t)PROT_READ);	/* copied: COW */
	CHECK_EQ(mm_free(child), 0);
	/* Undone over the whole VMA: one VMA again, copied whole. */
	CHECK_EQ(mm_madvise(mm, a, 16 * PG, MADV_DOFORK), 0);
	CHECK_EQ(mm_madvise(mm, a, 16 * PG, MADV_KEEPONFORK), 0);
	CHECK_EQ(mm_map_count(mm), 1);
	child = fork_ok(mm);
	CHECK_EQ(peek(child, a + 3 * PG), 0x13);
	CHECK_EQ(peek(child, a + 8 * PG), 0x18);
	CHECK_EQ(mm_free(child), 0);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

/*
 * MADV_POPULATE_READ / WRITE on a host-backed mm: every page gets its PTE
 * (the window's frame); a write populate after fork breaks copy-on-write,
 * the window showing the parent's copy and the child keeping the old data.
 */
static void t_madvise_populate_windows(void)
{
	size_t base = mm_host_frames();
	struct mm_struct *mm = new_mm(), *child;
	uint64_t a = map(mm, 0, 8, 0);
	struct mm_host_range hp;

	CHECK_EQ(mm_madvise(mm, a, 8 * PG, MADV_POPULATE_READ), 0);
	CHECK_EQ(mm_nr_pages(mm), 8u);
	hp = range(mm, a, MM_ACCESS_WRITE);
	CHECK_EQ(hp.end, a + 8 * PG);			/* one window still */
	*at(&hp, a + 3 * PG) = 0x33;
	child = fork_ok(mm);
	CHECK_EQ(range(mm, a + 3 * PG, MM_ACCESS_READ).prot, (uint32_t)PROT_READ);
	CHECK_EQ(mm_madvise(mm, a + 3 * PG, PG, MADV_POPULATE_WRITE), 0);
	hp = range(mm, a + 3 * PG, MM_ACCESS_READ);
	CHECK_EQ(hp.prot, (uint32_t)RW);		/* the break is done */
	*at(&hp, a + 3 * PG) = 0x44;
	CHECK_EQ(peek(child, a + 3 * PG), 0x33);
	CHECK_EQ(peek(mm, a + 3 * PG), 0x44);
	CHECK_EQ(mm_madvise(child, a, 9 * PG, MADV_POPULATE_WRITE), -ENOMEM);	/* a hole after */
	CHECK_EQ(mm_nr_pages(child), 8u);
	CHECK_EQ(mm_free(child), 0);
	CHECK_EQ(mm_free(mm), 0);
	CHECK_EQ(mm_host_frames(), base);
}

static const struct tu_test tests[] = {
	TU_TEST(t_whole_vma_demand_zero),
	TU_TEST(t_fork_cow_both_ways),
	TU_TEST(t_pins_outlive_munmap_and_dontneed),
	TU_TEST(t_split_merge_keep_data_and_host),
	TU_TEST(t_mremap_moves_and_grows),
	TU_TEST(t_brk_and_stack_growth),
	TU_TEST(t_threads_fault_dontneed_fork),
	TU_TEST(t_madvise_dontfork_wipeonfork),
	TU_TEST(t_madvise_populate_windows),
};

int main(int argc, char **argv)
{
	return tu_run("test_host_backing", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc,
		      argv, NULL);
}
