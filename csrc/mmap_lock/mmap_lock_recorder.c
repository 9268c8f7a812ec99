/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_recorder.c - the per-mm event recorder (mmap_lock_trace.h): a
 * fixed buffer of struct mmap_lock_event that the three tracepoints append
 * to while it is attached to an mm.
 *
 * The buffer is one allocation: a header and capacity slots.  An emitter
 * reserves a slot with one fetch_add on `head`, so slots are filled in
 * reservation order with no lock; reservations at or past capacity are the
 * dropped events (dropped = head - capacity), never written anywhere.
 *
 * Attach: mmap_lock_record_start() publishes the recorder with a
 * compare-exchange NULL -> rec on mm->mmap_lock_recorder (two starters cannot
 * both win), then sets MMAP_LOCK_INSTR_RECORD so that the call sites take the
 * hooked path.
 *
 * Detach and drain, a Dekker-style handshake on two words of the mm: the
 * recorder pointer P and the count of emitters in flight I.
 *
 *   emitter (mmap_lock_record_event)      stopper (mmap_lock_record_stop)
 *     E1 fetch_add(I, 1)        seq_cst     S1 fetch_and(instr, ~RECORD)
 *     E2 rec = load(P)          seq_cst     S2 old = exchange(P, NULL) seq_cst
 *        if rec: reserve, fill the slot     S3 while load(I) != 0     seq_cst
 *     E3 fetch_sub(I, 1)        release     S4 return old (frozen)
 *
 * E1, E2, S2 and S3 are all seq_cst, so they lie in one total order S that
 * agrees with program order and with coherence order (as C++20 and RC11
 * read it).  If E2 read the old pointer, E2 precedes S2 in S, hence
 * E1 < E2 < S2 < S3 in S, and S3 reads E1's increment or a later value of
 * I: the stopper counts that emitter and waits for its E3.  If instead S3
 * precedes E1 in S, then S2 < E1 < E2 and E2 reads NULL (or the recorder of
 * a later start): a late emitter never touches the old buffer.  Either way,
 * once S3 reads 0 every emitter that holds the old pointer has passed E3.
 * Every write to I is a read-modify-write, so the value 0 that S3 reads ends
 * a release sequence headed by each earlier E3: the stopper synchronizes
 * with all of them and sees their slots whole.
 *
 * S3 must be seq_cst, not merely acquire: with an acquire load the pattern
 * above is store buffering, which only an all-seq_cst (or fenced) version
 * forbids in the C11 model (and gcc will not build fences with TSan).  It
 * costs nothing on the stop path.
 *
 * The drain waits for a moment with no emitter inside E1..E3, for any
 * recorder.  Emitters that find no recorder leave at once, and the call sites
 * stop calling in once they see RECORD clear, so in practice it waits for
 * the emissions already under way.  It is not wait-free: an unbroken overlap
 * of emitters (say, into a recorder another thread attached meanwhile)
 * keeps it spinning, yielding the CPU to them.
 *
 * A process-shared mm (RWSEM_SHARED) is refused with -ENOTSUP: the recorder
 * pointer would be stored where another process could follow it.
 *
 * RECORD is only a switch (mmap_lock_internal.h): it is changed with relaxed
 * RMWs and the buffer is reached through P alone.  A stop racing a start on
 * the same mm can leave RECORD set with nothing attached; that costs the
 * hooked path, never an event, and the next stop clears it.
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "futex.h"
#include "mm_types.h"
#include "mmap_lock_internal.h"
#include "mmap_lock_trace.h"
#include "rwsem.h"
#include "task_internal.h"

MLN_HOT_TLS _Thread_local uint16_t mmap_lock_caller;

/* Spins of the drain loop before each further look also yields the CPU. */
#define RECORDER_SPINS 128

struct mmap_lock_recorder {
	size_t capacity;
	/*
	 * Slots reserved so far, kept and dropped (64 bits even where size_t
	 * is 32, so that a long recording cannot wrap into the kept slots).
	 */
	_Atomic uint64_t head;
	struct mmap_lock_event events[];
};

int mmap_lock_record_start(struct mm_struct *mm, size_t capacity)
{
	struct mmap_lock_recorder *rec, *expected = NULL;

	if (capacity == 0 ||
	    capacity > (SIZE_MAX - sizeof(*rec)) / sizeof(struct mmap_lock_event))
		return -EINVAL;
	if (mm->mmap_lock.flags & RWSEM_SHARED)
		return -ENOTSUP;
	/* Cheap early answer; the compare-exchange below is what decides. */
	if (atomic_load_explicit(&mm->mmap_lock_recorder, memory_order_relaxed))
		return -EBUSY;
	rec = calloc(1, sizeof(*rec) + capacity * sizeof(struct mmap_lock_event));
	if (!rec)
		return -ENOMEM;
	rec->capacity = capacity;
	atomic_init(&rec->head, 0);
	/* seq_cst: publishes *rec to E2 (release part) and is in S with S2. */
	if (!atomic_compare_exchange_strong_explicit(&mm->mmap_lock_recorder, &expected, rec,
						     memory_order_seq_cst,
						     memory_order_relaxed)) {
		free(rec);
		return -EBUSY;
	}
	/* Relaxed: a switch; the buffer is reached through the pointer only. */
	atomic_fetch_or_explicit(&mm->mmap_lock_instr, MMAP_LOCK_INSTR_RECORD,
				 memory_order_relaxed);
	return 0;
}

void mmap_lock_record_event(struct mm_struct *mm, int event, bool write, bool success,
			    unsigned int op)
{
	struct mmap_lock_recorder *rec;

	/* E1, seq_cst: must precede E2 in S (see the top comment). */
	atomic_fetch_add_explicit(&mm->mmap_lock_rec_inflight, 1, memory_order_seq_cst);
	/* E2, seq_cst: ordered after E1 and against S2; acquires *rec. */
	rec = atomic_load_explicit(&mm->mmap_lock_recorder, memory_order_seq_cst);
	if (rec) {
		/* Relaxed: only atomicity is needed (a slot of our own). */
		uint64_t idx = atomic_fetch_add_explicit(&rec->head, 1, memory_order_relaxed);

		if (idx < rec->capacity) {
			struct mmap_lock_event *ev = &rec->events[idx];

			ev->ts_ns = mln_now_ns();
			ev->task = mln_current_task();
			ev->mm = (uint64_t)(uintptr_t)mm;
			ev->event = (uint8_t)event;
			ev->write = write;
			ev->success = success;
			ev->op = (uint8_t)op;
			ev->caller = mmap_lock_caller;
			ev->reserved = 0;
		}
	}
	/* E3, release: hands the slot's contents to the stopper's S3. */
	atomic_fetch_sub_explicit(&mm->mmap_lock_rec_inflight, 1, memory_order_release);
}

struct mmap_lock_recorder *mmap_lock_record_stop(struct mm_struct *mm)
{
	struct mmap_lock_recorder *rec;
	unsigned int spins = 0;

	/* S1, relaxed: a switch; call sites stop calling in once they see it. */
	atomic_fetch_and_explicit(&mm->mmap_lock_instr, ~MMAP_LOCK_INSTR_RECORD,
				  memory_order_relaxed);
	/* S2, seq_cst: in S with E2, so a later emitter reads NULL. */
	rec = atomic_exchange_explicit(&mm->mmap_lock_recorder, NULL, memory_order_seq_cst);
	if (!rec)
		return NULL;
	/* S3, seq_cst (not just acquire: see the top comment). */
	while (atomic_load_explicit(&mm->mmap_lock_rec_inflight, memory_order_seq_cst) != 0) {
		if (++spins < RECORDER_SPINS) {
			mln_cpu_relax();
		} else {
			spins = 0;
			sched_yield();
		}
	}
	return rec;
}

size_t mmap_lock_recorder_count(const struct mmap_lock_recorder *rec)
{
	/* Relaxed: the caller got @rec from stop(), which synchronized. */
	uint64_t head = atomic_load_explicit(&rec->head, memory_order_relaxed);

	return head < rec->capacity ? (size_t)head : rec->capacity;
}

uint64_t mmap_lock_recorder_dropped(const struct mmap_lock_recorder *rec)
{
	uint64_t head = atomic_load_explicit(&rec->head, memory_order_relaxed);

	return head > rec->capacity ? head - rec->capacity : 0;
}

const struct mmap_lock_event *mmap_lock_recorder_events(const struct mmap_lock_recorder *rec)
{
	return rec->events;
}

void mmap_lock_recorder_free(struct mmap_lock_recorder *rec)
{
	free(rec);
}

void mmap_lock_recorder_release_mm(struct mm_struct *mm)
{
	mmap_lock_recorder_free(mmap_lock_record_stop(mm));
}
