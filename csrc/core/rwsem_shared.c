/* SPDX-License-Identifier: MIT */
/*
 * rwsem_shared.c - process-shared semaphores (RWSEM_SHARED) that no
 * process's death can wedge.  docs/design.md, "Robust process-shared
 * semaphores", has the long form and the limits.
 *
 *  - Everything goes through the wait-lock.  count holds RWSEM_FLAG_SHARED,
 *    so every fast path fails into rwsem.c's slow paths, which dispatch
 *    here; the state word is `state`, changed under the wait-lock only.  A
 *    reader's fast path may still add and take back a bias on count: a
 *    process killed in between leaves it there, where nothing reads it.
 *
 *  - The wait-lock's word names its holder's process (pid and a start-time
 *    tag: wait_lock.h).  A waiter that sees one holder for a whole slice
 *    asks whether that process is alive, and takes the lock over if not.
 *
 *  - Every section is a transaction: on entry it copies q, state and owner
 *    into `journal` and sets journal_valid; on exit it clears it.  Whoever
 *    takes the lock over from a dead holder finds journal_valid set if that
 *    holder died mid-section, and copies the journal back: the section is
 *    undone as a whole, as if the dead process had never entered it.
 *
 *  - Slots: which process (pid, start time) holds how many reads, how many
 *    of its tasks are queued, which one holds or was granted the write lock
 *    (writer_slot) and which reserved it (handoff_slot).  A process takes a
 *    slot with its first hold or wait and gives it back with its last.
 *
 *  - Waiters sleep at most RWSEM_SCAN_NS; once per RWSEM_SCAN_NS one of them
 *    asks /proc whether each slot's process is alive (outside the lock) and
 *    reaps the dead: their reads are released, their queue entries and
 *    reservation dropped, a write hold released with RWSEM_FLAG_OWNER_DIED
 *    set.  Nothing polls while nobody waits.
 *
 *  - Owner died: the next acquisitions return -EOWNERDEAD with the lock
 *    held, until a writer's (which clears it: it must repair the data).  A
 *    write grant carries it to its writer (grant_died); a batch of readers
 *    sees the flag, which no writer can clear while they hold the lock.
 *
 * Memory order: the wait-lock orders every section (acquire to take, release
 * to give), so the words it guards are accessed relaxed.  A dead holder's
 * section is read after its death, which a system call observed: see the
 * journal functions.
 */
#include <errno.h>
#include <stdatomic.h>

#include "process.h"
#include "rwsem_internal.h"
#include "rwsem_shared.h"
#include "wait_lock.h"

/* A trylock waits this long at most for the wait-lock: a slice, and the look after it. */
#define RWSEM_TRY_WAIT_NS (2 * MLN_WL_SLICE_NS)

/* Read trylock fails on these, as the private one's fetch_add would. */
#define TRY_READ_FAILED_MASK (RWSEM_WRITER_LOCKED | RWSEM_FLAG_WAITERS | RWSEM_FLAG_HANDOFF | \
			      RWSEM_FLAG_DEAD | RWSEM_FLAG_READFAIL)

/* ------------------------------------------------------------------------
 * The section: the wait-lock and its journal.
 *
 * A process dies at some instruction of its section; what survivors see of
 * its memory is every store before that instruction (its CPU passed through
 * the kernel's exit path, full barriers included, before /proc showed it
 * dead; the survivor's /proc read and its takeover CAS come after).  So
 * only the compiler may reorder what the section stores, and the signal
 * fences below forbid that: death by a signal is what they are for.
 */

static void journal_begin(struct rw_semaphore *sem)
{
	atomic_store_explicit(&sem->journal_valid, 0, memory_order_relaxed);
	atomic_signal_fence(memory_order_seq_cst);	/* invalid before it is overwritten */
	sem->journal.owner = atomic_load_explicit(&sem->owner, memory_order_relaxed);
	sem->journal.state = atomic_load_explicit(&sem->state, memory_order_relaxed);
	sem->journal.q = sem->q;
	atomic_signal_fence(memory_order_seq_cst);	/* whole before it is valid */
	atomic_store_explicit(&sem->journal_valid, 1, memory_order_relaxed);
	atomic_signal_fence(memory_order_seq_cst);	/* valid before anything it undoes */
}

static void journal_end(struct rw_semaphore *sem)
{
	atomic_signal_fence(memory_order_seq_cst);	/* the section's stores, then "done" */
	atomic_store_explicit(&sem->journal_valid, 0, memory_order_relaxed);
}

/* The dead holder's section, undone.  journal_valid stays set until journal_begin(). */
static void journal_undo(struct rw_semaphore *sem)
{
	atomic_store_explicit(&sem->owner, sem->journal.owner, memory_order_relaxed);
	atomic_store_explicit(&sem->state, sem->journal.state, memory_order_relaxed);
	sem->q = sem->journal.q;
}

int rwsem_shared_lock(struct rw_semaphore *sem, uint64_t deadline_ns, bool killable)
{
	const struct mln_process *me = mln_self();
	int rc = mln_wait_lock(&sem->wait_lock, mln_wl_shared_id(me), true, deadline_ns,
			       killable);

	if (rc < 0)
		return rc;
	if (rc == MLN_WL_TOOK_OVER) {
		/* Relaxed: the dead holder's stores are seen through its death (above). */
		if (atomic_load_explicit(&sem->journal_valid, memory_order_relaxed))
			journal_undo(sem);
		sem->last_scan_ns = 0;	/* and reap it at the next look */
	}
	journal_begin(sem);
	return 0;
}

void rwsem_shared_unlock(struct rw_semaphore *sem)
{
	journal_end(sem);
	mln_wait_unlock(&sem->wait_lock, true);
}

/* ------------------------------------------------------------------------
 * Slots.  Everything from here to the scan runs under the wait-lock.
 */

/*
 * `state` changes under the wait-lock only, so a change is a load and a
 * store: no locked instruction (each costs as much as the rest of a
 * section).  Atomic, relaxed, for the queries that read it unlocked.
 */
static inline uint32_t state_get(const struct rw_semaphore *sem)
{
	return atomic_load_explicit(&sem->state, memory_order_relaxed);
}

static inline void state_set(struct rw_semaphore *sem, uint32_t c)
{
	atomic_store_explicit(&sem->state, c, memory_order_relaxed);
}

static int slot_of(const struct rw_semaphore *sem, const struct mln_process *p)
{
	for (int i = 0; i < RWSEM_SLOTS; i++) {
		const struct rwsem_slot *s = &sem->q.slots[i];

		if (s->pid == p->pid && s->start == p->start)
			return i;
	}
	return -1;
}

int rwsem_shared_claim(struct rw_semaphore *sem)
{
	const struct mln_process *me = mln_self();
	int i = slot_of(sem, me);

	if (i >= 0)
		return i;
	/* Pids from another namespace would name other processes than ours. */
	if (sem->pid_ns && me->pid_ns && sem->pid_ns != me->pid_ns)
		return -EXDEV;
	for (i = 0; i < RWSEM_SLOTS; i++) {
		struct rwsem_slot *s = &sem->q.slots[i];

		if (!s->pid) {
			*s = (struct rwsem_slot){ .pid = me->pid, .start = me->start };
			return i;
		}
	}
	sem->q.slot_waiters = 1;
	return -ENOSPC;
}

void rwsem_shared_put(struct rw_semaphore *sem, uint32_t slot, struct wake_plan *plan)
{
	struct rwsem_slot *s = &sem->q.slots[slot];

	if (s->reads || s->queued_readers || s->queued_writers ||
	    sem->q.writer_slot == slot + 1 || sem->q.handoff_slot == slot + 1)
		return;
	*s = (struct rwsem_slot){0};
	if (sem->q.slot_waiters) {
		/* Slot waiters sleep on the readers' word: a spurious wake costs readers a look. */
		sem->q.slot_waiters = 0;
		atomic_fetch_add_explicit(&sem->read_seq, 1, memory_order_relaxed);
		plan->readers = true;
	}
}

void rwsem_shared_enqueued(struct rw_semaphore *sem, const struct rwsem_waiter *w)
{
	struct rwsem_slot *s = &sem->q.slots[w->slot];

	if (w->write)
		s->queued_writers++;
	else
		s->queued_readers++;
}

void rwsem_shared_dequeued(struct rw_semaphore *sem, const struct rwsem_waiter *w)
{
	struct rwsem_slot *s = &sem->q.slots[w->slot];

	if (w->write)
		s->queued_writers--;
	else
		s->queued_readers--;
	if (sem->q.handoff_to == HANDOFF_NONE || sem->q.handoff_to == HANDOFF_READERS)
		sem->q.handoff_slot = 0;	/* its reservation went with it */
}

void rwsem_shared_reserved(struct rw_semaphore *sem, const struct rwsem_waiter *w)
{
	sem->q.handoff_slot = w->write ? w->slot + 1 : 0;
}

void rwsem_shared_granted_readers(struct rw_semaphore *sem)
{
	for (int i = 0; i < RWSEM_SLOTS; i++) {
		struct rwsem_slot *s = &sem->q.slots[i];

		s->reads += s->queued_readers;
		s->queued_readers = 0;
	}
}

void rwsem_shared_granted_writer(struct rw_semaphore *sem)
{
	uint32_t c = state_get(sem), slot = sem->q.handoff_slot;

	/* The one slot index taken from shared memory: garbage must not write outside it. */
	if (slot - 1 < RWSEM_SLOTS)
		sem->q.slots[slot - 1].queued_writers--;
	sem->q.writer_slot = sem->q.handoff_slot;
	sem->q.handoff_slot = 0;
	atomic_store_explicit(&sem->owner, 0, memory_order_relaxed);	/* its task stores itself */
	if (c & RWSEM_FLAG_OWNER_DIED) {
		/* The grantee is the writer that must hear of it. */
		state_set(sem, c & ~RWSEM_FLAG_OWNER_DIED);
		sem->q.grant_died = 1;
	}
}

int rwsem_shared_acquired(struct rw_semaphore *sem, const struct rwsem_waiter *w, bool granted,
			  struct wake_plan *plan)
{
	uint32_t c = state_get(sem);
	struct rwsem_slot *s = &sem->q.slots[w->slot];
	uint64_t task = mln_current_task();
	bool died;

	if (w->write) {
		if (granted) {
			died = sem->q.grant_died;
			sem->q.grant_died = 0;
		} else {
			sem->q.writer_slot = w->slot + 1;
			died = c & RWSEM_FLAG_OWNER_DIED;
			if (died)	/* a writer hears of it, and clears it */
				state_set(sem, c & ~RWSEM_FLAG_OWNER_DIED);
		}
		atomic_store_explicit(&sem->owner, owner_word(task), memory_order_relaxed);
		return died ? -EOWNERDEAD : 0;
	}
	/* A grant counted the read in the slot already; a non-owner hold is no process's. */
	if (!granted)
		s->reads++;
	if (w->non_owner) {
		s->reads--;
		sem->q.anon_reads++;
		rwsem_shared_put(sem, w->slot, plan);
	}
	atomic_store_explicit(&sem->owner,
			      owner_word(w->non_owner ? 0 : task) | RWSEM_OWNER_READER,
			      memory_order_relaxed);
	/* Readers keep the flag for the writer that must repair (it cannot go while they hold). */
	return (c & RWSEM_FLAG_OWNER_DIED) ? -EOWNERDEAD : 0;
}

bool rwsem_shared_writer_is_me(struct rw_semaphore *sem)
{
	const struct mln_process *me = mln_self();
	int i = slot_of(sem, me);

	return (state_get(sem) & RWSEM_WRITER_LOCKED) && i >= 0 && sem->q.writer_slot == (uint32_t)i + 1 &&
	       atomic_load_explicit(&sem->owner, memory_order_relaxed) ==
		       owner_word(mln_current_task());
}

bool rwsem_shared_is_write_owner(struct rw_semaphore *sem)
{
	bool mine;

	if (rwsem_shared_lock(sem, MLN_NO_DEADLINE, false))
		return false;
	mine = rwsem_shared_writer_is_me(sem);
	rwsem_shared_unlock(sem);
	return mine;
}

bool rwsem_shared_scan_due(const struct rw_semaphore *sem, uint64_t now)
{
	/* Unsigned: a clock behind the last scan (another time namespace) is due too. */
	return now - sem->last_scan_ns >= RWSEM_SCAN_NS;
}

/* ------------------------------------------------------------------------
 * Reaping the dead.
 */

/*
 * Reclaim what the dead process of slot @i held or awaited.  Returns true if
 * it held the write lock (then it is the readers' turn, as after up_write).
 */
static bool reap(struct rw_semaphore *sem, int i)
{
	struct rwsem_slot *s = &sem->q.slots[i];
	bool writer = sem->q.writer_slot == (uint32_t)i + 1;
	uint32_t c = state_get(sem) - s->reads * RWSEM_READER_BIAS;

	if (writer) {
		/* A grant never taken was never written under: no indication for it. */
		bool died = !sem->q.write_grant || sem->q.grant_died;

		sem->q.write_grant = 0;
		sem->q.grant_died = 0;
		sem->q.writer_slot = 0;
		atomic_store_explicit(&sem->owner, 0, memory_order_relaxed);
		c &= ~RWSEM_WRITER_LOCKED;
		if (died)
			c |= RWSEM_FLAG_OWNER_DIED;
	}
	state_set(sem, c);
	sem->q.nr_readers_waiting -= s->queued_readers;
	sem->q.nr_writers_waiting -= s->queued_writers;
	if (sem->q.handoff_slot == (uint32_t)i + 1) {
		sem->q.handoff_to = HANDOFF_NONE;
		sem->q.handoff_slot = 0;
	}
	if (!sem->q.nr_readers_waiting && sem->q.handoff_to == HANDOFF_READERS)
		sem->q.handoff_to = HANDOFF_NONE;
	*s = (struct rwsem_slot){0};
	rwsem_sync_flags(sem);
	return writer;
}

void rwsem_shared_reap_dead(struct rw_semaphore *sem)
{
	const struct mln_process *me = mln_self();
	struct mln_process seen[RWSEM_SLOTS];
	struct wake_plan plan = {0};
	bool dead[RWSEM_SLOTS] = {0}, any = false, after_writer = false;
	uint64_t now = mln_now_ns();

	/* A snapshot of the slots, under the lock ... */
	if (rwsem_shared_lock(sem, MLN_NO_DEADLINE, false))
		return;
	if (!rwsem_shared_scan_due(sem, now)) {
		rwsem_shared_unlock(sem);
		return;
	}
	sem->last_scan_ns = now;
	for (int i = 0; i < RWSEM_SLOTS; i++)
		seen[i] = (struct mln_process){ .pid = sem->q.slots[i].pid,
						.start = sem->q.slots[i].start };
	rwsem_shared_unlock(sem);

	/* ... /proc without it (a dead process's slot cannot change meanwhile) ... */
	for (int i = 0; i < RWSEM_SLOTS; i++) {
		if (!seen[i].pid || (seen[i].pid == me->pid && seen[i].start == me->start))
			continue;
		dead[i] = !mln_process_alive(seen[i].pid, seen[i].start,
					     seen[i].start ? UINT32_MAX : 0);
		any |= dead[i];
	}
	if (!any)
		return;

	/* ... and the reaping under it, if the slot is still that process's. */
	if (rwsem_shared_lock(sem, MLN_NO_DEADLINE, false))
		return;
	for (int i = 0; i < RWSEM_SLOTS; i++)
		if (dead[i] && sem->q.slots[i].pid == seen[i].pid &&
		    sem->q.slots[i].start == seen[i].start)
			after_writer |= reap(sem, i);
	rwsem_mark_wake(sem, after_writer, &plan);
	rwsem_shared_unlock(sem);
	rwsem_wake_plan_run(sem, &plan, true);
}

/* ------------------------------------------------------------------------
 * The operations whose private forms are fast paths.
 */

int rwsem_shared_up_read(struct rw_semaphore *sem, bool anonymous)
{
	const struct mln_process *me = mln_self();
	struct wake_plan plan = {0};
	int rc = rwsem_shared_lock(sem, MLN_NO_DEADLINE, false), i;
	uint32_t c;

	if (rc)
		return rc;
	i = slot_of(sem, me);
	if (anonymous && sem->q.anon_reads) {
		sem->q.anon_reads--;
	} else if (i >= 0 && sem->q.slots[i].reads) {
		sem->q.slots[i].reads--;
		rwsem_shared_put(sem, (uint32_t)i, &plan);
	} else {
		rwsem_shared_unlock(sem);
		return -EPERM;	/* this process holds no read (nor does anyone anonymously) */
	}
	c = state_get(sem) - RWSEM_READER_BIAS;
	state_set(sem, c);
	if ((c & (RWSEM_LOCK_MASK | RWSEM_FLAG_WAITERS)) == RWSEM_FLAG_WAITERS)
		rwsem_mark_wake(sem, false, &plan);
	rwsem_shared_unlock(sem);
	rwsem_wake_plan_run(sem, &plan, true);
	return 0;
}

/*
 * The start of up_write and downgrade: the wait-lock, taken for the current
 * task's write hold, which ends.  0 with the lock held and the holder's slot
 * in @slot, or an error (-EPERM: not the write owner) with it dropped.
 */
static int end_write_hold(struct rw_semaphore *sem, uint32_t *slot)
{
	int rc = rwsem_shared_lock(sem, MLN_NO_DEADLINE, false);

	if (rc)
		return rc;
	if (!rwsem_shared_writer_is_me(sem)) {
		rwsem_shared_unlock(sem);
		return -EPERM;
	}
	*slot = sem->q.writer_slot - 1;
	sem->q.writer_slot = 0;
	return 0;
}

int rwsem_shared_up_write(struct rw_semaphore *sem, bool rearm)
{
	struct wake_plan plan = {0};
	uint32_t slot, c;
	int rc = end_write_hold(sem, &slot);

	if (rc)
		return rc;
	atomic_store_explicit(&sem->owner, 0, memory_order_relaxed);
	c = state_get(sem);
	state_set(sem, (c & ~RWSEM_WRITER_LOCKED) | (rearm ? RWSEM_FLAG_OWNER_DIED : 0));
	rwsem_shared_put(sem, slot, &plan);
	if (c & RWSEM_FLAG_WAITERS)
		rwsem_mark_wake(sem, true, &plan);
	rwsem_shared_unlock(sem);
	rwsem_wake_plan_run(sem, &plan, true);
	return 0;
}

int rwsem_shared_downgrade(struct rw_semaphore *sem)
{
	struct wake_plan plan = {0};
	uint32_t slot;
	int rc = end_write_hold(sem, &slot);

	if (rc)
		return rc;
	sem->q.slots[slot].reads++;
	atomic_store_explicit(&sem->owner, owner_word(mln_current_task()) | RWSEM_OWNER_READER,
			      memory_order_relaxed);
	state_set(sem, state_get(sem) + RWSEM_READER_BIAS - RWSEM_WRITER_LOCKED);
	if (sem->q.nr_readers_waiting)
		rwsem_grant_readers(sem, &plan);
	rwsem_shared_unlock(sem);
	rwsem_wake_plan_run(sem, &plan, true);
	return 0;
}

/*
 * Could a trylock take @c now?  The private fast paths' rules; and not at
 * all if it could not @report a dead writer.
 */
static bool try_allowed(uint32_t c, bool write, bool report)
{
	if (!report && (c & RWSEM_FLAG_OWNER_DIED))
		return false;
	if (write)	/* down_write_trylock's CAS from 0: fails while anyone waits */
		return !(c & ~RWSEM_FLAG_OWNER_DIED);
	return !((c | (c + RWSEM_READER_BIAS)) & TRY_READ_FAILED_MASK);
}

int rwsem_shared_trylock(struct rw_semaphore *sem, bool write, bool anonymous, bool report)
{
	/* A second round only after reaping: a dead holder may have been what failed it. */
	for (int round = 0;; round++) {
		struct wake_plan plan = {0};
		uint64_t now = mln_now_ns();
		bool due;
		int rc = rwsem_shared_lock(sem, now + RWSEM_TRY_WAIT_NS, false);

		if (rc)
			return 0;
		if (try_allowed(state_get(sem), write, report)) {
			rc = rwsem_shared_claim(sem);
			if (rc >= 0) {
				struct rwsem_waiter w = { .write = write, .slot = (uint32_t)rc,
							  .non_owner = anonymous };

				state_set(sem, state_get(sem) + (write ? RWSEM_WRITER_LOCKED
									: RWSEM_READER_BIAS));
				rc = rwsem_shared_acquired(sem, &w, false, &plan);
				rwsem_shared_unlock(sem);
				rwsem_wake_plan_run(sem, &plan, true);
				return rc ? rc : 1;
			}
		}
		due = round == 0 && rwsem_shared_scan_due(sem, now);
		rwsem_shared_unlock(sem);
		if (!due)
			return 0;
		rwsem_shared_reap_dead(sem);
	}
}
