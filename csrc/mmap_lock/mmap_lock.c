/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock.c - the mmap locking API over the rw_semaphore.
 *
 * Every call has two paths:
 *
 *  - plain: the rwsem fast path (rwsem_internal.h, inlined here so that we
 *    know whether it succeeded without a second call), then the per-thread
 *    statistics; a failed fast path goes to a separate out-of-line function
 *    that times the wait.  This is what runs with no hooks, no recorder and
 *    no debug mode: one extra load and branch over the rwsem's own cost.
 *
 *  - hooked: out of line, taken when trace hooks are set, a recorder is
 *    attached or the mm is in debug mode.  It consults the lock-order
 *    checker, fires the tracepoints where the kernel fires them, and runs
 *    the plain path in between.
 *
 * Tracepoint placement is that of current kernels: start_locking before the
 * acquisition, acquire_returned after it (trylock and killable included,
 * with their success), released before the release, and downgrade reported
 * as a successful read acquisition before downgrade_write().
 *
 * The sequence count mm_lock_seq follows the kernel's: bumped to odd after
 * the write lock is taken (the killable and try variants only on success),
 * and back to even before up_write() or downgrade_write().  Only the write
 * holder writes it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lockdep.h"
#include "mmap_lock.h"
#include "mmap_lock_backend.h"
#include "mmap_lock_bravo.h"
#include "mmap_lock_internal.h"
#include "mmap_lock_stats.h"
#include "mmap_lock_stats_impl.h"
#include "mmap_lock_trace.h"
#include "rwsem_internal.h"
#include "thread_index.h"

#define always_inline inline __attribute__((always_inline))

static always_inline bool is_hooked(uint32_t instr)
{
#ifdef MMAP_LOCK_NO_TRACE
	(void)instr;
	return false;
#else
	/* Trace hooks set mirror into each mm's word: one test of a word loaded anyway. */
	return mln_unlikely(instr & MMAP_LOCK_INSTR_HOOKED);
#endif
}

static always_inline bool stats_on(uint32_t instr)
{
	return !(instr & MMAP_LOCK_INSTR_NOSTATS);
}

/* Fire a tracepoint and record it (the hooked path only). */
static void trace_event(struct mm_struct *mm, int event, bool write, bool success,
			unsigned int op)
{
	if (atomic_load_explicit(&mmap_lock_hooks_on, memory_order_relaxed))
		mmap_lock_hooks_fire(mm, event, write, success);
	if (mm_instr(mm) & MMAP_LOCK_INSTR_RECORD)
		mmap_lock_record_event(mm, event, write, success, op);
}

/* ------------------------------------------------------------------------
 * The write-section sequence count (a seqcount whose readers never spin).
 */
/*
 * ThreadSanitizer does not model fences (gcc refuses them under
 * -fsanitize=thread): there, the two fences below become read-modify-writes,
 * which order the same way at the cost of a write by speculating readers.
 */
#if defined(__SANITIZE_THREAD__)
#define SEQ_FENCES_AS_RMW 1
#endif

/*
 * Begin always leaves the count odd and end always even, and both always
 * move it: a write section opened or closed through the bare rwsem
 * (down_write(&mm->mmap_lock) then mmap_write_unlock) must neither flip the
 * parity for good (every later section would look quiet to speculating
 * readers) nor go unnoticed by a speculation that spans it.
 */
static always_inline void seq_write_begin(struct mm_struct *mm)
{
	uint32_t s = atomic_load_explicit(&mm->mm_lock_seq, memory_order_relaxed);
	uint32_t step = mln_unlikely(s & 1) ? 2 : 1;	/* odd already: stay odd, still move */

#ifdef SEQ_FENCES_AS_RMW
	(void)s;
	atomic_fetch_add_explicit(&mm->mm_lock_seq, step, memory_order_seq_cst);
#else
	atomic_store_explicit(&mm->mm_lock_seq, s + step, memory_order_relaxed);
	/* Release fence: the odd count is visible before any store of the section. */
	atomic_thread_fence(memory_order_release);
#endif
}

static always_inline void seq_write_end(struct mm_struct *mm)
{
	uint32_t s = atomic_load_explicit(&mm->mm_lock_seq, memory_order_relaxed);
	uint32_t step = mln_unlikely(!(s & 1)) ? 2 : 1;	/* even already: stay even, still move */

	/* Release: the section's stores are visible before the even count. */
	atomic_store_explicit(&mm->mm_lock_seq, s + step, memory_order_release);
}

int mmap_lock_speculate_try_begin(struct mm_struct *mm, unsigned int *seq)
{
	/* Acquire: what the reader reads next is no older than this count. */
	uint32_t s = atomic_load_explicit(&mm->mm_lock_seq, memory_order_acquire);

	*seq = s;
	return !(s & 1);
}

int mmap_lock_speculate_retry(struct mm_struct *mm, unsigned int seq)
{
#ifdef SEQ_FENCES_AS_RMW
	/* Release RMW: the reader's loads above complete before the re-read. */
	return atomic_fetch_add_explicit(&mm->mm_lock_seq, 0, memory_order_acq_rel) != seq;
#else
	/* Acquire fence: the reader's loads above complete before the re-read. */
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&mm->mm_lock_seq, memory_order_relaxed) != seq;
#endif
}

/* ------------------------------------------------------------------------
 * Acquisition.
 */

/* One non-blocking attempt that leaves nothing behind when it fails. */
static always_inline bool try_once(struct rw_semaphore *sem, unsigned int op)
{
	if (op & MMAP_OP_WRITE) {
		if (!write_fast(sem))	/* a shared mm's count fails it: its trylock decides */
			return mln_unlikely(is_shared(sem)) && down_write_trylock(sem);
		set_writer_owned(sem);
		return true;
	}
	return op & MMAP_OP_NON_OWNER ? down_read_trylock_non_owner(sem) : down_read_trylock(sem);
}

static unsigned int wait_flags(unsigned int op)
{
	return (op & MMAP_OP_KILLABLE ? RWSEM_WAIT_KILLABLE : 0) |
	       (op & MMAP_OP_NON_OWNER ? RWSEM_WAIT_NON_OWNER : 0);
}

/* What ends every acquisition that did not take the fast path. */
static void acquire_done(struct mm_struct *mm, unsigned int op, int rc, uint64_t wait_ns)
{
	int write = !!(op & MMAP_OP_WRITE);

	/* -EOWNERDEAD (a shared mm whose last write holder died) is held too. */
	if ((rc == 0 || rc == -EOWNERDEAD) && write)
		seq_write_begin(mm);
	if (stats_on(mm_instr(mm))) {
		if (rc == 0)
			mmap_lock_stat_contended(mm, write, wait_ns, !(op & MMAP_OP_NON_OWNER));
		else
			mmap_lock_stat_failed(mm, write, rc, !!(op & MMAP_OP_TRY), wait_ns);
	}
}

/*
 * A write acquisition that has to wait: -EDEADLK if the calling thread
 * holds the lock for read itself (it would wait for itself forever, as the
 * rwsem refuses a write owner's recursion), else 0.  Read holds are known
 * from the thread's statistics block, or bravo's reader line.
 */
static int self_read_deadlock(struct mm_struct *mm, uint32_t instr)
{
	if ((instr & MMAP_LOCK_INSTR_BRAVO) && bravo_fast_hold(mm))
		return -EDEADLK;
	return mmap_lock_stat_holds_read(mm) ? -EDEADLK : 0;
}

/* The fast path failed (and a reader's bias is still in the count). */
static __attribute__((noinline)) int acquire_contended(struct mm_struct *mm, unsigned int op)
{
	struct rw_semaphore *sem = &mm->mmap_lock;
	uint64_t t0 = mln_now_ns();
	int rc;

	if (op & MMAP_OP_WRITE) {
		rc = self_read_deadlock(mm, mm_instr(mm));
		if (!rc)
			rc = rwsem_down_write_slowpath(sem, MLN_NO_DEADLINE, wait_flags(op));
	} else {
		rc = rwsem_down_read_slowpath(sem, MLN_NO_DEADLINE, wait_flags(op));
	}
	acquire_done(mm, op, rc, mln_now_ns() - t0);
	return rc;
}

static __attribute__((noinline)) int trylock_failed(struct mm_struct *mm, unsigned int op)
{
	acquire_done(mm, op, -EBUSY, 0);
	return -EBUSY;
}

/* Acquire without hooks: 0, -EBUSY (trylock), or as the rwsem slow paths. */
static always_inline int acquire_plain(struct mm_struct *mm, unsigned int op, uint32_t instr)
{
	struct rw_semaphore *sem = &mm->mmap_lock;
	int write = !!(op & MMAP_OP_WRITE);
	/* Before the atomic: a locked RMW holds back the loads that follow it. */
	struct mmap_lock_stat_slot *slot = stats_on(instr) ? mmap_lock_stat_slot(mm) : NULL;

	if (op & MMAP_OP_TRY) {
		if (mln_unlikely(!try_once(sem, op)))
			return trylock_failed(mm, op);
	} else if (write) {
		if (mln_unlikely(!write_fast(sem)))
			return acquire_contended(mm, op);
		set_writer_owned(sem);
	} else {
		if (mln_unlikely(!read_fast(sem)))
			return acquire_contended(mm, op);
		set_reader_owned(sem, false);
	}
	if (write)
		seq_write_begin(mm);
	if (stats_on(instr))
		mmap_lock_stat_acquired_in(mm, slot, write, !(op & MMAP_OP_NON_OWNER));
	return 0;
}

static int mm_class(struct mm_struct *mm)
{
	return (int)atomic_load_explicit(&mm->mmap_lock_class, memory_order_relaxed);
}

/* ------------------------------------------------------------------------
 * Another lock backend (mmap_lock_backend.h), always on the hooked path.
 * The layer tracks the holders (the write owner's task, the read holds) for
 * the misuse checks and assertions that the rwsem answers from its state.
 * Read holds are counted per thread (thread_index.h) and summed when asked,
 * so that tracking them writes no line another reader writes; a thread that
 * releases a hold another took goes negative, the sum stays right.
 */
struct mmap_lock_alt_reads {
	_Atomic int64_t n;
} __attribute__((aligned(64)));

static void alt_reads_add(struct mm_struct *mm, int64_t d)
{
	unsigned int t = mln_thread_index();
	_Atomic int64_t *c = &mm->mmap_lock_alt_state.reads[t].n;

	if (mln_unlikely(t == MLN_THREAD_OVERFLOW))
		atomic_fetch_add_explicit(c, d, memory_order_relaxed);
	else	/* its only writer */
		atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
				      memory_order_relaxed);
}

/* Read holds, all threads: a racy sum, exact while nobody locks or unlocks. */
static int64_t alt_reads(struct mm_struct *mm)
{
	int64_t sum = 0;

	for (unsigned int t = 0; t <= MLN_THREAD_OVERFLOW; t++)
		sum += atomic_load_explicit(&mm->mmap_lock_alt_state.reads[t].n,
					    memory_order_relaxed);
	return sum;
}

static uint64_t alt_writer(struct mm_struct *mm)
{
	return atomic_load_explicit(&mm->mmap_lock_alt_state.writer, memory_order_relaxed);
}

static void alt_set_writer(struct mm_struct *mm, uint64_t task)
{
	atomic_store_explicit(&mm->mmap_lock_alt_state.writer, task, memory_order_relaxed);
}

static void alt_note_acquired(struct mm_struct *mm, bool write)
{
	if (write)
		alt_set_writer(mm, mln_current_task());
	else
		alt_reads_add(mm, 1);
}

static bool alt_write_owner(struct mm_struct *mm)
{
	return alt_writer(mm) == mln_current_task();
}

/* One attempt that never waits (nor for ourselves: that is -EDEADLK later). */
static bool alt_try(struct mm_struct *mm, unsigned int op)
{
	bool write = op & MMAP_OP_WRITE;

	if (alt_write_owner(mm) || mm->mmap_lock_alt->lock(mm, write, true))
		return false;
	alt_note_acquired(mm, write);
	return true;
}

/*
 * A backend's wait, in slices of RWSEM_SIGNAL_POLL_NS: between slices it
 * gives up on a kill (killable waits) or the deadline, and with
 * RWSEM_WAIT_SIGNALS returns RWSEM_WAIT_INTERRUPTED so that a binding can
 * run its signal handlers, as rwsem_down_wait() does.  The glibc locks
 * cannot be woken early, so a kill is noticed within one slice.
 */
static int alt_wait(struct mm_struct *mm, unsigned int op, uint64_t deadline_ns,
		    unsigned int flags)
{
	const struct mmap_lock_backend *b = mm->mmap_lock_alt;
	bool write = op & MMAP_OP_WRITE;

	if (alt_write_owner(mm) || (write && self_read_deadlock(mm, 0)))
		return -EDEADLK;	/* as the rwsem: we would wait for ourselves */
	for (;;) {
		uint64_t now = mln_now_ns(), until = now + RWSEM_SIGNAL_POLL_NS;

		if ((op & MMAP_OP_KILLABLE) && mln_current_task_killed())
			return -EINTR;
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		if (b->lock_until(mm, write, until < deadline_ns ? until : deadline_ns) == 0) {
			alt_note_acquired(mm, write);
			return 0;
		}
		if (flags & RWSEM_WAIT_SIGNALS)
			return RWSEM_WAIT_INTERRUPTED;
	}
}

/* The C API's acquisition on a backend: waits for good unless killable. */
static int alt_acquire(struct mm_struct *mm, unsigned int op, uint32_t instr)
{
	bool write = op & MMAP_OP_WRITE;
	uint64_t t0;
	int rc;

	if (alt_try(mm, op)) {
		if (write)
			seq_write_begin(mm);
		if (stats_on(instr))
			mmap_lock_stat_acquired(mm, write, !(op & MMAP_OP_NON_OWNER));
		return 0;
	}
	if (op & MMAP_OP_TRY)
		return trylock_failed(mm, op);
	t0 = mln_now_ns();
	rc = alt_wait(mm, op, MLN_NO_DEADLINE, 0);
	acquire_done(mm, op, rc, mln_now_ns() - t0);
	return rc;
}

static bool alt_release_allowed(struct mm_struct *mm, unsigned int op)
{
	unsigned int t = mln_thread_index();

	if (op & MMAP_OP_WRITE)
		return alt_write_owner(mm);
	/* Our own hold is the common case, and one load; else sum them all. */
	return atomic_load_explicit(&mm->mmap_lock_alt_state.reads[t].n,
				    memory_order_relaxed) > 0 || alt_reads(mm) > 0;
}

static int alt_release(struct mm_struct *mm, unsigned int op)
{
	bool write = op & MMAP_OP_WRITE;

	mmap_lock_stat_released(mm, write);
	if (write) {
		seq_write_end(mm);
		alt_set_writer(mm, 0);
	} else {
		alt_reads_add(mm, -1);
		if (!(op & MMAP_OP_NON_OWNER))
			mmap_lock_stat_read_released(mm);
	}
	mm->mmap_lock_alt->unlock(mm, write);
	return 0;
}

/* ------------------------------------------------------------------------
 * The bravo design (mmap_lock_bravo.h), on the hooked path: the rwsem with
 * a reader bias.  The rwsem paths above do the work; bravo adds the fast
 * read path and, once a writer holds the rwsem, the revocation.
 */
static void stat_fast_read(struct mm_struct *mm, uint32_t instr)
{
	struct mmap_lock_stat_slot *s;

	if (!stats_on(instr))
		return;
	s = mmap_lock_stat_slot(mm);
	mmap_lock_stat_acquired_in(mm, s, 0, true);
	if (s)
		mmap_lock_stat_add(s, &s->bravo_fast_reads, 1);
}

/* A write trylock on bravo: the rwsem's, then a revocation that must not wait. */
static bool bravo_try_write(struct mm_struct *mm)
{
	uint64_t waited;

	if (!try_once(&mm->mmap_lock, MMAP_OP_WRITE))
		return false;
	if (bravo_revoke(mm, 0, 0, &waited) == 0)
		return true;
	rwsem_up_write_owned(&mm->mmap_lock);
	return false;
}

/* One non-blocking attempt on bravo (side effects as try_once()'s). */
static bool bravo_try(struct mm_struct *mm, unsigned int op)
{
	if (op & MMAP_OP_WRITE)
		return bravo_try_write(mm);
	if (!(op & MMAP_OP_NON_OWNER) && bravo_read_fast(mm))
		return true;
	if (!try_once(&mm->mmap_lock, op))
		return false;
	bravo_after_slow_read(mm);
	return true;
}

static int bravo_acquire(struct mm_struct *mm, unsigned int op, uint32_t instr)
{
	struct rw_semaphore *sem = &mm->mmap_lock;
	uint64_t t0 = 0, waited;
	int rc;

	if (!(op & MMAP_OP_WRITE)) {
		if (!(op & MMAP_OP_NON_OWNER) && bravo_read_fast(mm)) {
			stat_fast_read(mm, instr);
			return 0;
		}
		rc = acquire_plain(mm, op, instr);
		if (rc == 0)
			bravo_after_slow_read(mm);
		return rc;
	}
	if (op & MMAP_OP_TRY) {
		if (!bravo_try_write(mm))
			return trylock_failed(mm, op);
		goto uncontended;
	}
	rc = self_read_deadlock(mm, instr);
	if (rc) {
		acquire_done(mm, op, rc, 0);
		return rc;
	}
	if (!write_fast(sem)) {
		t0 = mln_now_ns();
		bravo_writer_waits(mm);
		rc = rwsem_down_write_slowpath(sem, MLN_NO_DEADLINE, wait_flags(op));
		if (rc) {
			acquire_done(mm, op, rc, mln_now_ns() - t0);
			return rc;
		}
	} else {
		set_writer_owned(sem);
	}
	rc = bravo_revoke(mm, MLN_NO_DEADLINE, wait_flags(op), &waited);
	if (rc)
		rwsem_up_write_owned(sem);
	if (rc || t0 || waited) {
		acquire_done(mm, op, rc, t0 ? mln_now_ns() - t0 : waited);
		return rc;
	}
uncontended:
	seq_write_begin(mm);
	if (stats_on(instr))
		mmap_lock_stat_acquired(mm, 1, true);
	return 0;
}

static bool tracked(uint32_t instr, unsigned int op)
{
	return (instr & MMAP_LOCK_INSTR_DEBUG) && !(op & MMAP_OP_NON_OWNER);
}

static int subclass_of(unsigned int op, int subclass)
{
	return op & MMAP_OP_NESTED ? subclass : 0;
}

/*
 * The kernel's return value of a call: 1/0 for a trylock, else 0 or -errno.
 * Converted here, not by the public functions, so that they end in tail calls.
 */
static always_inline int result(unsigned int op, int rc)
{
	return op & MMAP_OP_TRY ? rc == 0 : rc;
}

/*
 * The public functions reach the hooked paths by a tail call (sibling-call
 * optimisation, -O2), so this function's return address is their caller's:
 * the acquisition site the checker records.  Fetching it here, not in the
 * public function, keeps the fast path free of a stack frame.  (Without the
 * tail call, as in the -O1 sanitizer builds, the site names the API function.)
 */
#define CALLER __builtin_return_address(0)

/* The instrumentation word, putting a statically initialised mm on the list first. */
static uint32_t hooked_instr(struct mm_struct *mm)
{
	uint32_t instr = mm_instr(mm);

	if (mln_unlikely(instr & MMAP_LOCK_INSTR_UNREGISTERED)) {
		mmap_lock_register(mm);
		instr = mm_instr(mm);
	}
	return instr;
}

static __attribute__((noinline)) int acquire_hooked(struct mm_struct *mm, unsigned int op,
						    int subclass)
{
	uint32_t instr = hooked_instr(mm);
	bool write = op & MMAP_OP_WRITE;
	int rc;

	if (tracked(instr, op)) {
		rc = mln_lockdep_acquire(mm, mm_class(mm), subclass_of(op, subclass),
					 write, !!(op & MMAP_OP_TRY), CALLER);
		if (rc)
			return result(op, rc);
	}
	trace_event(mm, MMAP_LOCK_EV_START_LOCKING, write, false, op);
	if (instr & MMAP_LOCK_INSTR_ALT)
		rc = alt_acquire(mm, op, instr);
	else if (instr & MMAP_LOCK_INSTR_BRAVO)
		rc = bravo_acquire(mm, op, instr);
	else
		rc = acquire_plain(mm, op, instr);
	trace_event(mm, MMAP_LOCK_EV_ACQUIRE_RETURNED, write, rc == 0, op);
	if (tracked(instr, op))
		mln_lockdep_acquired(mm, rc == 0);
	return result(op, rc);
}

/*
 * bravo with nothing else hooked: a read that the bias lets in is done here,
 * inline, without the hooked path's checks (which would find nothing to do).
 */
static always_inline bool bravo_only(uint32_t instr, unsigned int op)
{
	return (instr & MMAP_LOCK_INSTR_HOOKED) == MMAP_LOCK_INSTR_BRAVO &&
	       !(op & (MMAP_OP_WRITE | MMAP_OP_NON_OWNER));
}

static always_inline int acquire(struct mm_struct *mm, unsigned int op, int subclass)
{
	uint32_t instr = mm_instr(mm);

	if (is_hooked(instr)) {
		if (bravo_only(instr, op) && bravo_read_fast(mm)) {
			stat_fast_read(mm, instr);
			return result(op, 0);
		}
		return acquire_hooked(mm, op, subclass);
	}
	return result(op, acquire_plain(mm, op, instr));
}

int mmap_write_lock(struct mm_struct *mm)
{
	return acquire(mm, MMAP_OP_WRITE, 0);
}

int mmap_write_lock_nested(struct mm_struct *mm, int subclass)
{
	if (subclass < 0 || subclass >= RWSEM_MAX_SUBCLASSES)
		return -EINVAL;
	return acquire(mm, MMAP_OP_WRITE | MMAP_OP_NESTED, subclass);
}

int mmap_write_lock_killable(struct mm_struct *mm)
{
	return acquire(mm, MMAP_OP_WRITE | MMAP_OP_KILLABLE, 0);
}

int mmap_write_trylock(struct mm_struct *mm)
{
	return acquire(mm, MMAP_OP_WRITE | MMAP_OP_TRY, 0);
}

int mmap_read_lock(struct mm_struct *mm)
{
	return acquire(mm, 0, 0);
}

int mmap_read_lock_killable(struct mm_struct *mm)
{
	return acquire(mm, MMAP_OP_KILLABLE, 0);
}

int mmap_read_trylock(struct mm_struct *mm)
{
	return acquire(mm, MMAP_OP_TRY, 0);
}

/* The lock-order checker never sees it: another task may release it. */
int mmap_read_trylock_non_owner(struct mm_struct *mm)
{
	return acquire(mm, MMAP_OP_TRY | MMAP_OP_NON_OWNER, 0);
}

/* ------------------------------------------------------------------------
 * Release.
 */
/*
 * Whether the release may go ahead: the write owner for a write release, a
 * read-held lock for a read release.  The hooked path checks it before the
 * tracepoint, so that a refused misuse fires nothing.  (A read release by a task holding nothing, while others hold it
 * for read, cannot be told apart here, as in the rwsem; debug mode can.)
 */
static always_inline bool release_allowed(struct rw_semaphore *sem, unsigned int op)
{
	uint32_t c = atomic_load_explicit(&sem->count, memory_order_relaxed);

	if (op & MMAP_OP_WRITE)
		return is_write_owner(sem, c);
	return (c & RWSEM_READER_MASK) && !(c & RWSEM_WRITER_LOCKED);
}

/*
 * Release; a write release's ownership was checked by the caller (it must
 * be, before the sequence count moves), a read release checks itself in
 * up_read()'s compare-exchange.  (A refused read release keeps the hold
 * sample: the task's sample is then of a write hold, which it keeps.)
 */
static always_inline int release_plain(struct mm_struct *mm, unsigned int op)
{
	struct rw_semaphore *sem = &mm->mmap_lock;
	int rc;

	mmap_lock_stat_released(mm, !!(op & MMAP_OP_WRITE));
	if (op & MMAP_OP_WRITE) {
		seq_write_end(mm);
		return rwsem_up_write_owned(sem);
	}
	if (op & MMAP_OP_NON_OWNER)
		return up_read_non_owner(sem);
	rc = up_read(sem);
	if (mln_likely(rc == 0))
		mmap_lock_stat_read_released(mm);
	return rc;
}

static __attribute__((noinline)) int release_hooked(struct mm_struct *mm, unsigned int op)
{
	uint32_t instr = hooked_instr(mm);
	bool untracked_release = false;
	void *_Atomic *fast;
	int rc;

	if (tracked(instr, op) && !mln_lockdep_held(mm, 0)) {
		/* Reported (and, in raise mode, refused) before the lock is touched. */
		rc = mln_lockdep_release(mm, CALLER);
		if (rc)
			return rc;
		untracked_release = true;
	}
	fast = (instr & MMAP_LOCK_INSTR_BRAVO) && !(op & (MMAP_OP_WRITE | MMAP_OP_NON_OWNER)) ?
		       bravo_fast_hold(mm) : NULL;
	if (!fast && !(instr & MMAP_LOCK_INSTR_ALT ? alt_release_allowed(mm, op)
						   : release_allowed(&mm->mmap_lock, op)))
		return -EPERM;
	trace_event(mm, MMAP_LOCK_EV_RELEASED, op & MMAP_OP_WRITE, false, op);
	if (fast) {
		mmap_lock_stat_released(mm, 0);
		bravo_reader_leave(mm, fast);
		mmap_lock_stat_read_released(mm);
		rc = 0;
	} else {
		rc = instr & MMAP_LOCK_INSTR_ALT ? alt_release(mm, op) : release_plain(mm, op);
	}
	if (rc == 0 && tracked(instr, op) && !untracked_release)
		mln_lockdep_release(mm, CALLER);
	return rc;
}

static always_inline int release(struct mm_struct *mm, unsigned int op)
{
	uint32_t instr = mm_instr(mm);

	if (is_hooked(instr)) {
		void *_Atomic *fast;

		if (bravo_only(instr, op) && (fast = bravo_fast_hold(mm))) {
			mmap_lock_stat_released(mm, 0);
			bravo_reader_leave(mm, fast);
			mmap_lock_stat_read_released(mm);
			return 0;
		}
		return release_hooked(mm, op);
	}
	if ((op & MMAP_OP_WRITE) &&
	    mln_unlikely(!is_write_owner(&mm->mmap_lock, atomic_load_explicit(
						     &mm->mmap_lock.count, memory_order_relaxed))))
		return -EPERM;
	return release_plain(mm, op);
}

int mmap_write_unlock(struct mm_struct *mm)
{
	return release(mm, MMAP_OP_WRITE);
}

int mmap_read_unlock(struct mm_struct *mm)
{
	return release(mm, 0);
}

int mmap_read_unlock_non_owner(struct mm_struct *mm)
{
	return release(mm, MMAP_OP_NON_OWNER);
}

int mmap_write_downgrade(struct mm_struct *mm)
{
	struct rw_semaphore *sem = &mm->mmap_lock;
	uint32_t instr = mm_instr(mm);
	int rc;

	if (instr & MMAP_LOCK_INSTR_ALT ? !alt_write_owner(mm)
					 : !is_write_owner(sem, atomic_load_explicit(
								&sem->count, memory_order_relaxed)))
		return -EPERM;
	if (is_hooked(instr))
		trace_event(mm, MMAP_LOCK_EV_ACQUIRE_RETURNED, false, true, 0);
	seq_write_end(mm);
	if (instr & MMAP_LOCK_INSTR_ALT) {
		/* Not atomic for these backends: a writer may get in between. */
		alt_set_writer(mm, 0);
		mm->mmap_lock_alt->unlock(mm, true);
		mm->mmap_lock_alt->lock(mm, false, false);
		alt_note_acquired(mm, false);
		rc = 0;
	} else {
		rc = downgrade_write(sem);
	}
	if (rc == 0) {
		if (tracked(instr, 0))
			mln_lockdep_downgrade(mm);
		if (stats_on(instr))
			mmap_lock_stat_downgrade(mm);
	}
	return rc;
}

/* ------------------------------------------------------------------------
 * Resumable acquisitions for bindings.
 */
#define MMAP_OP_ALL (MMAP_OP_WRITE | MMAP_OP_KILLABLE | MMAP_OP_TRY | MMAP_OP_NON_OWNER | \
		     MMAP_OP_NESTED)

static bool op_valid(unsigned int op, int subclass)
{
	if (op & ~MMAP_OP_ALL)
		return false;
	if ((op & MMAP_OP_NON_OWNER) && (op & MMAP_OP_WRITE))
		return false;
	if (op & MMAP_OP_NESTED)
		return (op & MMAP_OP_WRITE) && subclass >= 0 && subclass < RWSEM_MAX_SUBCLASSES;
	return subclass == 0;
}

/* acquire_returned, the checker and the statistics for a finished call. */
static void binding_finish(struct mm_struct *mm, unsigned int op, int rc, uint64_t wait_ns)
{
	uint32_t instr = mm_instr(mm);

	acquire_done(mm, op, rc, wait_ns);
	if (is_hooked(instr)) {
		trace_event(mm, MMAP_LOCK_EV_ACQUIRE_RETURNED, op & MMAP_OP_WRITE, rc == 0, op);
		if (tracked(instr, op))
			mln_lockdep_acquired(mm, rc == 0);
	}
}

/* One non-blocking attempt on whatever lock the mm's design is. */
static always_inline bool design_try(struct mm_struct *mm, unsigned int op, uint32_t instr)
{
	if (mln_unlikely(instr & MMAP_LOCK_INSTR_ALT))
		return alt_try(mm, op);
	if (mln_unlikely(instr & MMAP_LOCK_INSTR_BRAVO))
		return bravo_try(mm, op);
	return try_once(&mm->mmap_lock, op);
}

static always_inline int lock_begin(struct mm_struct *mm, unsigned int op, int subclass)
{
	uint32_t instr = mm_instr(mm);
	int write = !!(op & MMAP_OP_WRITE);

	if (mln_unlikely(!op_valid(op, subclass)))
		return -EINVAL;
	if (mln_unlikely(is_hooked(instr))) {
		instr = hooked_instr(mm);
		if (tracked(instr, op)) {
			/* No return address worth printing: the binding's site hook names it. */
			int rc = mln_lockdep_acquire(mm, mm_class(mm),
						     subclass_of(op, subclass), write,
						     !!(op & MMAP_OP_TRY), NULL);
			if (rc)
				return rc;
		}
		trace_event(mm, MMAP_LOCK_EV_START_LOCKING, write, false, op);
	}
	if (mln_likely(design_try(mm, op, instr))) {
		if (write)
			seq_write_begin(mm);
		if (stats_on(instr))
			mmap_lock_stat_acquired(mm, write, !(op & MMAP_OP_NON_OWNER));
		if (mln_unlikely(is_hooked(instr))) {
			trace_event(mm, MMAP_LOCK_EV_ACQUIRE_RETURNED, write, true, op);
			if (tracked(instr, op))
				mln_lockdep_acquired(mm, 1);
		}
		return 0;
	}
	if (op & MMAP_OP_TRY) {
		binding_finish(mm, op, -EBUSY, 0);
		return -EBUSY;
	}
	return 1;
}

int mmap_lock_begin(struct mm_struct *mm, unsigned int op, int subclass)
{
	return lock_begin(mm, op, subclass);
}

int mmap_read_lock_begin(struct mm_struct *mm)
{
	return lock_begin(mm, 0, 0);
}

int mmap_write_lock_begin(struct mm_struct *mm)
{
	return lock_begin(mm, MMAP_OP_WRITE, 0);
}

/* The waiter's phase on bravo (mmap_lock_waiter.reserved). */
#define WAIT_PHASE_RWSEM 0	/* waiting for the rwsem (rw) */
#define WAIT_PHASE_REVOKE 1	/* holding it for write, revoking the bias */

/* bravo's resumable wait: the rwsem's, then (writers) the revocation. */
static int bravo_wait(struct mm_struct *mm, struct mmap_lock_waiter *w, unsigned int op,
		      uint64_t deadline_ns, unsigned int flags)
{
	struct rw_semaphore *sem = &mm->mmap_lock;
	uint64_t waited;
	int rc;

	if (w->reserved == WAIT_PHASE_RWSEM) {
		if ((op & MMAP_OP_WRITE) && !w->rw.queued)
			bravo_writer_waits(mm);
		rc = rwsem_down_wait(sem, &w->rw, !!(op & MMAP_OP_WRITE), deadline_ns, flags);
		if (rc || !(op & MMAP_OP_WRITE)) {
			if (rc == 0)
				bravo_after_slow_read(mm);
			return rc;
		}
		/* Held for write, not yet ours to report: a cancel now releases it. */
		w->rw.acquired = 0;
		w->reserved = WAIT_PHASE_REVOKE;
	}
	rc = bravo_revoke(mm, deadline_ns, flags, &waited);
	if (rc == RWSEM_WAIT_INTERRUPTED)
		return rc;
	w->reserved = WAIT_PHASE_RWSEM;
	if (rc)
		rwsem_up_write_owned(sem);
	else
		w->rw.acquired = 1;
	return rc;
}

int mmap_lock_wait(struct mm_struct *mm, struct mmap_lock_waiter *w, unsigned int op,
		   uint64_t deadline_ns, unsigned int flags)
{
	uint32_t instr = mm_instr(mm);
	int rc;

	if (!w->start_ns) {
		w->start_ns = mln_now_ns();
		rc = op & MMAP_OP_WRITE ? self_read_deadlock(mm, instr) : 0;
		if (rc) {
			w->done = 1;
			binding_finish(mm, op, rc, 0);
			return rc;
		}
	}
	if (instr & MMAP_LOCK_INSTR_ALT) {
		rc = alt_wait(mm, op, deadline_ns, flags);
		if (rc == 0)
			w->rw.acquired = 1;	/* a cancel from now on releases it */
	} else if (instr & MMAP_LOCK_INSTR_BRAVO) {
		rc = bravo_wait(mm, w, op, deadline_ns, flags | wait_flags(op));
	} else {
		rc = rwsem_down_wait(&mm->mmap_lock, &w->rw, !!(op & MMAP_OP_WRITE), deadline_ns,
				     flags | wait_flags(op));
	}
	if (rc == RWSEM_WAIT_INTERRUPTED)
		return rc;
	w->done = 1;
	binding_finish(mm, op, rc, mln_now_ns() - w->start_ns);
	return rc;
}

int mmap_lock_cancel(struct mm_struct *mm, struct mmap_lock_waiter *w, unsigned int op)
{
	uint32_t instr = mm_instr(mm);
	int rc;

	/*
	 * The wait had succeeded (acquire_returned fired, the statistics and
	 * the checker counted it) but its caller never saw the result: undo it
	 * as the matching unlock would, tracepoint included.
	 */
	if (w->rw.acquired) {
		w->rw.acquired = 0;
		w->done = 1;
		return release(mm, op & (MMAP_OP_WRITE | MMAP_OP_NON_OWNER));
	}
	if (w->done)		/* it failed and was reported: nothing to undo */
		return 0;
	w->done = 1;
	if (w->reserved == WAIT_PHASE_REVOKE) {	/* bravo: held for write, revoking */
		w->reserved = WAIT_PHASE_RWSEM;
		rwsem_up_write_owned(&mm->mmap_lock);
	}
	rc = rwsem_down_cancel(&mm->mmap_lock, &w->rw);

	/* Not a kill nor a timeout: only the tracepoint and the checker hear of it. */
	if (is_hooked(instr)) {
		trace_event(mm, MMAP_LOCK_EV_ACQUIRE_RETURNED, op & MMAP_OP_WRITE, false, op);
		if (tracked(instr, op))
			mln_lockdep_acquired(mm, 0);
	}
	return rc;
}

/* ------------------------------------------------------------------------
 * Assertions and queries.
 */
uint32_t mmap_lock_fast_readers(struct mm_struct *mm)
{
	return mm_instr(mm) & MMAP_LOCK_INSTR_BRAVO ? bravo_fast_readers(mm) : 0;
}

int mmap_lock_check_held(struct mm_struct *mm, int write)
{
	struct rw_semaphore *sem = &mm->mmap_lock;

	if (mm_instr(mm) & MMAP_LOCK_INSTR_DEBUG) {
		if (mln_lockdep_held(mm, write))
			return MMAP_CHECK_OK;
		if (write && mln_lockdep_held(mm, 0))
			return MMAP_CHECK_HELD_READ;
		return rwsem_is_locked(sem) ? MMAP_CHECK_NOT_HELD : MMAP_CHECK_UNLOCKED;
	}
	if (mm_instr(mm) & MMAP_LOCK_INSTR_ALT) {
		bool w = alt_writer(mm);

		if (!w && alt_reads(mm) <= 0)
			return MMAP_CHECK_UNLOCKED;
		return write && !w ? MMAP_CHECK_NOT_WRITE : MMAP_CHECK_OK;
	}
	if (!rwsem_is_locked(sem) && !mmap_lock_fast_readers(mm))
		return MMAP_CHECK_UNLOCKED;
	if (write && !rwsem_is_write_locked(sem))
		return MMAP_CHECK_NOT_WRITE;
	return MMAP_CHECK_OK;
}


static const char *const check_text[] = {
	[MMAP_CHECK_OK] = "ok",
	[MMAP_CHECK_UNLOCKED] = "not locked",
	[MMAP_CHECK_NOT_WRITE] = "locked for read, not for write",
	[MMAP_CHECK_NOT_HELD] = "locked, but not by the current task",
	[MMAP_CHECK_HELD_READ] = "held by the current task for read, not for write",
};

static void assert_held(struct mm_struct *mm, int write, const char *what)
{
	int r = mmap_lock_check_held(mm, write);

	if (mln_likely(r == MMAP_CHECK_OK))
		return;
	fprintf(stderr, "%s(mm %p) failed: %s (count 0x%08" PRIx32 ", owner word 0x%" PRIx64
		", task %" PRIu64 ")\n", what, (void *)mm, check_text[r],
		rwsem_count(&mm->mmap_lock), rwsem_owner_word(&mm->mmap_lock), task_current());
	abort();
}

void mmap_assert_locked(struct mm_struct *mm)
{
	assert_held(mm, 0, "mmap_assert_locked");
}

void mmap_assert_write_locked(struct mm_struct *mm)
{
	assert_held(mm, 1, "mmap_assert_write_locked");
}

int mmap_lock_is_contended(struct mm_struct *mm)
{
	if ((mm_instr(mm) & MMAP_LOCK_INSTR_BRAVO) && bravo_revoking(mm))
		return 1;	/* a writer waits for fast readers */
	return rwsem_is_contended(&mm->mmap_lock);
}

/* ------------------------------------------------------------------------
 * Life cycle.
 */
int mmap_lock_backend_id(struct mm_struct *mm)
{
	if (mm_instr(mm) & MMAP_LOCK_INSTR_PER_VMA)
		return MMAP_LOCK_BACKEND_PER_VMA;
	if (mm_instr(mm) & MMAP_LOCK_INSTR_BRAVO)
		return MMAP_LOCK_BACKEND_BRAVO;
	for (int id = MMAP_LOCK_BACKEND_PTHREAD_RWLOCK; id <= MMAP_LOCK_BACKEND_MUTEX; id++)
		if (mm->mmap_lock_alt && mm->mmap_lock_alt == mmap_lock_backend_of(id))
			return id;
	return MMAP_LOCK_BACKEND_RWSEM;
}

int mmap_lock_holders(struct mm_struct *mm, uint64_t *writer, uint32_t *readers)
{
	if (mm->mmap_lock_alt) {
		int64_t r = alt_reads(mm);

		*writer = alt_writer(mm);
		*readers = r > 0 ? (uint32_t)r : 0;
		return 0;
	}
	*writer = rwsem_write_owner(&mm->mmap_lock);
	*readers = ((rwsem_count(&mm->mmap_lock) & RWSEM_READER_MASK) >> RWSEM_READER_SHIFT) +
		   mmap_lock_fast_readers(mm);
	return 0;
}

int mmap_lock_init_backend(struct mm_struct *mm, unsigned int flags, int backend)
{
	const struct mmap_lock_backend *alt = mmap_lock_backend_of(backend);
	uint32_t instr = 0;
	int rc;

	/* The other designs keep process-local state (pointers, reader lines). */
	if (backend != MMAP_LOCK_BACKEND_RWSEM &&
	    (!mmap_lock_backend_name(backend) || flags & MMAP_LOCK_SHARED))
		return -EINVAL;

	if (flags & ~(unsigned int)(MMAP_LOCK_SHARED | MMAP_LOCK_NOSTATS | MMAP_LOCK_DEBUG |
				    MMAP_LOCK_NODEBUG) ||
	    (flags & MMAP_LOCK_DEBUG && flags & MMAP_LOCK_NODEBUG))
		return -EINVAL;
	rc = rwsem_init(&mm->mmap_lock, flags & MMAP_LOCK_SHARED ? RWSEM_SHARED : 0);
	if (rc)
		return rc;
	/* A shared mm cannot hold this process's pointers: no statistics there. */
	if (flags & (MMAP_LOCK_NOSTATS | MMAP_LOCK_SHARED))
		instr |= MMAP_LOCK_INSTR_NOSTATS;
	if ((flags & MMAP_LOCK_DEBUG) || (mln_get_debug() && !(flags & MMAP_LOCK_NODEBUG)))
		instr |= MMAP_LOCK_INSTR_DEBUG;
	mm->mmap_lock_alt = alt;
	if (alt) {
		size_t bytes = (MLN_THREAD_OVERFLOW + 1) * sizeof(struct mmap_lock_alt_reads);

		alt_set_writer(mm, 0);
		if (posix_memalign((void **)&mm->mmap_lock_alt_state.reads, 64, bytes))
			return -ENOMEM;
		memset(mm->mmap_lock_alt_state.reads, 0, bytes);
		rc = alt->init(mm);
		if (rc) {
			free(mm->mmap_lock_alt_state.reads);
			return rc;
		}
		instr |= MMAP_LOCK_INSTR_ALT;
	} else if (backend == MMAP_LOCK_BACKEND_BRAVO) {
		bravo_init(mm);
		instr |= MMAP_LOCK_INSTR_BRAVO;
	} else if (backend == MMAP_LOCK_BACKEND_PER_VMA) {
		instr |= MMAP_LOCK_INSTR_PER_VMA;
	}
	atomic_store_explicit(&mm->mm_lock_seq, 0, memory_order_relaxed);
	atomic_store_explicit(&mm->mmap_lock_instr, instr, memory_order_relaxed);
	atomic_store_explicit(&mm->mmap_lock_rec_inflight, 0, memory_order_relaxed);
	atomic_store_explicit(&mm->mmap_lock_class, 0, memory_order_relaxed);
	atomic_store_explicit(&mm->mmap_lock_stats, NULL, memory_order_relaxed);
	atomic_store_explicit(&mm->mmap_lock_recorder, NULL, memory_order_relaxed);
	atomic_fetch_or_explicit(&mm->mmap_lock_instr, MMAP_LOCK_INSTR_UNREGISTERED,
				 memory_order_relaxed);
	mmap_lock_register(mm);
	return 0;
}

int mmap_lock_is_debug(struct mm_struct *mm)
{
	return !!(mm_instr(mm) & MMAP_LOCK_INSTR_DEBUG);
}

int mmap_lock_set_class(struct mm_struct *mm, int cls)
{
	if (cls < 0 || cls >= MLN_LOCKDEP_MAX_CLASSES || !mln_lockdep_class_name(cls))
		return -EINVAL;
	if (rwsem_is_locked(&mm->mmap_lock) || mmap_lock_fast_readers(mm))
		return -EBUSY;
	atomic_store_explicit(&mm->mmap_lock_class, (uint32_t)cls, memory_order_relaxed);
	return 0;
}

int mmap_lock_init(struct mm_struct *mm, unsigned int flags)
{
	return mmap_lock_init_backend(mm, flags, MMAP_LOCK_BACKEND_RWSEM);
}

int mmap_init_lock(struct mm_struct *mm)
{
	return mmap_lock_init(mm, 0);
}

int mmap_lock_is_busy(struct mm_struct *mm)
{
	if (mm->mmap_lock_alt)
		return alt_writer(mm) || alt_reads(mm) > 0;
	return rwsem_is_locked(&mm->mmap_lock) || rwsem_is_contended(&mm->mmap_lock) ||
	       mmap_lock_fast_readers(mm);
}

int mmap_lock_destroy(struct mm_struct *mm)
{
	int rc;

	if ((mm->mmap_lock_alt && (alt_writer(mm) || alt_reads(mm) > 0)) ||
	    mmap_lock_fast_readers(mm))
		return -EBUSY;
	rc = rwsem_destroy(&mm->mmap_lock);
	if (rc)
		return rc;
	if (mm->mmap_lock_alt) {
		mm->mmap_lock_alt->destroy(mm);
		free(mm->mmap_lock_alt_state.reads);
		mm->mmap_lock_alt_state.reads = NULL;
	}
	mmap_lock_unregister(mm);
	mmap_lock_recorder_release_mm(mm);
	mmap_lock_stats_free(mm);
	if (mln_hold_sample.mm == mm)
		mln_hold_sample.mm = NULL;
	return 0;
}
