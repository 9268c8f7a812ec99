/* SPDX-License-Identifier: MIT */
/*
 * reader_slots.h - per-thread published reader indicators, for the lock
 * designs whose read side must write no line another reader writes
 * (per-VMA locks, bravo).
 *
 * Each thread number (thread_index.h) owns one cache line of MLN_READER_SLOTS
 * pointers, written only by that thread:
 *
 *   slot                        holds                          written by
 *   MLN_READER_SLOT_VMA (0)     the VMA lock (vma_lock.h) the  vma_start_read /
 *                               thread holds for read, or NULL vma_end_read
 *   1 .. MLN_READER_SLOTS - 1   an mm whose bravo lock the     the bravo fast
 *                               thread holds on the fast path  read path
 *                               (at the mm's hashed index)
 *
 * A reader publishes its pointer and then checks that no writer excludes it;
 * a writer announces itself and then scans every thread's line for the
 * pointer.  Both steps are sequentially consistent on each side (Dekker), so
 * at least one of the two sees the other: the reader backs out, or the
 * writer waits for it.  A scan stops at mln_thread_index_high(); a thread
 * numbered later than the scanner's load of it publishes after the writer's
 * announcement in the single total order, and so sees it.
 *
 * A thread without a private number (MLN_THREAD_OVERFLOW) has no line: the
 * designs send it down their slow path.
 */
#ifndef MLN_READER_SLOTS_H
#define MLN_READER_SLOTS_H

#include <stdatomic.h>
#include <stdint.h>

#include "thread_index.h"

#define MLN_READER_SLOTS 8
#define MLN_READER_SLOT_VMA 0

struct mln_reader_line {
	void *_Atomic slot[MLN_READER_SLOTS];
} __attribute__((aligned(64)));

/* By thread number; [0] and [MLN_THREAD_OVERFLOW] are never used. */
extern struct mln_reader_line mln_reader_lines[MLN_THREAD_SLOTS + 1];

/* The calling thread's slot @i, or NULL if it has no private line. */
static inline void *_Atomic *mln_reader_slot_self(unsigned int i)
{
	unsigned int t = mln_thread_index();

	return mln_likely(t <= MLN_THREAD_SLOTS) ? &mln_reader_lines[t].slot[i] : NULL;
}

/* Slot @i of every thread, for a writer's scan: @fn(slot, arg) on each. */
static inline void *_Atomic *mln_reader_slot_of(unsigned int t, unsigned int i)
{
	return &mln_reader_lines[t].slot[i];
}

/*
 * Wait until no thread's slot @i holds @p (every holder has left or backed
 * out).  For read sides that never block while published: it spins, then
 * yields, then sleeps in growing steps of at most 1 ms, so a preempted
 * reader costs the writer no CPU.  The caller has already made its
 * exclusion visible (a sequentially consistent store).
 */
void mln_reader_slots_wait(unsigned int i, const void *p);

#endif /* MLN_READER_SLOTS_H */
