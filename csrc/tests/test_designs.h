/* SPDX-License-Identifier: MIT */
/*
 * test_designs.h - run a test program's whole suite once per lock design
 * (mmap_lock.h's MMAP_LOCK_BACKEND_*), so that every design passes the same
 * tests.  `--lock NAME` (repeatable) picks designs; the default is all.
 * Tests make their mms with tu_mm_alloc(), which uses the design under test.
 */
#ifndef MLN_TEST_DESIGNS_H
#define MLN_TEST_DESIGNS_H

#include "mm.h"
#include "mmap_lock.h"
#include "test_util.h"

/* The design the suite runs on now. */
static int tu_design __attribute__((unused)) = MMAP_LOCK_BACKEND_RWSEM;

static inline struct mm_struct *tu_mm_alloc(unsigned int flags)
{
	return mm_alloc_backend(flags, tu_design);
}

static inline bool tu_design_selected(int design, int argc, char **argv)
{
	bool any = false;

	for (int i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], "--lock") == 0) {
			any = true;
			if (strcmp(argv[i + 1], mmap_lock_backend_name(design)) == 0)
				return true;
		}
	}
	return !any;
}

/* tu_run() once per selected design; fails if any run failed. */
static inline int tu_run_designs(const char *program, const struct tu_test *tests, int n,
				 int argc, char **argv, void (*before_each)(void))
{
	int rc = 0, ran = 0;

	for (int d = 0; d < MMAP_LOCK_NR_BACKENDS; d++) {
		if (!tu_design_selected(d, argc, argv))
			continue;
		tu_design = d;
		ran++;
		printf("-- %s on lock design %s\n", program, mmap_lock_backend_name(d));
		rc |= tu_run(program, tests, n, argc, argv, before_each);
	}
	if (!ran) {
		fprintf(stderr, "%s: no such lock design (--lock)\n", program);
		return 2;
	}
	return rc;
}

#endif /* MLN_TEST_DESIGNS_H */
