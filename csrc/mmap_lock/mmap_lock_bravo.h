/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_bravo.h - the bravo design: a reader-biased mmap lock over the
 * rwsem (Dice & Kogan, "BRAVO: Biased Locking for Reader-Writer Locks",
 * USENIX ATC 2019).  Internal to the mmap locking layer (mmap_lock.c calls
 * it; nothing else should).
 *
 * While the lock is biased, a reader publishes the mm in its own thread's
 * reader line (reader_slots.h) and holds the lock without touching the
 * rwsem: reads write no shared line.  A writer first takes the rwsem for
 * write, with every semantic it has (writer preference, handoff, killable
 * and timed waits), then revokes the bias and waits for the published
 * readers to leave; re-biasing is then inhibited for BRAVO_INHIBIT_FACTOR
 * times as long as the revocation took, so frequent writers soon find the
 * lock unbiased and pay nothing.  Readers that find it unbiased take the
 * rwsem as usual; one of them re-biases it once the inhibit window passed
 * and no writer waits.
 *
 * The bias word (mm->mmap_lock_bravo.rbias):
 *
 *   value          meaning                          set by
 *   BRAVO_OFF      no fast readers can be inside   a revocation that drained
 *                                                   them (write holder)
 *   BRAVO_ON       readers take the fast path       a reader holding the rwsem
 *                                                   for read, after the
 *                                                   inhibit window, no writer
 *                                                   queued
 *   BRAVO_DRAINING fast path closed, fast readers   a writer about to wait for
 *                  may still be inside              the rwsem (writer
 *                                                   preference), or a
 *                                                   revocation in progress or
 *                                                   given up
 */
#ifndef MLN_MMAP_LOCK_BRAVO_H
#define MLN_MMAP_LOCK_BRAVO_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mm_types.h"
#include "reader_slots.h"

#define BRAVO_OFF	0u
#define BRAVO_ON	1u
#define BRAVO_DRAINING	2u

/* Re-biasing waits this many times the revocation's length (the paper's N). */
#define BRAVO_INHIBIT_FACTOR 9u

void bravo_init(struct mm_struct *mm);

/* Leave the fast path (a release, or a back-out), waking a revoking writer. */
void bravo_reader_leave(struct mm_struct *mm, void *_Atomic *slot);

/*
 * Take a read hold on the fast path: true, or false (take the rwsem).  The
 * slot is stored, then the bias loaded, both sequentially consistent: the
 * reader's half of the Dekker pair with bravo_revoke().
 */
static inline bool bravo_read_fast(struct mm_struct *mm)
{
	struct mmap_lock_bravo_state *b = &mm->mmap_lock_bravo;
	void *_Atomic *slot;

	if (atomic_load_explicit(&b->rbias, memory_order_relaxed) != BRAVO_ON)
		return false;
	slot = mln_reader_slot_self(b->slot);
	/* Taken (this mm again, or another hashed here): the rwsem it is. */
	if (mln_unlikely(!slot || atomic_load_explicit(slot, memory_order_relaxed)))
		return false;
	mln_store_before_load(slot, mm);
	if (mln_likely(atomic_load_explicit(&b->rbias, memory_order_seq_cst) == BRAVO_ON))
		return true;
	bravo_reader_leave(mm, slot);
	return false;
}

/* The calling thread's slot for @mm if it holds @mm on the fast path, else NULL. */
static inline void *_Atomic *bravo_fast_hold(struct mm_struct *mm)
{
	unsigned int t = mln_thread_index_tls;
	void *_Atomic *slot;

	if (mln_unlikely(!t || t > MLN_THREAD_SLOTS))
		return NULL;
	slot = mln_reader_slot_of(t, mm->mmap_lock_bravo.slot);
	return atomic_load_explicit(slot, memory_order_relaxed) == mm ? slot : NULL;
}

/* Release the calling thread's fast read hold of @mm: true, or false if it has none. */
static inline bool bravo_read_release(struct mm_struct *mm)
{
	void *_Atomic *slot = bravo_fast_hold(mm);

	if (!slot)
		return false;
	bravo_reader_leave(mm, slot);
	return true;
}
/* Fast read holds of @mm, all threads (a racy count, for queries). */
uint32_t bravo_fast_readers(struct mm_struct *mm);

/* A writer is about to wait for the rwsem: close the fast path now. */
void bravo_writer_waits(struct mm_struct *mm);
/*
 * The caller holds the rwsem for write: revoke the bias and wait for the
 * fast readers to leave.  0; or, having given up (the caller still holds
 * the rwsem and must release it), -ETIMEDOUT at @deadline_ns (a deadline
 * of 0 never waits: trylock), -EINTR with RWSEM_WAIT_KILLABLE when the task
 * is killed, RWSEM_WAIT_INTERRUPTED with RWSEM_WAIT_SIGNALS (call again to
 * resume).  *@waited_ns gets the time spent waiting.
 */
int bravo_revoke(struct mm_struct *mm, uint64_t deadline_ns, unsigned int flags,
		 uint64_t *waited_ns);
/* After a read acquisition of the rwsem: re-bias if the window has passed. */
void bravo_after_slow_read(struct mm_struct *mm);
/* Whether a writer waits for fast readers (for mmap_lock_is_contended). */
bool bravo_revoking(struct mm_struct *mm);

#endif /* MLN_MMAP_LOCK_BRAVO_H */
