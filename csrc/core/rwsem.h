/* SPDX-License-Identifier: MIT */
/*
 * rwsem.h - a futex-based reader-writer semaphore with the semantics of the
 * Linux kernel's struct rw_semaphore.
 *
 * Same names as <linux/rwsem.h>.  Functions the kernel declares void return
 * int here: 0, or a negative errno when the call is a misuse (unlocking what
 * is not held, write-unlocking another task's lock, ...).  C callers may
 * ignore it as they would in the kernel; the Python bindings raise.
 *
 * As with the kernel's locks, the structure must stay valid until every call
 * on it has returned: an unlock may still touch it (to wake waiters) after
 * another task has already acquired the lock it released.
 *
 * The structure holds no pointer, so it may live in memory shared between
 * processes (rwsem_init(sem, RWSEM_SHARED)).  All-zero bytes are a valid,
 * unlocked, process-private semaphore, which is what RWSEM_INITIALIZER gives.
 * rwsem_init() also writes RWSEM_MAGIC, so that a process attaching to
 * memory another one initialised can check, with rwsem_validate(), that it
 * holds a semaphore of this layout before it waits on anything in it.
 *
 * The algorithm, the state word and the memory orderings are explained at
 * the top of rwsem.c and in docs/design.md.
 */
#ifndef MLN_RWSEM_H
#define MLN_RWSEM_H

#include <stdatomic.h>
#include <stdint.h>

#include "task.h"

/*
 * The state word `count` (32 bits, one atomic; see rwsem.c for who may change
 * which bit and why):
 *
 *   bit  0     RWSEM_WRITER_LOCKED  a writer holds the lock
 *   bit  1     RWSEM_FLAG_WAITERS   at least one task sleeps in the wait queue
 *   bit  2     RWSEM_FLAG_HANDOFF   the lock is reserved for a starved waiter:
 *                                   no new acquirer may take it
 *   bit  3     RWSEM_FLAG_DEAD      destroyed; every fast path fails
 *   bit  4     RWSEM_FLAG_SHARED    process-shared: every fast path fails,
 *                                   and the state word is `state` instead
 *   bit  5     RWSEM_FLAG_OWNER_DIED  (in `state` only) a write holder died
 *                                   holding the lock
 *   bits 6-7   reserved, zero
 *   bits 8-30  reader count (23 bits), in units of RWSEM_READER_BIAS
 *   bit  31    RWSEM_FLAG_READFAIL  reader-count overflow guard
 *
 * The owner word `owner` (64 bits):
 *
 *   bit  0     RWSEM_OWNER_READER   the lock was last taken for read: the task
 *                                   field is the last reader, a hint only
 *   bit  1     reserved, zero
 *   bits 2-63  task id of the writer (or last reader); 0 = none/anonymous
 *
 * A process-shared semaphore (RWSEM_SHARED) survives the death of any process
 * that uses it (docs/design.md, "Robust process-shared semaphores"): every
 * operation takes the wait-lock, whose word names its holder's process, and
 * records in a slot which process holds or awaits what; a section of a
 * process that dies inside the wait-lock is rolled back from `journal`, and
 * what a dead process held or awaited is reclaimed by the survivors.
 */

/* cffi:begin */
/* Processes that may hold or await one shared semaphore at the same time. */
#define RWSEM_SLOTS 10
/* cffi:end */

/* What one process holds or awaits in a shared semaphore. */
struct rwsem_slot {
	uint32_t pid;			/* 0: a free slot */
	uint32_t start;			/* its start time (process.h), against pid reuse */
	uint32_t reads;			/* read holds it owns */
	uint16_t queued_readers;	/* its tasks in the wait queue */
	uint16_t queued_writers;
};

/*
 * The wait queue.  Read and written under wait_lock; in a shared semaphore
 * a wait-lock section's changes to it are rolled back if its process dies
 * before the section ends.
 */
struct rwsem_queue {
	uint32_t nr_readers_waiting;	/* queued readers not yet granted */
	uint32_t nr_writers_waiting;	/* queued writers not yet granted */
	uint32_t write_grant;		/* ticket of the writer handed the lock, or 0 */
	uint32_t next_ticket;		/* identity of the next queued writer */
	uint32_t handoff_to;		/* whom HANDOFF reserves the lock for */
	/* Shared semaphores only; zero in private ones. */
	uint32_t anon_reads;		/* read holds taken non-owner: no process's */
	uint8_t writer_slot;		/* slot + 1 of the write holder (or grantee), or 0 */
	uint8_t handoff_slot;		/* slot + 1 of the writer handoff_to names, or 0 */
	uint8_t grant_died;		/* write_grant carries the owner-died indication */
	uint8_t slot_waiters;		/* a process waits for a free slot */
	uint32_t reserved;
	uint64_t read_grant_gen;	/* bumped by each batch grant to readers; never wraps */
	uint64_t nr_handoffs;		/* handoffs granted since init */
	struct rwsem_slot slots[RWSEM_SLOTS];
};

/* A copy of what a shared semaphore's wait-lock section may change. */
struct rwsem_journal {
	uint64_t owner;
	uint32_t state;
	uint32_t reserved;
	struct rwsem_queue q;
};

struct rw_semaphore {
	_Atomic uint32_t count;		/* the state word, above */
	_Atomic uint32_t wait_lock;	/* futex mutex guarding q (wait_lock.h) */
	_Atomic uint64_t owner;		/* the owner word, above */
	_Atomic uint32_t read_seq;	/* futex word queued readers sleep on */
	_Atomic uint32_t write_seq;	/* futex word queued writers sleep on */
	uint32_t flags;			/* RWSEM_SHARED; fixed at init */
	uint32_t magic;			/* RWSEM_MAGIC once initialised; 0 in zeroed memory */
	struct rwsem_queue q;		/* the wait queue */

	/* Shared semaphores only (rwsem_shared.c); zero in private ones. */
	_Atomic uint32_t state;		/* the state word (count holds RWSEM_FLAG_SHARED) */
	_Atomic uint32_t journal_valid;	/* a wait-lock section is under way: journal is its undo */
	uint32_t pid_ns;		/* the pid namespace every user must share */
	uint32_t reserved;
	uint64_t last_scan_ns;		/* when a waiter last looked for dead processes */
	struct rwsem_journal journal;	/* q, state and owner as the section found them */
};

#define RWSEM_INITIALIZER {0}
#define DECLARE_RWSEM(name) struct rw_semaphore name = RWSEM_INITIALIZER

/* cffi:begin */
/* rwsem_init() flags */
#define RWSEM_SHARED 1

/* Lock-order subclasses accepted by down_write_nested(): 0 .. 7, as lockdep. */
#define SINGLE_DEPTH_NESTING 1
#define RWSEM_MAX_SUBCLASSES 8

/* Time after which a starved waiter reserves the lock (the kernel's 4 jiffies). */
#define RWSEM_HANDOFF_NS 4000000

/*
 * The magic word rwsem_init() writes: RWSEM_MAGIC_BASE with the layout
 * version in the low byte.  Zeroed memory (RWSEM_INITIALIZER) has none and
 * is a valid private semaphore; any other value is no semaphore at all.
 */
#define RWSEM_MAGIC_BASE 0x4d4c5200
#define RWSEM_LAYOUT_VERSION 2
#define RWSEM_MAGIC 0x4d4c5202	/* RWSEM_MAGIC_BASE | RWSEM_LAYOUT_VERSION */

/* Longest a query (rwsem_queue_info) waits for the wait-lock. */
#define RWSEM_QUERY_WAIT_NS 200000000

int init_rwsem(struct rw_semaphore *sem);
int rwsem_init(struct rw_semaphore *sem, unsigned int flags);
/* -EBUSY while held or waited on; afterwards every operation fails. */
int rwsem_destroy(struct rw_semaphore *sem);
/*
 * Does @sem hold a semaphore that rwsem_init(sem, @flags) initialised, of
 * this layout?  For a process attaching to memory another one set up: it
 * looks only, and never waits.  0, or why not:
 *   -EINVAL   no semaphore (no magic word: garbage, zeroes, a wrong offset)
 *   -EPROTO   a semaphore of another layout version
 *   -ENOTSUP  a semaphore initialised with other flags (private vs RWSEM_SHARED)
 *   -EUCLEAN  the magic is right but a word holds what no operation writes
 */
int rwsem_validate(const struct rw_semaphore *sem, unsigned int flags);

int down_read(struct rw_semaphore *sem);
int down_read_trylock(struct rw_semaphore *sem);
int down_read_killable(struct rw_semaphore *sem);
int up_read(struct rw_semaphore *sem);
int down_read_non_owner(struct rw_semaphore *sem);
/* down_read_trylock for a hold another task may release (an extension). */
int down_read_trylock_non_owner(struct rw_semaphore *sem);
int up_read_non_owner(struct rw_semaphore *sem);

int down_write(struct rw_semaphore *sem);
int down_write_trylock(struct rw_semaphore *sem);
int down_write_killable(struct rw_semaphore *sem);
int down_write_nested(struct rw_semaphore *sem, int subclass);
int up_write(struct rw_semaphore *sem);
int downgrade_write(struct rw_semaphore *sem);

/*
 * down_read_trylock() and down_write_trylock() for a binding whose fast path
 * is one call and a truth test: 1 or 0, never -EOWNERDEAD.  Where the
 * trylock would report a dead writer (a shared semaphore), these fail
 * without acquiring, so that the binding's blocking path (rwsem_down_wait)
 * acquires and reports it.  Otherwise the same code.
 */
int rwsem_try_read(struct rw_semaphore *sem);
int rwsem_try_write(struct rw_semaphore *sem);

int rwsem_is_locked(struct rw_semaphore *sem);
int rwsem_is_contended(struct rw_semaphore *sem);

/* Extensions. */
uint64_t rwsem_now_ns(void);	/* CLOCK_MONOTONIC, the clock of every deadline */
/* Timed acquires: 0, or -ETIMEDOUT once the absolute @deadline_ns passes. */
int down_read_timed(struct rw_semaphore *sem, uint64_t deadline_ns);
int down_write_timed(struct rw_semaphore *sem, uint64_t deadline_ns);
int rwsem_is_write_locked(struct rw_semaphore *sem);
/* Task id of the write owner, or 0 when not write-locked. */
uint64_t rwsem_write_owner(struct rw_semaphore *sem);
/* The raw words, for diagnostics: racy snapshots. */
uint32_t rwsem_count(struct rw_semaphore *sem);
uint64_t rwsem_owner_word(struct rw_semaphore *sem);
uint32_t rwsem_magic_word(const struct rw_semaphore *sem);
/*
 * The CPU count behind the calling thread's spin decision (nobody spins on
 * one CPU): its affinity mask's, looked up on the thread's first contended
 * acquisition (or by this call) and kept for the thread's life.
 */
int rwsem_spin_cpus(void);
/*
 * Queue lengths and handoff count, read under the wait lock: 0, or
 * -ETIMEDOUT when the wait lock stayed held for RWSEM_QUERY_WAIT_NS, or
 * -EINVAL when it holds what no holder writes (then nothing is stored).
 */
int rwsem_queue_info(struct rw_semaphore *sem, uint32_t *readers, uint32_t *writers,
		     uint64_t *handoffs);

/*
 * Resumable waits, for bindings that must return to their interpreter while
 * a task is queued (a Python signal handler must run, then the wait resumes
 * in place, keeping its queue position and its handoff clock).
 *
 * rwsem_down_wait() acquires, or starts or resumes waiting with @w, which the
 * caller keeps alive (and zeroed before its first use) until the call returns
 * anything but RWSEM_WAIT_INTERRUPTED.  Returns:
 *   0                       acquired
 *   -ETIMEDOUT              @deadline_ns passed; no longer queued
 *   -EINTR                  RWSEM_WAIT_KILLABLE and the task was killed
 *   -EDEADLK, -EINVAL       misuse (the caller holds it for write; destroyed)
 *   RWSEM_WAIT_INTERRUPTED  RWSEM_WAIT_SIGNALS and a signal arrived (or
 *                           RWSEM_SIGNAL_POLL_NS passed, in case one landed
 *                           outside the sleep); still queued: call again,
 *                           or rwsem_down_cancel()
 * rwsem_down_cancel() leaves the queue; if the lock was granted in between,
 * or even acquired by a call whose 0 the binding never got to see (a signal
 * handler that raised right after it returned), it releases it again, so
 * that in every case the caller holds nothing.
 */
#define RWSEM_WAIT_KILLABLE 1
#define RWSEM_WAIT_SIGNALS 2
#define RWSEM_WAIT_NON_OWNER 4
#define RWSEM_WAIT_INTERRUPTED 1
#define RWSEM_SIGNAL_POLL_NS 50000000

struct rwsem_waiter {
	uint64_t handoff_at_ns;	/* when this waiter may reserve the lock */
	uint64_t gen;		/* readers: read_grant_gen when queued */
	uint32_t ticket;	/* writers: identity for a handoff */
	uint32_t queued;	/* 1 while in the wait queue */
	uint32_t write;		/* 1 for a writer */
	uint32_t acquired;	/* 1 once a call acquired: rwsem_down_cancel() releases */
	uint32_t non_owner;	/* RWSEM_WAIT_NON_OWNER: a hold of no task (nor process) */
	uint32_t slot;		/* shared: its process's slot */
	uint32_t owner_died;	/* the acquisition returned -EOWNERDEAD */
	uint32_t reserved;
};

int rwsem_down_wait(struct rw_semaphore *sem, struct rwsem_waiter *w, int write,
		    uint64_t deadline_ns, unsigned int flags);
int rwsem_down_cancel(struct rw_semaphore *sem, struct rwsem_waiter *w);
/* cffi:end */

#endif /* MLN_RWSEM_H */
