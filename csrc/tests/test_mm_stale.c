/* SPDX-License-Identifier: MIT */
/*
 * test_mm_stale.c - no stale PTE and no stale VMA, on every lock design.
 *
 * Readers and writers fault and access random pages of a set of areas while
 * mutators replace the areas (munmap + mmap MAP_FIXED), change their
 * protection and drop their pages (MADV_DONTNEED).  Each mapping gets an id
 * no other mapping ever has, and its pages carry that id, so a read can tell
 * whose data it saw.  What must hold:
 *
 *   - a read sees 0 or the id of a mapping of that area that existed during
 *     the read: never an id older than the mapping published before the
 *     read began, never another area's (a stale VMA or PTE would show one);
 *   - a new mapping is all zero when mmap returns (a PTE that outlived its
 *     munmap, installed by a fault on a detached VMA, would show through);
 *   - a write that began after mprotect(PROT_READ) returned, and ended
 *     before the protection changed again, failed with SEGV_ACCERR;
 *   - no sanitizer report (the ThreadSanitizer build runs this on every
 *     design: the per-VMA read side and bravo's fast path are lockless).
 *
 * Counts of every outcome are printed, locktorture style.
 */
#include <sched.h>

#include "mm.h"
#include "mmap_lock.h"
#include "mmap_lock_stats.h"
#include "test_designs.h"
#include "test_util.h"

#define PG ((uint64_t)MM_PAGE_SIZE)
#define RW (PROT_READ | PROT_WRITE)
#define BASE 0x200000000ull
#define AREAS 8			/* areas of AREA_PAGES, one page apart (never merged) */
#define AREA_PAGES 4
#define MUTATORS 2		/* each owns every MUTATORS-th area */
#define ACCESSORS 3
#define BUDGET_MS 1500		/* per design: a time budget, not a step count (TSan) */
#define MIN_MUTATIONS 20	/* a few hundred unloaded under TSan, thousands in opt */

/* A page's words: 0 holds the mapping's tag, 1 stays 0, 2 is what accessors write. */
#define TAG(area, id) (((uint64_t)(area) << 48) | (uint64_t)(id))
#define TAG_AREA(v) ((unsigned int)((v) >> 48))
#define TAG_ID(v) ((v) & ((1ull << 48) - 1))
#define JUNK(area) (0xabcd000000000000ull ^ ((uint64_t)(area) << 32))

struct area {
	_Atomic uint64_t cur;		/* id of the mapping fully set up, published after */
	_Atomic uint64_t pending;	/* id of the newest mapping, published before mmap */
	_Atomic uint64_t ro_epoch;	/* odd while mprotect(PROT_READ) is in force */
};

static struct {
	struct mm_struct *mm;
	struct area area[AREAS];
	_Atomic uint64_t next_id;
	_Atomic int stop;
	_Atomic uint64_t reads_ok, reads_zero, reads_segv, writes_ok, writes_accerr, writes_segv;
	_Atomic uint64_t remaps, protects, dontneeds, bad;
} st;

static uint64_t area_addr(unsigned int a)
{
	return BASE + (uint64_t)a * (AREA_PAGES + 1) * PG;
}

static void bad(const char *fmt, unsigned long long x, unsigned long long y,
		unsigned long long z)
{
	atomic_fetch_add(&st.bad, 1);
	tu_fail(__FILE__, __LINE__, fmt, x, y, z);
}

static void count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* Write the mapping's tag into each page (the mutator owns the area). */
static void tag_area(unsigned int a, uint64_t id)
{
	for (unsigned int p = 0; p < AREA_PAGES; p++) {
		uint64_t t = TAG(a, id), fa;

		CHECK_EQ(mm_access(st.mm, area_addr(a) + p * PG, &t, 8, 1, &fa), 0);
	}
}

static void remap(unsigned int a)
{
	uint64_t id = atomic_fetch_add(&st.next_id, 1), addr = area_addr(a);

	atomic_store_explicit(&st.area[a].pending, id, memory_order_release);
	if (atomic_load(&st.area[a].ro_epoch) & 1)
		atomic_fetch_add(&st.area[a].ro_epoch, 1);	/* the new mapping is RW */
	CHECK_EQ(mm_munmap(st.mm, addr, AREA_PAGES * PG), 0);
	CHECK_EQ(mm_mmap(st.mm, addr, AREA_PAGES * PG, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED),
		 (int64_t)addr);
	/* A new mapping is zero-filled: a PTE that survived the munmap would show here. */
	for (unsigned int p = 0; p < AREA_PAGES; p++) {
		uint64_t w[2] = { 1, 1 }, fa;

		CHECK_EQ(mm_access(st.mm, addr + p * PG, w, sizeof(w), 0, &fa), 0);
		if (w[0] || w[1])
			bad("new mapping of area %llu shows old data %#llx / %#llx", a, w[0], w[1]);
	}
	tag_area(a, id);
	atomic_store_explicit(&st.area[a].cur, id, memory_order_release);
	count(&st.remaps);
}

static void toggle_protection(unsigned int a)
{
	_Atomic uint64_t *e = &st.area[a].ro_epoch;

	if (atomic_load(e) & 1) {
		atomic_fetch_add(e, 1);		/* leaving read-only: announced first */
		CHECK_EQ(mm_mprotect(st.mm, area_addr(a), AREA_PAGES * PG, RW), 0);
	} else {
		CHECK_EQ(mm_mprotect(st.mm, area_addr(a), AREA_PAGES * PG, PROT_READ), 0);
		atomic_fetch_add(e, 1);		/* read-only in force from here */
	}
	count(&st.protects);
}

static void drop_pages(unsigned int a)
{
	CHECK_EQ(mm_madvise(st.mm, area_addr(a), AREA_PAGES * PG, MADV_DONTNEED), 0);
	if (!(atomic_load(&st.area[a].ro_epoch) & 1))
		tag_area(a, atomic_load(&st.area[a].cur));
	count(&st.dontneeds);
}

struct worker {
	pthread_t th;
	int id;
	uint64_t seed;
	uint64_t steps;
};

static void *mutator_main(void *arg)
{
	struct worker *w = arg;

	while (!atomic_load_explicit(&st.stop, memory_order_relaxed)) {
		uint64_t x = tu_rand(&w->seed);
		unsigned int a = (unsigned int)(x % (AREAS / MUTATORS)) * MUTATORS + (unsigned int)w->id;

		switch ((x >> 16) % 4) {
		case 0:
		case 1:
			remap(a);
			break;
		case 2:
			toggle_protection(a);
			break;
		case 3:
			drop_pages(a);
			break;
		}
		w->steps++;
		sched_yield();
	}
	return NULL;
}

static void check_read(unsigned int a, uint64_t lo, uint64_t v, uint64_t hi)
{
	if (v == 0) {
		count(&st.reads_zero);
		return;
	}
	count(&st.reads_ok);
	if (TAG_AREA(v) != a)
		bad("area %llu read another area's tag %#llx (id range from %llu)", a, v, lo);
	else if (TAG_ID(v) < lo || TAG_ID(v) > hi)
		bad("area %llu read mapping id %llu, outside the ids live during the read "
		    "(from %llu)", a, TAG_ID(v), lo);
}

static void *accessor_main(void *arg)
{
	struct worker *w = arg;

	while (!atomic_load_explicit(&st.stop, memory_order_relaxed)) {
		uint64_t x = tu_rand(&w->seed), v = 0, fa;
		unsigned int a = (unsigned int)(x % AREAS), p = (unsigned int)((x >> 8) % AREA_PAGES);
		uint64_t addr = area_addr(a) + p * PG;
		struct area *ar = &st.area[a];
		int rc;

		if ((x >> 20) % 4) {	/* a read of the tag word */
			uint64_t lo = atomic_load_explicit(&ar->cur, memory_order_acquire), hi;

			rc = (x >> 24) % 2 ? mm_access(st.mm, addr, &v, 8, 0, &fa)
					    : mm_fault(st.mm, addr, 0);
			hi = atomic_load_explicit(&ar->pending, memory_order_acquire);
			if (rc == SEGV_MAPERR)
				count(&st.reads_segv);
			else if (rc)
				bad("area %llu read: %llu (%llu)", a, (unsigned long long)rc, 0);
			else if ((x >> 24) % 2)
				check_read(a, lo, v, hi);
		} else {		/* a write of the junk word */
			uint64_t e0 = atomic_load_explicit(&ar->ro_epoch, memory_order_acquire), e1;

			v = JUNK(a);
			rc = mm_access(st.mm, addr + 16, &v, 8, 1, &fa);
			e1 = atomic_load_explicit(&ar->ro_epoch, memory_order_acquire);
			if (rc == 0) {
				count(&st.writes_ok);
				if (e0 == e1 && (e0 & 1))
					bad("area %llu: a write succeeded while read-only (epoch %llu)%llu",
					    a, e0, 0);
			} else if (rc == SEGV_ACCERR) {
				count(&st.writes_accerr);
			} else if (rc == SEGV_MAPERR) {
				count(&st.writes_segv);
			} else {
				bad("area %llu write: %llu (%llu)", a, (unsigned long long)rc, 0);
			}
		}
		/* Readers could starve the mutators of CPU (two cores, five threads). */
		if ((++w->steps & 31) == 0)
			sched_yield();
	}
	return NULL;
}

static void t_no_stale_vma_or_pte(void)
{
	struct worker mut[MUTATORS], acc[ACCESSORS];
	struct mmap_lock_stats_snapshot s;
	uint64_t mutations = 0;

	memset(&st, 0, sizeof(st));
	st.mm = tu_mm_alloc(0);
	CHECK(st.mm != NULL);
	if (!st.mm)
		return;
	atomic_store(&st.next_id, 1);
	for (unsigned int a = 0; a < AREAS; a++)
		remap(a);
	atomic_store(&st.remaps, 0);
	for (int i = 0; i < ACCESSORS; i++) {
		acc[i] = (struct worker){ .id = i, .seed = 0x51ed2701ull * (uint64_t)(i + 1) };
		tu_create(&acc[i].th, accessor_main, &acc[i]);
	}
	for (int i = 0; i < MUTATORS; i++) {
		mut[i] = (struct worker){ .id = i, .seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1) };
		tu_create(&mut[i].th, mutator_main, &mut[i]);
	}
	tu_sleep_us(BUDGET_MS * 1000);
	atomic_store(&st.stop, 1);
	for (int i = 0; i < MUTATORS; i++) {
		JOIN(mut[i].th, "mutator");
		mutations += mut[i].steps;
	}
	for (int i = 0; i < ACCESSORS; i++)
		JOIN(acc[i].th, "accessor");
	mmap_lock_stats_read(st.mm, &s);
	printf("    mutations %llu (remap %llu, mprotect %llu, dontneed %llu); reads: tagged %llu, "
	       "zero %llu, SEGV %llu; writes: ok %llu, ACCERR %llu, SEGV %llu\n"
	       "    per-VMA lock: success %llu, abort %llu, retry %llu, miss %llu; "
	       "bravo fast reads %llu, revocations %llu\n",
	       (unsigned long long)mutations, (unsigned long long)st.remaps,
	       (unsigned long long)st.protects, (unsigned long long)st.dontneeds,
	       (unsigned long long)st.reads_ok, (unsigned long long)st.reads_zero,
	       (unsigned long long)st.reads_segv, (unsigned long long)st.writes_ok,
	       (unsigned long long)st.writes_accerr, (unsigned long long)st.writes_segv,
	       (unsigned long long)s.vma_lock[MMAP_VMA_LOCK_SUCCESS],
	       (unsigned long long)s.vma_lock[MMAP_VMA_LOCK_ABORT],
	       (unsigned long long)s.vma_lock[MMAP_VMA_LOCK_RETRY],
	       (unsigned long long)s.vma_lock[MMAP_VMA_LOCK_MISS],
	       (unsigned long long)s.bravo_fast_reads, (unsigned long long)s.bravo_revocations);
	CHECK_EQ(atomic_load(&st.bad), 0);
	CHECK(mutations >= MIN_MUTATIONS);
	CHECK(st.reads_ok > 0 && st.writes_ok > 0);
	/* The design's own path really ran (not only its fallback). */
	if (tu_design == MMAP_LOCK_BACKEND_PER_VMA)
		CHECK(s.vma_lock[MMAP_VMA_LOCK_SUCCESS] > 0);
	if (tu_design == MMAP_LOCK_BACKEND_BRAVO)
		CHECK(s.bravo_fast_reads > 0 && s.bravo_revocations > 0);
	CHECK_EQ(mm_free(st.mm), 0);
}

static const struct tu_test tests[] = {
	TU_TEST(t_no_stale_vma_or_pte),
};

int main(int argc, char **argv)
{
	return tu_run_designs("test_mm_stale", tests, (int)(sizeof(tests) / sizeof(tests[0])),
			      argc, argv, NULL);
}
