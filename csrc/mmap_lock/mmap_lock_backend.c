/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_backend.c - the designs' names, and the glibc lock backends:
 * pthread_rwlock of the default kind (reader-preferring), pthread_rwlock
 * with PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP, and a plain mutex
 * (read locks exclusive too).  They are the baselines the rwsem is compared
 * with.  (The rwsem-based designs live in mmap_lock.c, mmap_lock_bravo.c
 * and vma_lock.c.)
 *
 * What they cannot do like the rwsem: downgrade is an unlock and a re-lock
 * (not atomic: a writer may get in between); a killed or signalled waiter
 * cannot be woken, so mmap_lock.c waits in 50 ms slices (lock_until) and
 * notices a kill or a signal between them; is_contended always says no; a
 * read lock released by another thread relies on glibc not checking the
 * owner of read locks and of default mutexes.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "futex.h"
#include "mmap_lock.h"
#include "mmap_lock_backend.h"

static int rwlock_init_kind(struct mm_struct *mm, int kind)
{
	pthread_rwlockattr_t attr;
	int rc;

	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, kind);
	rc = pthread_rwlock_init(&mm->mmap_lock_alt_state.lock.rw, &attr);
	pthread_rwlockattr_destroy(&attr);
	return -rc;
}

static int rwlock_init(struct mm_struct *mm)
{
	return rwlock_init_kind(mm, PTHREAD_RWLOCK_DEFAULT_NP);
}

static int rwlock_writer_init(struct mm_struct *mm)
{
	return rwlock_init_kind(mm, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
}

static void rwlock_destroy(struct mm_struct *mm)
{
	pthread_rwlock_destroy(&mm->mmap_lock_alt_state.lock.rw);
}

static int rwlock_lock(struct mm_struct *mm, bool write, bool try)
{
	pthread_rwlock_t *rw = &mm->mmap_lock_alt_state.lock.rw;
	int rc;

	if (try)
		rc = write ? pthread_rwlock_trywrlock(rw) : pthread_rwlock_tryrdlock(rw);
	else
		rc = write ? pthread_rwlock_wrlock(rw) : pthread_rwlock_rdlock(rw);
	return rc ? -EBUSY : 0;
}

/*
 * The CLOCK_REALTIME time of the CLOCK_MONOTONIC @deadline_ns, for the
 * timed locks POSIX has (ThreadSanitizer does not intercept glibc's
 * pthread_*_clock*lock, and would then see unlocks of locks it never saw
 * taken).  The waits are 50 ms slices, so a clock step only moves one slice.
 */
static struct timespec realtime_of(uint64_t deadline_ns)
{
	uint64_t now = mln_now_ns(), left = deadline_ns > now ? deadline_ns - now : 0;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	left += (uint64_t)ts.tv_nsec;
	ts.tv_sec += (time_t)(left / MLN_NSEC_PER_SEC);
	ts.tv_nsec = (long)(left % MLN_NSEC_PER_SEC);
	return ts;
}

static int rwlock_lock_until(struct mm_struct *mm, bool write, uint64_t deadline_ns)
{
	pthread_rwlock_t *rw = &mm->mmap_lock_alt_state.lock.rw;
	struct timespec ts = realtime_of(deadline_ns);
	int rc = write ? pthread_rwlock_timedwrlock(rw, &ts) : pthread_rwlock_timedrdlock(rw, &ts);

	return rc ? -ETIMEDOUT : 0;
}

static void rwlock_unlock(struct mm_struct *mm, bool write)
{
	(void)write;
	pthread_rwlock_unlock(&mm->mmap_lock_alt_state.lock.rw);
}

static int mutex_init(struct mm_struct *mm)
{
	return -pthread_mutex_init(&mm->mmap_lock_alt_state.lock.mutex, NULL);
}

static void mutex_destroy(struct mm_struct *mm)
{
	pthread_mutex_destroy(&mm->mmap_lock_alt_state.lock.mutex);
}

static int mutex_lock(struct mm_struct *mm, bool write, bool try)
{
	pthread_mutex_t *m = &mm->mmap_lock_alt_state.lock.mutex;

	(void)write;
	return (try ? pthread_mutex_trylock(m) : pthread_mutex_lock(m)) ? -EBUSY : 0;
}

static int mutex_lock_until(struct mm_struct *mm, bool write, uint64_t deadline_ns)
{
	struct timespec ts = realtime_of(deadline_ns);

	(void)write;
	return pthread_mutex_timedlock(&mm->mmap_lock_alt_state.lock.mutex, &ts) ? -ETIMEDOUT : 0;
}

static void mutex_unlock(struct mm_struct *mm, bool write)
{
	(void)write;
	pthread_mutex_unlock(&mm->mmap_lock_alt_state.lock.mutex);
}

const struct mmap_lock_backend mmap_lock_backend_pthread_rwlock = {
	.name = "pthread_rwlock", .init = rwlock_init, .destroy = rwlock_destroy,
	.lock = rwlock_lock, .lock_until = rwlock_lock_until, .unlock = rwlock_unlock,
};

const struct mmap_lock_backend mmap_lock_backend_pthread_rwlock_writer = {
	.name = "pthread_rwlock_writer", .init = rwlock_writer_init, .destroy = rwlock_destroy,
	.lock = rwlock_lock, .lock_until = rwlock_lock_until, .unlock = rwlock_unlock,
};

const struct mmap_lock_backend mmap_lock_backend_mutex = {
	.name = "mutex", .init = mutex_init, .destroy = mutex_destroy,
	.lock = mutex_lock, .lock_until = mutex_lock_until, .unlock = mutex_unlock,
};

_Static_assert(MMAP_LOCK_DEFAULT_BACKEND == MMAP_LOCK_BACKEND_PER_VMA,
	       "the default design is per_vma (the number is spelt out for cffi)");

static const char *const design_names[MMAP_LOCK_NR_BACKENDS] = {
	[MMAP_LOCK_BACKEND_RWSEM] = "rwsem",
	[MMAP_LOCK_BACKEND_PTHREAD_RWLOCK] = "pthread_rwlock",
	[MMAP_LOCK_BACKEND_PTHREAD_RWLOCK_WRITER] = "pthread_rwlock_writer",
	[MMAP_LOCK_BACKEND_MUTEX] = "mutex",
	[MMAP_LOCK_BACKEND_PER_VMA] = "per_vma",
	[MMAP_LOCK_BACKEND_BRAVO] = "bravo",
};

const char *mmap_lock_backend_name(int backend)
{
	if (backend < 0 || backend >= MMAP_LOCK_NR_BACKENDS)
		return NULL;
	return design_names[backend];
}

int mmap_lock_backend_by_name(const char *name)
{
	for (int id = 0; name && id < MMAP_LOCK_NR_BACKENDS; id++)
		if (strcmp(name, design_names[id]) == 0)
			return id;
	return -EINVAL;
}

const struct mmap_lock_backend *mmap_lock_backend_of(int id)
{
	switch (id) {
	case MMAP_LOCK_BACKEND_PTHREAD_RWLOCK:
		return &mmap_lock_backend_pthread_rwlock;
	case MMAP_LOCK_BACKEND_PTHREAD_RWLOCK_WRITER:
		return &mmap_lock_backend_pthread_rwlock_writer;
	case MMAP_LOCK_BACKEND_MUTEX:
		return &mmap_lock_backend_mutex;
	default:
		return NULL;
	}
}
