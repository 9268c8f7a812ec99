/* SPDX-License-Identifier: MIT */
/*
 * mm_inval.h - invalidations for secondary MMUs, in the manner of KVM's
 * mmu_invalidate_seq: the emulator's TLB is a secondary MMU of the mm, and
 * this is its side of the MMU-notifier protocol, kept in C so that no
 * Python runs under the mmap lock (docs/embedding.md gives the protocol
 * and its ordering argument).
 *
 * Every invalidate_range_start of the mm (munmap, mprotect, a
 * copy-on-write break, MADV_DONTNEED, fork's write protection, mremap,
 * exit) appends a record (start, end, reason, new_prot) numbered by the
 * mm's invalidation count, marks the range in progress until its
 * invalidate_range_end, and, for each registered consumer (struct mm_tlb):
 *
 *   - signals its eventfd, if it asked for one;
 *   - if the consumer is inside its guest (mm_tlb_enter .. mm_tlb_exit),
 *     calls its kick (a C function: Unicorn's uc_emu_stop, say) and waits,
 *     kicking again now and then, until it has left: no guest access can
 *     use the old translation once the PTEs change.
 *
 * A consumer installs a translation only if no invalidation covering it
 * ended since it read the count and none is in progress
 * (mm_tlb_changed_since), enters its guest only with every record drained
 * (mm_tlb_enter refuses with -EAGAIN otherwise), and applies the records it
 * drains (mm_tlb_drain).  The ring keeps the last MM_INVAL_RING records; a
 * consumer that fell further behind drains one MM_INVAL_OVERFLOW record
 * covering everything.
 */
#ifndef MLN_MM_INVAL_H
#define MLN_MM_INVAL_H

#include <stddef.h>
#include <stdint.h>

struct mm_struct;

/* cffi:begin */
/* Why a range was invalidated. */
#define MM_INVAL_UNMAP 1	/* munmap, MAP_FIXED over it, brk shrinking, exit */
#define MM_INVAL_PROTECT 2	/* mprotect: new_prot is the new protection */
#define MM_INVAL_WRPROTECT 3	/* fork: private pages became copy-on-write (new_prot: no write) */
#define MM_INVAL_COW 4		/* a copy-on-write break: one page replaced by a copy */
#define MM_INVAL_DONTNEED 5	/* MADV_DONTNEED: the pages dropped, the mapping kept */
#define MM_INVAL_MOVE 6		/* mremap: the pages moved away from this range */
#define MM_INVAL_OVERFLOW 7	/* records were lost: forget every translation */

#define MM_INVAL_RING 256	/* records kept */

struct mm_inval_record {
	uint64_t start, end;	/* [start, end), page aligned */
	uint64_t seq;		/* its number: the invalidation count it made */
	uint32_t reason;	/* MM_INVAL_* */
	uint32_t new_prot;	/* PROT_* of the range after it; 0 where it is gone */
};

struct mm_tlb;
/* Makes @arg's guest leave soon (returns whatever: ignored).  Called with the mmap lock held. */
typedef int (*mm_tlb_kick_fn)(void *arg);

#define MM_TLB_EVENTFD 1	/* an eventfd signalled at each record (mm_tlb_eventfd) */

/*
 * Register a consumer of @mm's invalidations (takes the write lock): 0 and
 * *@out, or -errno (-ENOMEM, -EINVAL for bad flags or a closed mm, the
 * lock's refusal).  @kick may be NULL: then a consumer in its guest is
 * waited for without being kicked.
 */
int mm_tlb_register(struct mm_struct *mm, mm_tlb_kick_fn kick, void *kick_arg,
		    unsigned int flags, struct mm_tlb **out);
/* Unregister and free (takes the write lock): 0, or the lock's refusal (still registered). */
int mm_tlb_unregister(struct mm_tlb *tlb);
/*
 * For a finalizer that may not take the lock: stop kicking and waiting for
 * @tlb; its memory goes with the next unregister on its mm, or the mm.
 */
void mm_tlb_abandon(struct mm_tlb *tlb);

/*
 * The count of invalidations that have ended (KVM's mmu_invalidate_seq):
 * read it before looking a page up, and pass it to mm_tlb_changed_since().
 */
uint64_t mm_tlb_seq(const struct mm_tlb *tlb);
/*
 * 1 if an invalidation overlapping [start, end) is in progress, or ended
 * after count @seq was read (or may have: the ring no longer goes back that
 * far); else 0.  A translation looked up after reading @seq may be
 * installed only on 0.
 */
int mm_tlb_changed_since(struct mm_tlb *tlb, uint64_t seq, uint64_t start, uint64_t end);
/* Copy up to @cap records not yet drained into @out, oldest first: how many. */
size_t mm_tlb_drain(struct mm_tlb *tlb, struct mm_inval_record *out, size_t cap);
/* Records not yet drained. */
uint64_t mm_tlb_pending(const struct mm_tlb *tlb);
/*
 * Enter the guest: 0, or -EAGAIN if records are pending (drain, then enter
 * again), or -ESTALE on a host-backed mm a host fork() copied into this
 * process (its windows are the parent's memory).  From now until mm_tlb_exit(), on the same thread, the thread
 * must not call into the mm (-EDEADLK): an invalidation waits for it to
 * leave.  A consumer is one guest thread's: its calls come from one thread
 * at a time.
 */
int mm_tlb_enter(struct mm_tlb *tlb);
void mm_tlb_exit(struct mm_tlb *tlb);
/* The eventfd (MM_TLB_EVENTFD), or -1. */
int mm_tlb_eventfd(const struct mm_tlb *tlb);
/* Times this consumer was kicked, and waited for. */
uint64_t mm_tlb_kicks(const struct mm_tlb *tlb);
/* cffi:end */

/* The mm side (mm.c's notify calls, mm_free). */
void mm_inval_start(struct mm_struct *mm, uint64_t start, uint64_t end, uint32_t reason,
		    uint32_t new_prot);
void mm_inval_end(struct mm_struct *mm, uint64_t start, uint64_t end);
void mm_inval_free(struct mm_struct *mm);

#endif /* MLN_MM_INVAL_H */
