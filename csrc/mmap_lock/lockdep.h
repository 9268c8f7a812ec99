/* SPDX-License-Identifier: MIT */
/*
 * lockdep.h - debug mode: per-task held locks and a lock-order checker in the
 * manner of the kernel's lockdep, for the mmap locks.
 *
 * Every lock belongs to a class (all mm locks share class 0,
 * "mm->mmap_lock", unless given another; a binding's debug-mode semaphore
 * gets one by name or by creation site); a subclass from the _nested calls
 * makes (class, subclass) a distinct node of the dependency graph.  Each
 * task (task_current()) has a stack of held locks.  When a task that holds
 * A acquires B, the checker records the edge A -> B with both acquisition
 * sites; it reports
 *   - recursion: a task acquires a (class, subclass) it already holds
 *     (a read lock taken twice deadlocks behind a queued writer);
 *   - inversion: B -> ... -> A is already known, whichever task and
 *     whenever it was seen;
 *   - bad unlock: a task releases a lock it does not hold.
 * Trylocks cannot deadlock: they add no edge and are never reported, but
 * they are pushed on the held stack.  Non-owner acquisitions are not
 * attributed to any task.
 *
 * Report modes: off, warn (the report hook, else stderr; the call proceeds),
 * raise (the call is refused with -EDEADLK before it touches the lock, and
 * the report is kept for the calling thread: mln_lockdep_last_report()).
 */
#ifndef MLN_LOCKDEP_H
#define MLN_LOCKDEP_H

#include <stdint.h>

/* cffi:begin */
#define MLN_LOCKDEP_OFF 0
#define MLN_LOCKDEP_WARN 1
#define MLN_LOCKDEP_RAISE 2

#define MLN_LOCKDEP_RECURSION 1
#define MLN_LOCKDEP_INVERSION 2
#define MLN_LOCKDEP_BAD_UNLOCK 3

#define MLN_LOCKDEP_MAX_CLASSES 256
#define MLN_LOCKDEP_MAX_DEPTH 48

/* Debug mode for locks initialised from now on (mmap_init_lock()). */
int mln_set_debug(int on);
int mln_get_debug(void);
/* MLN_LOCKDEP_OFF / WARN / RAISE (the default); -EINVAL otherwise. */
int mln_lockdep_set_mode(int mode);
int mln_lockdep_get_mode(void);

/* The class named @name, registered on first use: an id >= 0, or -ENOSPC. */
int mln_lockdep_class(const char *name);
const char *mln_lockdep_class_name(int cls);

/* The calling thread's last refused call (raise mode): kind and text, or 0 / "". */
int mln_lockdep_last_report_kind(void);
const char *mln_lockdep_last_report(void);

/*
 * Where an acquisition came from.  By default the caller's return address,
 * printed as symbol+offset; a binding sets a hook that names its own caller
 * (file:line) and returns NULL when it has none.  The returned string must
 * stay valid for the life of the process.
 */
void mln_lockdep_set_site_hook(const char *(*hook)(void));
/* Warn mode: called with each report (else it goes to stderr). */
void mln_lockdep_set_report_hook(void (*hook)(int kind, const char *text));

/* Forget every recorded dependency and held lock (tests). */
void mln_lockdep_reset(void);
/* Number of locks the calling task holds, as the checker sees it. */
int mln_lockdep_depth(void);
/* cffi:end */

/* cffi:begin */
/*
 * Called by the lock layer (mmap_lock.c), and by a binding for the
 * semaphores it tracks in debug mode (RWSemaphore).  @lock identifies the
 * instance, @ip is the caller's return address (NULL from a binding: its
 * site hook names the caller).
 *
 * mln_lockdep_acquire(): before the acquisition may block; 0, or -EDEADLK
 * when raise mode refuses it (nothing recorded).  On 0 the entry is pushed;
 * the caller later calls mln_lockdep_acquired(lock, 0) if the acquisition
 * failed (trylock, kill, timeout), which pops it again.
 * mln_lockdep_release(): 0, or -EDEADLK when raise mode refuses a release of
 * a lock the task does not hold (nothing changed).
 */
int mln_lockdep_acquire(const void *lock, int cls, int subclass, int write, int trylock,
			const void *ip);
void mln_lockdep_acquired(const void *lock, int success);
int mln_lockdep_release(const void *lock, const void *ip);
void mln_lockdep_downgrade(const void *lock);
/* 1 if the current task holds @lock (for write when @write), else 0. */
int mln_lockdep_held(const void *lock, int write);
/* cffi:end */

#endif /* MLN_LOCKDEP_H */
