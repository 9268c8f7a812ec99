/* SPDX-License-Identifier: MIT */
/*
 * mm_lock.c - how the mm operations take their mm's lock: killable, as the
 * kernel's mmap/munmap/mprotect take it, and, for a caller that runs signal
 * handlers between calls (a Python binding), interruptible by a signal.
 *
 * An interrupted acquisition leaves the queue (mmap_lock_cancel) and the
 * operation returns -ERESTART having changed nothing: the caller runs its
 * handlers and calls again.  The wait restarts from the queue's tail, which
 * costs a writer nothing it needs: it reserves the lock again within the
 * handoff time (4 ms) of every restart, and restarts come at most every
 * RWSEM_SIGNAL_POLL_NS (50 ms).
 */
#include <errno.h>
#include <string.h>

#include "mm_internal.h"
#include "mmap_lock.h"

MLN_HOT_TLS _Thread_local int mm_signal_aware;

int mm_lock(struct mm_struct *mm, bool write)
{
	unsigned int op = (write ? MMAP_OP_WRITE : 0) | MMAP_OP_KILLABLE;
	struct mmap_lock_waiter w;
	int rc;

	if (!mm_signal_aware)
		return write ? mmap_write_lock_killable(mm) : mmap_read_lock_killable(mm);
	rc = mmap_lock_begin(mm, op, 0);
	if (rc <= 0)
		return rc;	/* acquired, or refused */
	memset(&w, 0, sizeof(w));
	rc = mmap_lock_wait(mm, &w, op, MLN_NO_DEADLINE, RWSEM_WAIT_SIGNALS);
	if (rc != RWSEM_WAIT_INTERRUPTED)
		return rc;
	mmap_lock_cancel(mm, &w, op);
	return -ERESTART;
}
