/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_backend.h - the seam for lock implementations other than the
 * built-in rwsem behind the mmap locking API (the second reason the API
 * exists).  A backend is one file defining one struct mmap_lock_backend;
 * mmap_lock.c keeps the tracepoints, statistics, lock-order checker,
 * sequence count and holder tracking the same for every backend, and calls
 * these operations from its out-of-line path (the rwsem's inline fast path
 * is untouched: a backend's mm routes through the hooked path by an
 * instrumentation bit).
 *
 * To add one: write mmap_lock_backend_NAME.c with its operations, add its
 * MMAP_LOCK_BACKEND_* number in mmap_lock.h and its entry in
 * mmap_lock_backend_of() (mmap_lock_backend.c).
 */
#ifndef MLN_MMAP_LOCK_BACKEND_H
#define MLN_MMAP_LOCK_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "mm_types.h"

struct mmap_lock_backend {
	const char *name;
	int (*init)(struct mm_struct *mm);		/* 0 or -errno */
	void (*destroy)(struct mm_struct *mm);
	/* 0 when acquired; with @try, -EBUSY when it cannot be taken at once. */
	int (*lock)(struct mm_struct *mm, bool write, bool try);
	/* 0 when acquired, or -ETIMEDOUT at the CLOCK_MONOTONIC @deadline_ns. */
	int (*lock_until)(struct mm_struct *mm, bool write, uint64_t deadline_ns);
	void (*unlock)(struct mm_struct *mm, bool write);
};

extern const struct mmap_lock_backend mmap_lock_backend_pthread_rwlock;
extern const struct mmap_lock_backend mmap_lock_backend_pthread_rwlock_writer;
extern const struct mmap_lock_backend mmap_lock_backend_mutex;

/* The backend of a MMAP_LOCK_BACKEND_* number; NULL for the rwsem or a bad number. */
const struct mmap_lock_backend *mmap_lock_backend_of(int id);

#endif /* MLN_MMAP_LOCK_BACKEND_H */
