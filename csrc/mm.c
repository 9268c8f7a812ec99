/* SPDX-License-Identifier: MIT */
/*
 * mm.c - life cycle of the emulated mm_struct.
 */
#include <errno.h>
#include <stdlib.h>

#include "mm.h"
#include "mmap_lock.h"

struct mm_struct *mm_alloc(unsigned int lock_flags)
{
	struct mm_struct *mm;

	/* The lock's cache line is the mm's hottest: give it one of its own. */
	if (posix_memalign((void **)&mm, 64, sizeof(*mm)))
		return NULL;
	if (mmap_lock_init(mm, lock_flags)) {
		free(mm);
		return NULL;
	}
	return mm;
}

int mm_free(struct mm_struct *mm)
{
	int rc;

	if (!mm)
		return 0;
	rc = mmap_lock_destroy(mm);
	if (rc)
		return rc;
	free(mm);
	return 0;
}
