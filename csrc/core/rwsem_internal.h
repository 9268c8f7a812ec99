/* SPDX-License-Identifier: MIT */
/*
 * rwsem_internal.h - the state word's bits and the inline fast paths, shared
 * by rwsem.c and the layers built directly on it (mmap_lock.c), which need
 * to know whether an acquisition took the fast path without paying for a
 * second call.  Not a public header: the bit layout may change.
 */
#ifndef MLN_RWSEM_INTERNAL_H
#define MLN_RWSEM_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>

#include "futex.h"
#include "rwsem.h"
#include "task_internal.h"

#define RWSEM_WRITER_LOCKED	(1u << 0)
#define RWSEM_FLAG_WAITERS	(1u << 1)
#define RWSEM_FLAG_HANDOFF	(1u << 2)
#define RWSEM_FLAG_DEAD		(1u << 3)
/* In count: a process-shared semaphore, whose state word is `state`. */
#define RWSEM_FLAG_SHARED	(1u << 4)
/* In a shared semaphore's `state`: a write holder died holding it. */
#define RWSEM_FLAG_OWNER_DIED	(1u << 5)
#define RWSEM_READER_SHIFT	8
#define RWSEM_READER_BIAS	(1u << RWSEM_READER_SHIFT)
#define RWSEM_FLAG_READFAIL	(1u << 31)
#define RWSEM_READER_MASK	(~(RWSEM_READER_BIAS - 1) & ~RWSEM_FLAG_READFAIL)
/* READFAIL counts as "readers inside": an overflowing reader is backing out. */
#define RWSEM_LOCK_MASK		(RWSEM_WRITER_LOCKED | RWSEM_READER_MASK | RWSEM_FLAG_READFAIL)
#define RWSEM_READERS_MAX	(RWSEM_READER_MASK >> RWSEM_READER_SHIFT)
/* Bits 6-7: no operation sets them. */
#define RWSEM_RESERVED_MASK	0xc0u
/* SHARED: a shared semaphore's count keeps no holds, so its every fast path fails. */
#define RWSEM_READ_FAILED_MASK	(RWSEM_WRITER_LOCKED | RWSEM_FLAG_WAITERS | \
				 RWSEM_FLAG_HANDOFF | RWSEM_FLAG_DEAD | RWSEM_FLAG_SHARED | \
				 RWSEM_FLAG_READFAIL)

#define RWSEM_OWNER_READER	1ull
#define RWSEM_OWNER_SHIFT	2

static inline bool is_shared(const struct rw_semaphore *sem)
{
	return sem->flags & RWSEM_SHARED;
}

/*
 * The state word of the slow paths: `count`, whose bits the fast paths work
 * on, or in a shared semaphore `state`, which changes under wait_lock only
 * (count then holds RWSEM_FLAG_SHARED, which fails every fast path).
 */
static inline _Atomic uint32_t *state_word(struct rw_semaphore *sem)
{
	return is_shared(sem) ? &sem->state : &sem->count;
}

static inline uint64_t owner_word(uint64_t task)
{
	return task << RWSEM_OWNER_SHIFT;
}

static inline uint64_t owner_task(uint64_t word)
{
	return word >> RWSEM_OWNER_SHIFT;
}

/*
 * The owner word is a hint for diagnostics and the misuse checks of the
 * owner itself: it is written relaxed, and by the holder only, right after
 * the acquiring atomic (or right before the releasing one).
 */
static inline void set_writer_owned(struct rw_semaphore *sem)
{
	atomic_store_explicit(&sem->owner, owner_word(mln_current_task()), memory_order_relaxed);
}

static inline void set_reader_owned(struct rw_semaphore *sem, bool anonymous)
{
	uint64_t task = anonymous ? 0 : mln_current_task();

	atomic_store_explicit(&sem->owner, owner_word(task) | RWSEM_OWNER_READER,
			      memory_order_relaxed);
}

/* A shared semaphore's owner check (rwsem_shared.c): it takes wait_lock. */
bool rwsem_shared_is_write_owner(struct rw_semaphore *sem);

/*
 * Does the current task write-hold @sem, whose count it read as @count?
 * Not under wait_lock (a shared semaphore's check takes it).
 */
static inline bool is_write_owner(struct rw_semaphore *sem, uint32_t count)
{
	if (mln_likely((count & (RWSEM_WRITER_LOCKED | RWSEM_FLAG_SHARED)) == RWSEM_WRITER_LOCKED))
		return atomic_load_explicit(&sem->owner, memory_order_relaxed) ==
		       owner_word(mln_current_task());
	return (count & RWSEM_FLAG_SHARED) && rwsem_shared_is_write_owner(sem);
}

/* Fast path: one fetch_add.  On failure the bias stays: the caller backs out. */
static inline bool read_fast(struct rw_semaphore *sem)
{
	uint32_t c = atomic_fetch_add_explicit(&sem->count, RWSEM_READER_BIAS,
					       memory_order_acquire);

	return !((c + RWSEM_READER_BIAS) & RWSEM_READ_FAILED_MASK);
}

/* Fast-path write acquire: one compare-exchange 0 -> WRITER_LOCKED. */
static inline bool write_fast(struct rw_semaphore *sem)
{
	uint32_t c = 0;

	return atomic_compare_exchange_strong_explicit(&sem->count, &c, RWSEM_WRITER_LOCKED,
						       memory_order_acquire, memory_order_relaxed);
}

/*
 * The slow paths behind read_fast() and write_fast().  The reader's expects
 * the bias read_fast() added (it backs it out first).  Both return as
 * down_read_timed() / down_write_timed() do, with RWSEM_WAIT_* @flags.
 */
/* up_write() past its owner check, for a caller that has just made it. */
int rwsem_up_write_owned(struct rw_semaphore *sem);

int rwsem_down_read_slowpath(struct rw_semaphore *sem, uint64_t deadline_ns, unsigned int flags);
int rwsem_down_write_slowpath(struct rw_semaphore *sem, uint64_t deadline_ns, unsigned int flags);

#endif /* MLN_RWSEM_INTERNAL_H */
