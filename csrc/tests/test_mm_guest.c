/* SPDX-License-Identifier: MIT */
/*
 * test_mm_guest.c - the guest-memory API for embedders (mm_guest.h), the
 * mmap flags Linux implements (MAP_POPULATE, MAP_GROWSDOWN, MAP_32BIT, the
 * refused MAP_HUGETLB), mremap, and the recorder's operation tags, on every
 * lock design.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mm.h"
#include "mm_guest.h"
#include "mmap_lock.h"
#include "mmap_lock_trace.h"
#include "task.h"
#include "test_designs.h"
#include "test_util.h"

#define PG ((uint64_t)MM_PAGE_SIZE)
#define RW (PROT_READ | PROT_WRITE)
#define ANON_PRIV (MAP_ANONYMOUS | MAP_PRIVATE)
#define ANON_SHARED (MAP_ANONYMOUS | MAP_SHARED)
#define BASE 0x100000000ull

static struct mm_struct *new_mm(void)
{
	struct mm_struct *mm = tu_mm_alloc(0);

	CHECK(mm != NULL);
	return mm;
}

static void free_mm(struct mm_struct *mm)
{
	CHECK_EQ(mm_free(mm), 0);
}

static struct mm_vma_info vma_at(struct mm_struct *mm, uint64_t addr)
{
	struct mm_vma_info v;

	memset(&v, 0, sizeof(v));
	CHECK_EQ(mm_find_vma(mm, addr, 1, 0, &v), 1);
	return v;
}

static void t_mmap_flags(void)
{
	struct mm_struct *mm = new_mm();
	size_t before = mm_nr_pages(mm);
	int64_t a;

	/* MAP_POPULATE faults every page in; MAP_NONBLOCK cancels it, as in Linux. */
	a = mm_mmap(mm, 0, 8 * PG, RW, ANON_PRIV | MAP_POPULATE);
	CHECK(a > 0);
	CHECK_EQ(mm_nr_pages(mm), before + 8);
	CHECK(mm_mmap(mm, 0, 4 * PG, RW, ANON_PRIV | MAP_POPULATE | MAP_NONBLOCK) > 0);
	CHECK_EQ(mm_nr_pages(mm), before + 8);
	/* PROT_NONE is not populated; a read-only one is (read faults). */
	CHECK(mm_mmap(mm, 0, 4 * PG, PROT_NONE, ANON_PRIV | MAP_POPULATE) > 0);
	CHECK_EQ(mm_nr_pages(mm), before + 8);
	CHECK(mm_mmap(mm, 0, 2 * PG, PROT_READ, ANON_PRIV | MAP_POPULATE) > 0);
	CHECK_EQ(mm_nr_pages(mm), before + 10);
	/* Accepted and nothing to do. */
	CHECK(mm_mmap(mm, 0, PG, RW, ANON_PRIV | MAP_NORESERVE | MAP_STACK) > 0);
	/* Refused as a kernel without huge pages refuses them. */
	CHECK_EQ(mm_mmap(mm, 0, PG, RW, ANON_PRIV | MAP_HUGETLB), -EINVAL);
	CHECK_EQ(mm_mmap(mm, 0, PG, RW, ANON_SHARED | MAP_GROWSDOWN), -EINVAL);
	/* MAP_32BIT: bottom-up from 1 GiB. */
	CHECK_EQ(mm_mmap(mm, 0, PG, RW, ANON_PRIV | 0x40), 0x40000000);
	CHECK_EQ(mm_mmap(mm, 0, PG, PROT_READ, ANON_PRIV | 0x40), 0x40000000 + PG);
	free_mm(mm);
}

static void t_growsdown(void)
{
	struct mm_struct *mm = new_mm();
	uint64_t top = 0x200000000000ull, fa = 0, low;
	uint8_t b = 7;

	CHECK_EQ(mm_mmap(mm, top, PG, RW, ANON_PRIV | MAP_GROWSDOWN | MAP_FIXED), (int64_t)top);
	CHECK_EQ(vma_at(mm, top).flags, VM_GROWSDOWN);
	/* A fault three pages below grows it; so does a copy_to_user. */
	CHECK_EQ(mm_fault(mm, top - 3 * PG, 1), 0);
	CHECK_EQ(vma_at(mm, top).start, top - 3 * PG);
	CHECK_EQ(mm_access(mm, top - 5 * PG + 8, &b, 1, 1, &fa), 0);
	CHECK_EQ(vma_at(mm, top).start, top - 5 * PG);
	/* get_user_pages and pins do not grow it (Linux 6.5+). */
	CHECK_EQ(mm_get_user_pages(mm, top - 6 * PG, 1, 0, &(struct page *){ NULL }, &fa),
		 SEGV_MAPERR);
	/* The guard gap: an accessible mapping 200 pages below stops the growth. */
	CHECK(mm_mmap(mm, top - 205 * PG, PG, PROT_READ, ANON_PRIV | MAP_FIXED) > 0);
	CHECK_EQ(mm_fault(mm, top - 10 * PG, 0), SEGV_MAPERR);
	CHECK_EQ(vma_at(mm, top).start, top - 5 * PG);
	/* ... unless it is PROT_NONE. */
	CHECK_EQ(mm_mprotect(mm, top - 205 * PG, PG, PROT_NONE), 0);
	CHECK_EQ(mm_fault(mm, top - 10 * PG, 0), 0);
	/* mprotect(PROT_GROWSDOWN): down to the mapping's start, wherever the range begins. */
	low = vma_at(mm, top).start;
	CHECK_EQ(mm_mprotect(mm, top, PG, PROT_READ | PROT_GROWSDOWN), 0);
	CHECK_EQ(vma_at(mm, low).end, top + PG);
	CHECK_EQ(vma_at(mm, low).prot, PROT_READ);
	CHECK_EQ(mm_mprotect(mm, low - 3 * PG, 4 * PG, RW | PROT_GROWSDOWN), 0);
	CHECK_EQ(vma_at(mm, low).end, low + PG);
	CHECK_EQ(vma_at(mm, low).prot, RW);
	CHECK_EQ(mm_mprotect(mm, low - 3 * PG, PG, RW | PROT_GROWSDOWN), -ENOMEM);
	CHECK_EQ(mm_mprotect(mm, top - 205 * PG, PG, RW | PROT_GROWSDOWN), -EINVAL);
	CHECK_EQ(mm_mprotect(mm, top, PG, RW | PROT_GROWSUP), -EINVAL);
	CHECK_EQ(mm_mprotect(mm, top, 0, PROT_GROWSDOWN | PROT_GROWSUP), -EINVAL);
	CHECK_EQ(mm_mprotect(mm, low, top + PG - low, RW), 0);
	/* RLIMIT_STACK: 8 MiB at most. */
	CHECK_EQ(mm_munmap(mm, top - 205 * PG, PG), 0);
	CHECK_EQ(mm_fault(mm, top + PG - MM_STACK_LIMIT, 0), 0);
	CHECK_EQ(mm_fault(mm, top - MM_STACK_LIMIT, 0), SEGV_MAPERR);
	free_mm(mm);
}

static void t_access_types(void)
{
	struct mm_struct *mm = new_mm();
	uint64_t x = (uint64_t)mm_mmap(mm, 0, PG, PROT_READ | PROT_EXEC, ANON_PRIV);
	uint64_t d = (uint64_t)mm_mmap(mm, 0, PG, RW, ANON_PRIV);
	struct mm_pin pin;
	uint64_t fa = 0;

	CHECK_EQ(mm_guest_fault(mm, x, MM_ACCESS_EXEC, 0), 0);
	CHECK_EQ(mm_guest_fault(mm, x, MM_ACCESS_WRITE, 0), SEGV_ACCERR);
	CHECK_EQ(mm_guest_fault(mm, d, MM_ACCESS_EXEC, 0), SEGV_ACCERR);
	CHECK_EQ(mm_pin_pages(mm, d, 1, MM_ACCESS_EXEC, 0, &pin, &fa), SEGV_ACCERR);
	CHECK_EQ(fa, d);
	CHECK_EQ(mm_guest_fault(mm, d, 3, 0), -EINVAL);
	CHECK_EQ(mm_guest_fault(mm, d, -1, 0), -EINVAL);
	CHECK_EQ(mm_guest_fault(mm, d, 0, 0x80), -EINVAL);
	/* MM_GUEST_LOCKED without the lock. */
	CHECK_EQ(mm_guest_fault(mm, d, 0, MM_GUEST_LOCKED), -EPERM);
	free_mm(mm);
}

static void t_pins(void)
{
	struct mm_struct *mm = new_mm(), *child;
	uint64_t a = (uint64_t)mm_mmap(mm, 0, 4 * PG, RW, ANON_PRIV), fa = 0;
	struct mm_pin pins[4];
	struct mm_host_range hr;
	uint32_t v = 0x1234;
	int err;

	CHECK_EQ(mm_access(mm, a, &v, sizeof(v), 1, &fa), 0);
	CHECK_EQ(mm_pin_pages(mm, a, 4, MM_ACCESS_READ, 0, pins, &fa), 0);
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(pins[i].addr, a + (uint64_t)i * PG);
		CHECK_EQ(pins[i].prot, RW);		/* a page of ours alone: writable */
	}
	CHECK_EQ(*(uint32_t *)(uintptr_t)pins[0].host, 0x1234u);
	/* Partial unpin: the middle two. */
	CHECK_EQ(mm_unpin_pins(pins + 1, 2), 2u);
	CHECK(pins[1].page == NULL && pins[2].page == NULL && pins[0].page != NULL);
	CHECK_EQ(mm_unpin_pins(pins, 4), 2u);
	CHECK_EQ(mm_unpin_pins(pins, 4), 0u);
	/* After a fork the private pages are copy-on-write: a host range has no write. */
	child = mm_fork(mm, &err);
	CHECK(child != NULL);
	CHECK_EQ(mm_host_range(mm, a + 5, MM_ACCESS_READ, 0, &hr), 0);
	CHECK_EQ(hr.start, a);
	CHECK_EQ(hr.end, a + PG);
	CHECK_EQ(hr.prot, PROT_READ);
	/* A read pin unshares first (FOLL_PIN), so the pinned page is ours and writable. */
	CHECK_EQ(mm_pin_pages(mm, a, 1, MM_ACCESS_READ, 0, pins, &fa), 0);
	CHECK_EQ(pins[0].prot, RW);
	CHECK(pins[0].host != hr.host);
	mm_unpin_pins(pins, 1);
	/* A write range breaks copy-on-write: the child keeps its copy. */
	CHECK_EQ(mm_host_range(child, a, MM_ACCESS_WRITE, 0, &hr), 0);
	CHECK_EQ(hr.prot, RW);
	*(uint32_t *)(uintptr_t)hr.host = 99;
	CHECK_EQ(mm_access(mm, a, &v, sizeof(v), 0, &fa), 0);
	CHECK_EQ(v, 0x1234u);
	/* Errors: unaligned, unmapped (nothing stays pinned), past the top. */
	CHECK_EQ(mm_pin_pages(mm, a + 1, 1, 0, 0, pins, &fa), -EINVAL);
	CHECK_EQ(mm_pin_pages(mm, a, 5, 0, 0, pins, &fa), SEGV_MAPERR);
	CHECK_EQ(fa, a + 4 * PG);
	CHECK_EQ(mm_pin_pages(mm, MM_TASK_SIZE - PG, 2, 0, 0, pins, &fa), -EFAULT);
	free_mm(child);
	free_mm(mm);
}

static void t_find_vma_and_seq(void)
{
	struct mm_struct *mm = new_mm();
	struct mm_vma_info v;
	uint64_t s0 = mm_vma_seq(mm), a;

	a = (uint64_t)mm_mmap(mm, 0, 2 * PG, RW, ANON_PRIV);
	CHECK(mm_vma_seq(mm) > s0);
	s0 = mm_vma_seq(mm);
	v = vma_at(mm, a + PG);
	CHECK_EQ(v.start, a);
	CHECK_EQ(v.end, a + 2 * PG);
	CHECK_EQ(v.seq, s0);
	CHECK_EQ(mm_find_vma(mm, a - PG, 1, 0, &v), 0);		/* vma_lookup: none */
	CHECK_EQ(mm_find_vma(mm, a - PG, 0, 0, &v), 1);		/* find_vma: the next one */
	CHECK_EQ(v.start, a);
	CHECK_EQ(mm_find_vma(mm, a + 2 * PG, 0, 0, &v), 0);
	CHECK_EQ(mm_find_vma(mm, a, 2, 0, &v), -EINVAL);
	/* Faults do not change the layout; mprotect and brk do. */
	CHECK_EQ(mm_fault(mm, a, 1), 0);
	CHECK_EQ(mm_vma_seq(mm), s0);
	CHECK_EQ(mm_mprotect(mm, a, PG, PROT_READ), 0);
	CHECK(mm_vma_seq(mm) > s0);
	s0 = mm_vma_seq(mm);
	CHECK_EQ(mm_brk(mm, MM_START_BRK + 10), (int64_t)MM_START_BRK + 10);
	CHECK(mm_vma_seq(mm) > s0);
	free_mm(mm);
}

static void t_read_locked_series(void)
{
	struct mm_struct *mm = new_mm();
	uint64_t a = (uint64_t)mm_mmap(mm, 0, 2 * PG, RW, ANON_PRIV), fa = 0;
	struct mm_vma_info v;
	struct mm_pin pin;
	char buf[4] = "abc";

	CHECK_EQ(mm_read_lock(mm), 0);
	CHECK_EQ(mm_find_vma(mm, a, 1, MM_GUEST_LOCKED, &v), 1);
	CHECK_EQ(mm_guest_fault(mm, a, MM_ACCESS_WRITE, MM_GUEST_LOCKED), 0);
	CHECK_EQ(mm_guest_access(mm, a, buf, 4, 1, MM_GUEST_LOCKED, &fa), 0);
	CHECK_EQ(mm_pin_pages(mm, a, 1, MM_ACCESS_READ, MM_GUEST_LOCKED, &pin, &fa), 0);
	/* A write operation now would wait for ourselves: refused. */
	CHECK_EQ(mm_munmap(mm, a, PG), -EDEADLK);
	CHECK_EQ(mm_read_unlock(mm), 0);
	CHECK_EQ(memcmp((void *)(uintptr_t)pin.host, "abc", 4), 0);
	mm_unpin_pins(&pin, 1);
	CHECK_EQ(mm_munmap(mm, a, PG), 0);
	free_mm(mm);
}

static void t_killable(void)
{
	struct mm_struct *mm = new_mm();
	uint64_t a = (uint64_t)mm_mmap(mm, 0, PG, RW, ANON_PRIV), fa = 0;
	struct mm_pin pin;
	char c = 0;

	CHECK_EQ(task_set_current(4242), 0);
	CHECK_EQ(task_kill(4242), 0);
	CHECK_EQ(mm_guest_fault(mm, a, 0, MM_GUEST_KILLABLE), -EINTR);
	CHECK_EQ(mm_pin_pages(mm, a, 1, 0, MM_GUEST_KILLABLE, &pin, &fa), -EINTR);
	CHECK_EQ(mm_guest_access(mm, a, &c, 1, 0, MM_GUEST_KILLABLE, &fa), -EINTR);
	CHECK_EQ(mm_guest_fault(mm, a, 0, 0), 0);	/* not killable: the lock is free */
	CHECK_EQ(task_revive(4242), 0);
	CHECK_EQ(mm_guest_fault(mm, a, 0, MM_GUEST_KILLABLE), 0);
	CHECK_EQ(task_set_current(0), 0);
	free_mm(mm);
}

static void t_mremap(void)
{
	struct mm_struct *mm = new_mm();
	uint64_t a, b, fa = 0, w;
	struct mm_pin pin;

	a = (uint64_t)mm_mmap(mm, BASE, 4 * PG, RW, ANON_PRIV | MAP_FIXED);
	w = 0xabcd;
	CHECK_EQ(mm_access(mm, a + PG, &w, sizeof(w), 1, &fa), 0);
	/* Errors in Linux's order. */
	CHECK_EQ(mm_mremap(mm, a, PG, PG, 8, 0), -EINVAL);
	CHECK_EQ(mm_mremap(mm, a, PG, 2 * PG, MREMAP_FIXED, BASE + 64 * PG), -EINVAL);
	CHECK_EQ(mm_mremap(mm, a, PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0), -EINVAL);
	CHECK_EQ(mm_mremap(mm, a + 1, PG, PG, 0, 0), -EINVAL);
	CHECK_EQ(mm_mremap(mm, a, PG, 0, 0, 0), -EINVAL);
	CHECK_EQ(mm_mremap(mm, a - PG, PG, 2 * PG, 0, 0), -EFAULT);
	CHECK_EQ(mm_mremap(mm, a, 8 * PG, 9 * PG, 0, 0), -EFAULT);
	CHECK_EQ(mm_mremap(mm, a, 0, PG, MREMAP_MAYMOVE, 0), -EINVAL);	/* private duplicate */
	CHECK_EQ(mm_mremap(mm, a, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, a + PG), -EINVAL);
	CHECK_EQ(mm_mremap(mm, a, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, 0x1000), -EPERM);
	/* Grow in place. */
	CHECK_EQ(mm_mremap(mm, a, 4 * PG, 6 * PG, 0, 0), (int64_t)a);
	CHECK_EQ(vma_at(mm, a).end, a + 6 * PG);
	/* Shrink. */
	CHECK_EQ(mm_mremap(mm, a, 6 * PG, 3 * PG, 0, 0), (int64_t)a);
	CHECK_EQ(vma_at(mm, a).end, a + 3 * PG);
	/* Blocked above: ENOMEM without MAYMOVE, a move with it (contents and pins travel). */
	CHECK(mm_mmap(mm, a + 3 * PG, PG, PROT_READ, ANON_PRIV | MAP_FIXED) > 0);
	CHECK_EQ(mm_mremap(mm, a, 3 * PG, 5 * PG, 0, 0), -ENOMEM);
	CHECK_EQ(mm_pin_pages(mm, a + PG, 1, 0, 0, &pin, &fa), 0);
	b = (uint64_t)mm_mremap(mm, a, 3 * PG, 5 * PG, MREMAP_MAYMOVE, 0);
	CHECK(b != a && (int64_t)b > 0);
	CHECK_EQ(mm_fault(mm, a, 0), SEGV_MAPERR);
	w = 0;
	CHECK_EQ(mm_access(mm, b + PG, &w, sizeof(w), 0, &fa), 0);
	CHECK_EQ(w, 0xabcd);
	w = 0x5555;
	CHECK_EQ(mm_access(mm, b + PG, &w, sizeof(w), 1, &fa), 0);
	CHECK_EQ(*(uint64_t *)(uintptr_t)pin.host, 0x5555u);	/* the pinned page moved */
	mm_unpin_pins(&pin, 1);
	/* MREMAP_FIXED replaces what is there; DONTUNMAP leaves the old range empty. */
	CHECK_EQ(mm_mremap(mm, b, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, a + 3 * PG),
		 (int64_t)(a + 3 * PG));
	CHECK_EQ(vma_at(mm, a + 3 * PG).prot, RW);
	CHECK_EQ(mm_mremap(mm, b + PG, PG, PG, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0) > 0, 1);
	w = 1;
	CHECK_EQ(mm_access(mm, b + PG, &w, sizeof(w), 0, &fa), 0);
	CHECK_EQ(w, 0);		/* still mapped, and empty */
	free_mm(mm);
}

static void t_mremap_shared(void)
{
	struct mm_struct *mm = new_mm();
	uint64_t a = (uint64_t)mm_mmap(mm, 0, 2 * PG, RW, ANON_SHARED), b, fa = 0, w = 77;

	CHECK_EQ(mm_access(mm, a, &w, sizeof(w), 1, &fa), 0);
	/* An old size of zero maps the same shared pages again. */
	b = (uint64_t)mm_mremap(mm, a, 0, 2 * PG, MREMAP_MAYMOVE, 0);
	CHECK((int64_t)b > 0 && b != a);
	w = 0;
	CHECK_EQ(mm_access(mm, b, &w, sizeof(w), 0, &fa), 0);
	CHECK_EQ(w, 77u);
	/* Grown past its object: the object grows (Linux would SIGBUS there). */
	b = (uint64_t)mm_mremap(mm, a, 2 * PG, 8 * PG, MREMAP_MAYMOVE, 0);
	CHECK((int64_t)b > 0);
	CHECK_EQ(mm_fault(mm, b + 7 * PG, 1), 0);
	free_mm(mm);
}

static void t_recorder_tags_operations(void)
{
	struct mm_struct *mm = new_mm();
	struct mmap_lock_recorder *rec;
	const struct mmap_lock_event *ev;
	uint64_t a;
	bool munmap_seen = false, mmap_seen = false;

	CHECK_EQ(mmap_lock_record_start(mm, 64), 0);
	a = (uint64_t)mm_mmap(mm, 0, PG, RW, ANON_PRIV);
	CHECK_EQ(mm_munmap(mm, a, PG), 0);
	rec = mmap_lock_record_stop(mm);
	CHECK(rec != NULL);
	ev = mmap_lock_recorder_events(rec);
	for (size_t i = 0; i < mmap_lock_recorder_count(rec); i++) {
		mmap_seen |= ev[i].caller == MM_OP_MMAP;
		munmap_seen |= ev[i].caller == MM_OP_MUNMAP;
	}
	CHECK(mmap_seen && munmap_seen);
	mmap_lock_recorder_free(rec);
	/* The tag is the caller's again once the operation has returned. */
	CHECK_EQ(mmap_lock_set_caller(0), 0);
	free_mm(mm);
}

/*
 * mm_access() copies each aligned 8-byte word of guest memory whole: a
 * reader racing a writer of whole pages of one pattern or the other sees,
 * in every word, one pattern or the other, never a mix (a bytewise copy,
 * as glibc's memcpy does on some targets, tore them).  Copies start at an
 * odd offset too, so the unaligned edges go bytewise and the middle whole.
 */
#define TORN_BUDGET_NS 150000000ull	/* per design: a time budget (qemu, TSan) */

struct torn_writer {
	struct mm_struct *mm;
	uint64_t addr;
	_Atomic int stop;
};

static void *torn_writer_main(void *arg)
{
	struct torn_writer *w = arg;
	static uint8_t page[2][MM_PAGE_SIZE];
	uint64_t fa;

	memset(page[0], 0x00, sizeof(page[0]));
	memset(page[1], 0xff, sizeof(page[1]));
	for (unsigned int i = 0; !atomic_load(&w->stop); i++) {
		size_t n = i & 2 ? PG : (size_t)8 << (i % 3);	/* a page, or one, two, four words */

		CHECK_EQ(mm_access(w->mm, w->addr, page[i & 1], n, 1, &fa), 0);
	}
	return NULL;
}

static void t_aligned_words_are_copied_whole(void)
{
	struct mm_struct *mm = new_mm();
	struct torn_writer w = { .mm = mm, .addr = BASE };
	uint64_t buf[MM_PAGE_SIZE / 8 + 1], fa, torn = 0;
	pthread_t th;

	CHECK_EQ(mm_mmap(mm, BASE, PG, RW, ANON_PRIV | MAP_FIXED), (int64_t)BASE);
	tu_create(&th, torn_writer_main, &w);
	for (uint64_t r = 0, until = tu_now_ns() + TORN_BUDGET_NS; tu_now_ns() < until; r++) {
		size_t skew = r & 1 ? 3 : 0;	/* odd: bytewise edges around whole words */
		size_t n = r & 2 ? PG - skew : (size_t)8 << (r % 3), words = (n - skew) / 8;

		CHECK_EQ(mm_access(mm, BASE + skew, (uint8_t *)buf + skew, n, 0, &fa), 0);
		for (size_t i = skew ? 1 : 0; i < words; i++)
			torn += buf[i] != 0 && buf[i] != ~0ull;
	}
	atomic_store(&w.stop, 1);
	JOIN(th, "torn_writer");
	CHECK_EQ(torn, 0);
	free_mm(mm);
}

static const struct tu_test tests[] = {
	TU_TEST(t_mmap_flags),
	TU_TEST(t_growsdown),
	TU_TEST(t_access_types),
	TU_TEST(t_pins),
	TU_TEST(t_find_vma_and_seq),
	TU_TEST(t_read_locked_series),
	TU_TEST(t_killable),
	TU_TEST(t_mremap),
	TU_TEST(t_mremap_shared),
	TU_TEST(t_recorder_tags_operations),
	TU_TEST(t_aligned_words_are_copied_whole),
};

int main(int argc, char **argv)
{
	return tu_run_designs("test_mm_guest", tests, (int)(sizeof(tests) / sizeof(tests[0])),
			      argc, argv, NULL);
}
