/* SPDX-License-Identifier: MIT */
/*
 * mm_inval.c - the invalidation queue of secondary MMUs (mm_inval.h).
 *
 * One queue per mm, made when its first consumer registers: a ring of the
 * last MM_INVAL_RING records, the invalidation count, and the union of the
 * ranges in progress (as KVM keeps mmu_invalidate_range_start/end while
 * mmu_invalidate_in_progress is non-zero).  The ring, the range and each
 * consumer's drain cursor change under the queue's futex mutex; invalidations
 * under the read lock (a copy-on-write break, MADV_DONTNEED) run in
 * parallel, so appending needs it.  The consumers' list changes under the
 * mmap write lock, and every invalidation runs under the mmap lock, so the
 * list is stable while it is walked.
 *
 * Two counts, as KVM keeps them.  Records are numbered as invalidations
 * start (q->seq): what a consumer drains, and what mm_tlb_enter() compares
 * with what it drained.  The count a consumer reads before a lookup
 * (mm_tlb_seq) counts invalidations that have *ended* (q->ended, KVM's
 * mmu_invalidate_seq, bumped in invalidate_range_end), and each ended
 * range is kept in a second ring.  A count of started ones would not do: an
 * invalidation that started before the consumer read it, and had not yet
 * changed the PTEs when the consumer looked the page up, could end before
 * the check, leaving nothing "since" the count and no range in progress.
 * With the ended count, the lookup either follows the change (the count was
 * read after it, with acquire) or the invalidation is in progress at the
 * check, or it ended after the count was read and its range is in the ring.
 *
 * Entering the guest against an invalidation is a store-buffering pair,
 * all four accesses seq_cst, so one of them sees the other:
 *
 *   consumer (mm_tlb_enter)              invalidator (mm_inval_start)
 *     C1 store(state, IN_GUEST)            N1 store(count, n)  (under the mutex)
 *     C2 load(count) != drained?           N2 load(state) == IN_GUEST?
 *        then leave: -EAGAIN                  then kick, wait until OUT
 *
 * In the single total order of seq_cst operations, C2 before N1 means C1
 * before N2: the invalidator sees IN_GUEST and waits.  N1 before C2 means
 * the consumer sees the new record and does not enter.  Either way no guest
 * runs with a translation the record removes once the invalidator goes on
 * to change the PTEs.  Leaving (C3 store OUT, then load the waiter count)
 * against the waiter (W1 add to the waiter count, then load state, then
 * sleep while IN_GUEST) is the same pattern, so a leaving consumer wakes a
 * waiter that has not seen it leave; the futex re-checks the word, and the
 * waiter also wakes and kicks again every millisecond at most, because a
 * kick that lands between C1 and the emulator's start of execution may be
 * lost (Unicorn's uc_emu_start clears a stop requested before it).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "futex.h"
#include "mm_internal.h"
#include "mmap_lock.h"

#define TLB_OUT 0u
#define TLB_IN_GUEST 1u
#define KICK_FIRST_NS 50000ull		/* first wait before kicking again */
#define KICK_MAX_NS 1000000ull		/* kick again at least this often */

struct mm_inval {
	_Atomic uint32_t lock;		/* futex mutex: both rings, the range, cursors */
	_Atomic uint64_t seq;		/* invalidations started; written under lock */
	_Atomic uint64_t ended;		/* invalidations ended: KVM's mmu_invalidate_seq */
	uint32_t in_progress;		/* started and not ended */
	uint64_t ip_start, ip_end;	/* union of those ranges */
	struct mm_tlb *tlbs;		/* under the mmap write lock */
	struct mm_inval_record ring[MM_INVAL_RING];	/* record n at n % MM_INVAL_RING */
	struct {
		uint64_t start, end;
	} done[MM_INVAL_RING];		/* the n-th range to end at n % MM_INVAL_RING */
};

struct mm_tlb {
	struct mm_tlb *next;
	struct mm_struct *mm;
	struct mm_inval *q;
	mm_tlb_kick_fn kick;
	void *kick_arg;
	int efd;
	_Atomic uint32_t state;		/* TLB_OUT / TLB_IN_GUEST: invalidators sleep on it */
	_Atomic uint32_t waiters;	/* invalidators waiting for it to leave */
	_Atomic uint32_t abandoned;
	_Atomic uint64_t drained;	/* records up to this number were drained */
	_Atomic uint64_t kicks;
};

MLN_HOT_TLS _Thread_local const struct mm_struct *mm_in_guest;

static bool overlaps(uint64_t s1, uint64_t e1, uint64_t s2, uint64_t e2)
{
	return s1 < e2 && s2 < e1;
}

/* Kick @t until it has left its guest. */
static void wait_out(struct mm_tlb *t)
{
	uint64_t delay = KICK_FIRST_NS;

	/* W1, seq_cst: against mm_tlb_exit()'s C3 and its load of the count. */
	atomic_fetch_add_explicit(&t->waiters, 1, memory_order_seq_cst);
	while (atomic_load_explicit(&t->state, memory_order_seq_cst) == TLB_IN_GUEST) {
		if (t->kick)
			t->kick(t->kick_arg);
		/* Relaxed: a statistic. */
		atomic_fetch_add_explicit(&t->kicks, 1, memory_order_relaxed);
		mln_futex_wait_until(&t->state, TLB_IN_GUEST, mln_now_ns() + delay,
				     FUTEX_BITSET_MATCH_ANY, 0);
		delay = delay * 2 < KICK_MAX_NS ? delay * 2 : KICK_MAX_NS;
	}
	/* Relaxed: only mm_tlb_exit() reads it, to skip a needless wake. */
	atomic_fetch_sub_explicit(&t->waiters, 1, memory_order_relaxed);
}

void mm_inval_start(struct mm_struct *mm, uint64_t start, uint64_t end, uint32_t reason,
		    uint32_t new_prot)
{
	struct mm_inval *q = mm->inval;
	uint64_t n;

	if (!q)
		return;
	mln_mutex_lock(&q->lock, 0);
	n = atomic_load_explicit(&q->seq, memory_order_relaxed) + 1;
	q->ring[n % MM_INVAL_RING] = (struct mm_inval_record){ start, end, n, reason, new_prot };
	if (q->in_progress++ == 0) {
		q->ip_start = start;
		q->ip_end = end;
	} else {
		q->ip_start = start < q->ip_start ? start : q->ip_start;
		q->ip_end = end > q->ip_end ? end : q->ip_end;
	}
	/* N1, seq_cst: see the top comment. */
	mln_store_before_load(&q->seq, n);
	mln_mutex_unlock(&q->lock, 0);
	for (struct mm_tlb *t = q->tlbs; t; t = t->next) {
		/* Acquire: pairs with mm_tlb_abandon(); after it, @t's owner may be gone. */
		if (atomic_load_explicit(&t->abandoned, memory_order_acquire))
			continue;
		if (t->efd >= 0)
			(void)eventfd_write(t->efd, 1);	/* cannot fail short of 2^64 - 1 */
		/* N2, seq_cst: see the top comment. */
		if (atomic_load_explicit(&t->state, memory_order_seq_cst) == TLB_IN_GUEST)
			wait_out(t);
	}
}

void mm_inval_end(struct mm_struct *mm, uint64_t start, uint64_t end)
{
	struct mm_inval *q = mm->inval;
	uint64_t n;

	if (!q)
		return;
	mln_mutex_lock(&q->lock, 0);
	q->in_progress--;
	n = atomic_load_explicit(&q->ended, memory_order_relaxed) + 1;
	q->done[n % MM_INVAL_RING].start = start;
	q->done[n % MM_INVAL_RING].end = end;
	/*
	 * Release: a consumer that reads this count (acquire, mm_tlb_seq) and
	 * then looks a page up sees the PTE change this invalidation made.
	 */
	atomic_store_explicit(&q->ended, n, memory_order_release);
	mln_mutex_unlock(&q->lock, 0);
}

static void tlb_free(struct mm_tlb *t)
{
	if (t->efd >= 0)
		close(t->efd);
	free(t);
}

/* Unlink and free the abandoned consumers; the write lock is held. */
static void reap_abandoned(struct mm_inval *q)
{
	struct mm_tlb **pp = &q->tlbs;

	while (*pp) {
		struct mm_tlb *t = *pp;

		if (atomic_load_explicit(&t->abandoned, memory_order_acquire)) {
			*pp = t->next;
			tlb_free(t);
		} else {
			pp = &t->next;
		}
	}
}

int mm_tlb_register(struct mm_struct *mm, mm_tlb_kick_fn kick, void *kick_arg,
		    unsigned int flags, struct mm_tlb **out)
{
	MM_OP(MM_OP_NOTIFIER);
	struct mm_tlb *t;
	int rc;

	rc = mm_refused(mm);
	if (rc)
		return rc;
	if (flags & ~(unsigned int)MM_TLB_EVENTFD)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->mm = mm;
	t->kick = kick;
	t->kick_arg = kick_arg;
	t->efd = -1;
	if ((flags & MM_TLB_EVENTFD) && (t->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		rc = -errno;
		free(t);
		return rc;
	}
	rc = mm_lock(mm, true);
	if (rc) {
		tlb_free(t);
		return rc;	/* refused: not held */
	}
	if (mm->mm_closed)
		rc = -EINVAL;
	else if (!mm->inval && !(mm->inval = calloc(1, sizeof(*mm->inval))))
		rc = -ENOMEM;
	if (rc) {
		mmap_write_unlock(mm);
		tlb_free(t);
		return rc;
	}
	t->q = mm->inval;
	/* Everything before now is not this consumer's business. */
	atomic_store_explicit(&t->drained, atomic_load_explicit(&t->q->seq, memory_order_relaxed),
			      memory_order_relaxed);
	reap_abandoned(t->q);
	t->next = t->q->tlbs;
	t->q->tlbs = t;
	mmap_write_unlock(mm);
	*out = t;
	return 0;
}

int mm_tlb_unregister(struct mm_tlb *tlb)
{
	MM_OP(MM_OP_NOTIFIER);
	struct mm_struct *mm = tlb->mm;
	int rc;

	rc = mm_refused(mm);
	if (rc)
		return rc;
	rc = mm_lock(mm, true);
	if (rc)
		return rc;
	for (struct mm_tlb **pp = &tlb->q->tlbs; *pp; pp = &(*pp)->next) {
		if (*pp == tlb) {
			*pp = tlb->next;
			break;
		}
	}
	reap_abandoned(tlb->q);
	mmap_write_unlock(mm);
	tlb_free(tlb);
	return 0;
}

void mm_tlb_abandon(struct mm_tlb *tlb)
{
	/* Release: after it, no invalidator calls the kick or waits (it loads with acquire). */
	atomic_store_explicit(&tlb->abandoned, 1, memory_order_release);
}

void mm_inval_free(struct mm_struct *mm)
{
	struct mm_inval *q = mm->inval;

	if (!q)
		return;
	while (q->tlbs) {
		struct mm_tlb *t = q->tlbs;

		q->tlbs = t->next;
		tlb_free(t);
	}
	free(q);
	mm->inval = NULL;
}

uint64_t mm_tlb_seq(const struct mm_tlb *tlb)
{
	/* Acquire: pairs with mm_inval_end(); see there. */
	return atomic_load_explicit(&tlb->q->ended, memory_order_acquire);
}

int mm_tlb_changed_since(struct mm_tlb *tlb, uint64_t seq, uint64_t start, uint64_t end)
{
	struct mm_inval *q = tlb->q;
	uint64_t now;
	int changed;

	mln_mutex_lock(&q->lock, 0);
	now = atomic_load_explicit(&q->ended, memory_order_relaxed);
	changed = q->in_progress && overlaps(start, end, q->ip_start, q->ip_end);
	if (!changed && seq != now) {
		if (seq > now || now - seq >= MM_INVAL_RING) {
			changed = 1;	/* not a count of ours, or older than the ring */
		} else {
			for (uint64_t n = seq + 1; n <= now && !changed; n++)
				changed = overlaps(start, end, q->done[n % MM_INVAL_RING].start,
						   q->done[n % MM_INVAL_RING].end);
		}
	}
	mln_mutex_unlock(&q->lock, 0);
	return changed;
}

size_t mm_tlb_drain(struct mm_tlb *tlb, struct mm_inval_record *out, size_t cap)
{
	struct mm_inval *q = tlb->q;
	uint64_t now, from;
	size_t n = 0;

	if (!cap)
		return 0;
	mln_mutex_lock(&q->lock, 0);
	now = atomic_load_explicit(&q->seq, memory_order_relaxed);
	from = atomic_load_explicit(&tlb->drained, memory_order_relaxed);
	if (now - from > MM_INVAL_RING) {
		out[n++] = (struct mm_inval_record){ 0, MM_TASK_SIZE, now, MM_INVAL_OVERFLOW, 0 };
		from = now;
	}
	while (from < now && n < cap)
		out[n++] = q->ring[++from % MM_INVAL_RING];
	/* Relaxed: the consumer's own cursor (mm_tlb_enter reads it on the same thread). */
	atomic_store_explicit(&tlb->drained, from, memory_order_relaxed);
	mln_mutex_unlock(&q->lock, 0);
	return n;
}

uint64_t mm_tlb_pending(const struct mm_tlb *tlb)
{
	/* Acquire: as mm_tlb_seq(). */
	return atomic_load_explicit(&tlb->q->seq, memory_order_acquire) -
	       atomic_load_explicit(&tlb->drained, memory_order_relaxed);
}

int mm_tlb_enter(struct mm_tlb *tlb)
{
	/* A host fork's copy: its windows show the parent's frames, so no guest runs on them. */
	if (mln_unlikely(mm_backing_stale(tlb->mm)))
		return -ESTALE;
	/* C1, seq_cst. */
	mln_store_before_load(&tlb->state, TLB_IN_GUEST);
	/* C2, seq_cst. */
	if (atomic_load_explicit(&tlb->q->seq, memory_order_seq_cst) !=
	    atomic_load_explicit(&tlb->drained, memory_order_relaxed)) {
		mm_tlb_exit(tlb);
		return -EAGAIN;
	}
	mm_in_guest = tlb->mm;
	return 0;
}

void mm_tlb_exit(struct mm_tlb *tlb)
{
	mm_in_guest = NULL;
	/* C3, seq_cst: against W1. */
	mln_store_before_load(&tlb->state, TLB_OUT);
	if (atomic_load_explicit(&tlb->waiters, memory_order_seq_cst))
		mln_futex_wake(&tlb->state, INT_MAX, FUTEX_BITSET_MATCH_ANY, 0);
}

int mm_tlb_eventfd(const struct mm_tlb *tlb)
{
	return tlb->efd;
}

uint64_t mm_tlb_kicks(const struct mm_tlb *tlb)
{
	return atomic_load_explicit(&tlb->kicks, memory_order_relaxed);
}
