/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock.h - the kernel's mmap locking API (<linux/mmap_lock.h>, Linux 5.8
 * and its later additions) over the rw_semaphore of rwsem.h.
 *
 * The names, arguments and return conventions are the kernel's, except that
 * functions the kernel declares void return int here: 0, or a negative errno
 * on misuse (see rwsem.h), or -EDEADLK when the lock-order checker refuses
 * the call in its "raise" mode.  The kernel's bool returns are int 0/1.
 *
 * Every function fires the three tracepoints where the kernel fires them
 * (mmap_lock_trace.h), keeps the per-mm statistics (mmap_lock_stats.h), and in
 * debug mode feeds the lock-order checker (lockdep.h).  With none of those
 * attached, an acquisition is the rwsem fast path plus one predictable branch
 * and a few per-thread counter updates.
 */
#ifndef MLN_MMAP_LOCK_H
#define MLN_MMAP_LOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "mm_types.h"
#include "rwsem.h"

/* cffi:begin */
/* mmap_lock_init() flags. */
#define MMAP_LOCK_SHARED 1	/* process-shared futexes; implies NOSTATS, no recorder */
#define MMAP_LOCK_NOSTATS 2	/* no statistics (mmap_lock_stats_set_enabled()) */
#define MMAP_LOCK_DEBUG 4	/* debug mode, whatever mln_set_debug() says */
#define MMAP_LOCK_NODEBUG 8	/* no debug mode, whatever mln_set_debug() says */
/*
 * A MMAP_LOCK_SHARED mm's lock is a robust shared rwsem (rwsem.h): its
 * blocking acquisitions may return -EOWNERDEAD, the lock held, after a
 * process died holding it for write; its trylocks report the acquisition.
 */

/*
 * Unlocked; statistics on; debug mode if mln_set_debug(1) was called.  Once
 * per mm (as in the kernel): mmap_lock_destroy() before initialising again,
 * or the statistics and recorder of the first life leak.
 */
int mmap_init_lock(struct mm_struct *mm);
int mmap_lock_init(struct mm_struct *mm, unsigned int flags);
/*
 * Lock designs (mmap_lock_backend.h): the same API, statistics and
 * tracepoints over another lock.  Each has one name, used everywhere (the C
 * init by name, MM(lock=...), the benchmark's --lock and JSON).
 */
#define MMAP_LOCK_BACKEND_RWSEM 0			/* "rwsem": the 5.8 design */
#define MMAP_LOCK_BACKEND_PTHREAD_RWLOCK 1		/* glibc default (reader-preferring) */
#define MMAP_LOCK_BACKEND_PTHREAD_RWLOCK_WRITER 2	/* PREFER_WRITER_NONRECURSIVE */
#define MMAP_LOCK_BACKEND_MUTEX 3			/* read locks exclusive too */
#define MMAP_LOCK_BACKEND_PER_VMA 4			/* the rwsem + per-VMA locks for faults */
#define MMAP_LOCK_BACKEND_BRAVO 5			/* the rwsem with a reader bias */
#define MMAP_LOCK_NR_BACKENDS 6
/* What mm_alloc() uses: per_vma (MMAP_LOCK_BACKEND_PER_VMA), as current kernels. */
#define MMAP_LOCK_DEFAULT_BACKEND 4
int mmap_lock_init_backend(struct mm_struct *mm, unsigned int flags, int backend);
/* The design's number. */
int mmap_lock_backend_id(struct mm_struct *mm);
/* A design's name ("rwsem", "per_vma", ...), or NULL for a bad number. */
const char *mmap_lock_backend_name(int backend);
/* The number of the design called @name, or -EINVAL. */
int mmap_lock_backend_by_name(const char *name);
/* bravo: read holds on the fast path, not seen by the rwsem (racy count);
 * 0 for other designs. */
uint32_t mmap_lock_fast_readers(struct mm_struct *mm);
/* Who holds the lock, whatever the design (a racy snapshot): the write
 * owner's task id or 0, and the read holds (bravo's fast ones included). */
int mmap_lock_holders(struct mm_struct *mm, uint64_t *writer, uint32_t *readers);
/* Frees the statistics and any recorder; -EBUSY if locked or awaited. */
int mmap_lock_destroy(struct mm_struct *mm);
/* 1 while the lock is held or awaited (whatever the backend), else 0: a racy
 * snapshot, for an owner about to tear down an mm it says nobody else uses. */
int mmap_lock_is_busy(struct mm_struct *mm);
/* 1 if the lock-order checker tracks @mm (debug mode at init). */
int mmap_lock_is_debug(struct mm_struct *mm);
/* Put @mm's lock in lock-order class @cls (mln_lockdep_class()); while unlocked. */
int mmap_lock_set_class(struct mm_struct *mm, int cls);

int mmap_write_lock(struct mm_struct *mm);
int mmap_write_lock_nested(struct mm_struct *mm, int subclass);
int mmap_write_lock_killable(struct mm_struct *mm);	/* 0 or -EINTR */
int mmap_write_trylock(struct mm_struct *mm);		/* 1 acquired, 0 not */
int mmap_write_unlock(struct mm_struct *mm);
int mmap_write_downgrade(struct mm_struct *mm);

int mmap_read_lock(struct mm_struct *mm);
int mmap_read_lock_killable(struct mm_struct *mm);	/* 0 or -EINTR */
int mmap_read_trylock(struct mm_struct *mm);		/* 1 acquired, 0 not */
int mmap_read_unlock(struct mm_struct *mm);
int mmap_read_trylock_non_owner(struct mm_struct *mm);	/* 1 acquired, 0 not */
int mmap_read_unlock_non_owner(struct mm_struct *mm);

/*
 * As the kernel's VM_BUG_ON: print the mm and the state found and abort()
 * when the check fails.  Without debug mode: locked (in any mode), or
 * write-locked.  In debug mode: held by the current task, in write mode for
 * the write assertion.  mmap_lock_check_held() is the same check as a value.
 */
void mmap_assert_locked(struct mm_struct *mm);
void mmap_assert_write_locked(struct mm_struct *mm);
#define MMAP_CHECK_OK 0
#define MMAP_CHECK_UNLOCKED 1		/* nobody holds it */
#define MMAP_CHECK_NOT_WRITE 2		/* held, but not for write */
#define MMAP_CHECK_NOT_HELD 3		/* debug: held, not by the current task */
#define MMAP_CHECK_HELD_READ 4		/* debug: the current task holds it for read only */
int mmap_lock_check_held(struct mm_struct *mm, int write);

int mmap_lock_is_contended(struct mm_struct *mm);

/*
 * Lockless speculation (Linux 6.14).  try_begin stores the sequence count and
 * returns 1, or returns 0 at once when a writer holds the lock; retry returns
 * 1 when a write section began or ended since @seq was read.
 */
int mmap_lock_speculate_try_begin(struct mm_struct *mm, unsigned int *seq);
int mmap_lock_speculate_retry(struct mm_struct *mm, unsigned int seq);

/*
 * Resumable acquisitions, for bindings (see rwsem_down_wait() in rwsem.h):
 * mmap_lock_begin() fires start_locking and tries the fast path; it returns
 * 0 (acquired: the whole call is done), 1 (must wait: call mmap_lock_wait()
 * with a zeroed waiter until it returns anything but RWSEM_WAIT_INTERRUPTED,
 * or mmap_lock_cancel()), or a negative errno (the call is done and failed:
 * -EBUSY for a failed trylock, -EDEADLK refused by the lock-order checker,
 * -EINVAL for a bad subclass).  Whatever ends the call fires
 * acquire_returned and counts it in the statistics.  mmap_lock_cancel() may
 * be called in any state of the waiter (even after mmap_lock_wait() returned
 * 0, if the binding lost that result to an exception): the caller then holds
 * nothing, and a completed acquisition is undone as its unlock would be.
 */
#define MMAP_OP_WRITE 1
#define MMAP_OP_KILLABLE 2
#define MMAP_OP_TRY 4
#define MMAP_OP_NON_OWNER 8
#define MMAP_OP_NESTED 16	/* write with a subclass: mmap_write_lock_nested */
struct mmap_lock_waiter {
	struct rwsem_waiter rw;
	uint64_t start_ns;	/* when the wait began; set by the first mmap_lock_wait() */
	uint32_t done;		/* the call has ended (and was reported) */
	uint32_t reserved;
};
int mmap_lock_begin(struct mm_struct *mm, unsigned int op, int subclass);
/* mmap_lock_begin() for a plain read or write lock: one argument is cheaper to bind. */
int mmap_read_lock_begin(struct mm_struct *mm);
int mmap_write_lock_begin(struct mm_struct *mm);
int mmap_lock_wait(struct mm_struct *mm, struct mmap_lock_waiter *w, unsigned int op,
		   uint64_t deadline_ns, unsigned int flags);
int mmap_lock_cancel(struct mm_struct *mm, struct mmap_lock_waiter *w, unsigned int op);
/* cffi:end */

#endif /* MLN_MMAP_LOCK_H */
