/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_bravo.c - the bravo design (mmap_lock_bravo.h).
 *
 * Orderings.  The fast path and the revocation are a Dekker pair: a reader
 * stores its slot, then loads the bias; a writer stores the bias, then loads
 * every slot, all sequentially consistent, so either the reader sees the
 * bias gone and backs out, or the writer sees the reader and waits.  A
 * leaving reader stores NULL, then loads `revoking`; a revoking writer
 * stores `revoking`, then loads the slot again before it sleeps: so a
 * reader that leaves while the writer goes to sleep wakes it (and the
 * futex word, read before that last look, catches a wake in between).
 * Data: the fast reader acquires the bias from the re-biasing reader, who
 * acquired the rwsem from the last writer; the writer acquires each slot's
 * NULL from the reader that left.
 */
#include <errno.h>
#include <limits.h>

#include "futex.h"
#include "mmap_lock_bravo.h"
#include "mmap_lock_stats_impl.h"
#include "reader_slots.h"
#include "rwsem_internal.h"
#include "task_internal.h"

/* Spins before a revoking writer sleeps: a fast reader's hold is often short. */
#define BRAVO_REVOKE_SPINS 2000u

static inline struct mmap_lock_bravo_state *bravo(struct mm_struct *mm)
{
	return &mm->mmap_lock_bravo;
}

/* The slot of every thread's line where @mm may be published (never 0, the VMA's). */
static unsigned int slot_index(const struct mm_struct *mm)
{
	uint64_t h = ((uintptr_t)mm >> 6) * 0x9e3779b97f4a7c15ull;	/* mms are 64-byte aligned */

	return 1 + (unsigned int)((h >> 32) % (MLN_READER_SLOTS - 1));
}

void bravo_init(struct mm_struct *mm)
{
	struct mmap_lock_bravo_state *b = bravo(mm);

	atomic_store_explicit(&b->rbias, BRAVO_OFF, memory_order_relaxed);
	atomic_store_explicit(&b->revoking, 0, memory_order_relaxed);
	atomic_store_explicit(&b->wake_seq, 0, memory_order_relaxed);
	atomic_store_explicit(&b->inhibit_until, 0, memory_order_relaxed);
	b->slot = slot_index(mm);
}

void bravo_reader_leave(struct mm_struct *mm, void *_Atomic *slot)
{
	struct mmap_lock_bravo_state *b = bravo(mm);

	mln_store_before_load(slot, NULL);
	if (mln_unlikely(atomic_load_explicit(&b->revoking, memory_order_seq_cst))) {
		atomic_fetch_add_explicit(&b->wake_seq, 1, memory_order_release);
		mln_futex_wake(&b->wake_seq, INT_MAX, FUTEX_BITSET_MATCH_ANY, 0);
	}
}

uint32_t bravo_fast_readers(struct mm_struct *mm)
{
	unsigned int high = mln_thread_index_high(), i = bravo(mm)->slot;
	uint32_t n = 0;

	for (unsigned int t = 1; t <= high; t++)
		n += atomic_load_explicit(mln_reader_slot_of(t, i), memory_order_relaxed) == mm;
	return n;
}

void bravo_writer_waits(struct mm_struct *mm)
{
	uint32_t on = BRAVO_ON;

	/* Relaxed: only a hint to new readers; the revocation is the real fence. */
	atomic_compare_exchange_strong_explicit(&bravo(mm)->rbias, &on, BRAVO_DRAINING,
						memory_order_relaxed, memory_order_relaxed);
}

bool bravo_revoking(struct mm_struct *mm)
{
	return atomic_load_explicit(&bravo(mm)->revoking, memory_order_relaxed) != 0;
}

/*
 * Wait for @slot to stop holding @mm: spin a little, then sleep on wake_seq
 * with the rwsem's give-up rules.  0, or as bravo_revoke().
 */
static int wait_fast_reader(struct mm_struct *mm, void *_Atomic *slot, uint64_t deadline_ns,
			    unsigned int flags, uint64_t poll_at)
{
	struct mmap_lock_bravo_state *b = bravo(mm);

	if (deadline_ns == 0)
		return -ETIMEDOUT;	/* trylock: never waits */
	for (unsigned int i = 0; i < BRAVO_REVOKE_SPINS; i++) {
		if (atomic_load_explicit(slot, memory_order_seq_cst) != mm)
			return 0;
		mln_cpu_relax();
	}
	for (;;) {
		uint64_t now, until;
		uint32_t seq;
		int rc, killed;

		mln_store_before_load(&b->revoking, 1);
		seq = atomic_load_explicit(&b->wake_seq, memory_order_acquire);
		if (atomic_load_explicit(slot, memory_order_seq_cst) != mm)
			return 0;
		now = mln_now_ns();
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		if ((flags & RWSEM_WAIT_SIGNALS) && now >= poll_at)
			return RWSEM_WAIT_INTERRUPTED;
		until = deadline_ns;
		if ((flags & RWSEM_WAIT_SIGNALS) && poll_at < until)
			until = poll_at;
		killed = mln_task_wait_begin(&b->wake_seq, 0);
		if (killed && (flags & RWSEM_WAIT_KILLABLE)) {
			mln_task_wait_end();
			return -EINTR;
		}
		rc = mln_futex_wait_until(&b->wake_seq, seq, until, FUTEX_BITSET_MATCH_ANY, 0);
		mln_task_wait_end();
		if (rc == -EINTR && (flags & RWSEM_WAIT_SIGNALS))
			return RWSEM_WAIT_INTERRUPTED;
	}
}

int bravo_revoke(struct mm_struct *mm, uint64_t deadline_ns, unsigned int flags,
		 uint64_t *waited_ns)
{
	struct mmap_lock_bravo_state *b = bravo(mm);
	unsigned int high, i = b->slot;
	uint64_t t0, now, inhibit, poll_at;
	int rc = 0;

	*waited_ns = 0;
	/*
	 * Off: the last revocation drained every fast reader, and none can
	 * have entered since (only a reader holding the rwsem re-biases, and
	 * we hold it for write).
	 */
	if (atomic_load_explicit(&b->rbias, memory_order_relaxed) == BRAVO_OFF)
		return 0;
	mln_store_before_load(&b->rbias, BRAVO_DRAINING);
	t0 = mln_now_ns();
	poll_at = t0 + RWSEM_SIGNAL_POLL_NS;
	high = mln_thread_index_high();
	for (unsigned int t = 1; t <= high && !rc; t++) {
		void *_Atomic *slot = mln_reader_slot_of(t, i);

		if (atomic_load_explicit(slot, memory_order_seq_cst) == mm)
			rc = wait_fast_reader(mm, slot, deadline_ns, flags, poll_at);
	}
	atomic_store_explicit(&b->revoking, 0, memory_order_relaxed);
	now = mln_now_ns();
	*waited_ns = now - t0;
	if (rc)
		return rc;	/* still DRAINING: the next writer scans again */
	atomic_store_explicit(&b->rbias, BRAVO_OFF, memory_order_relaxed);
	inhibit = BRAVO_INHIBIT_FACTOR * (now - t0);
	atomic_store_explicit(&b->inhibit_until, now + inhibit, memory_order_relaxed);
	{
		struct mmap_lock_stat_slot *s = mmap_lock_stat_slot_if_on(mm);

		if (s) {
			mmap_lock_stat_add(s, &s->bravo_revocations, 1);
			mmap_lock_stat_add(s, &s->bravo_inhibit_ns, inhibit);
		}
	}
	return 0;
}

void bravo_after_slow_read(struct mm_struct *mm)
{
	struct mmap_lock_bravo_state *b = bravo(mm);

	if (atomic_load_explicit(&b->rbias, memory_order_relaxed) == BRAVO_ON)
		return;
	/* Writer preference: with a writer queued, new readers must queue too. */
	if (atomic_load_explicit(&mm->mmap_lock.count, memory_order_relaxed) & RWSEM_FLAG_WAITERS)
		return;
	if (mln_now_ns() < atomic_load_explicit(&b->inhibit_until, memory_order_relaxed))
		return;
	/*
	 * Release: a fast reader that sees ON sees what the last writer wrote
	 * (we acquired the rwsem after it).  We hold the rwsem for read, so no
	 * writer is revoking now; the next one will see ON and scan.
	 */
	atomic_store_explicit(&b->rbias, BRAVO_ON, memory_order_release);
}
