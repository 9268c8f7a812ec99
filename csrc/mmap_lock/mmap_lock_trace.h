/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_trace.h - the three mmap_lock tracepoints (Linux 5.11) as
 * settable hooks, and a per-mm event recorder built on the same points.
 *
 *   start_locking(mm, write)              before an acquisition may block
 *   acquire_returned(mm, write, success)  when it returns (trylock and
 *                                         killable too; downgrade reports a
 *                                         successful read acquisition)
 *   released(mm, write)                   before the release
 *
 * With no hooks set and no recorder attached, each call site costs one load
 * and one predictable branch; building with -DMMAP_LOCK_NO_TRACE removes even
 * that (and the hooks with it), for comparison.
 */
#ifndef MLN_MMAP_LOCK_TRACE_H
#define MLN_MMAP_LOCK_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "futex.h"
#include "mm_types.h"

/* cffi:begin */
struct mmap_lock_trace_hooks {
	/* Any may be NULL.  @arg is passed back unchanged. */
	void (*start_locking)(struct mm_struct *mm, bool write, void *arg);
	void (*acquire_returned)(struct mm_struct *mm, bool write, bool success, void *arg);
	void (*released)(struct mm_struct *mm, bool write, void *arg);
	void *arg;
};

/*
 * Install a copy of @hooks for every mm (NULL, or all three NULL, clears
 * them).  Returns once no thread still runs a hook of the previous set, so
 * the caller may free what the old @arg pointed to.  Returns 0, -EDEADLK
 * when called from a hook (it would wait for itself), or -ENOTSUP when
 * built with MMAP_LOCK_NO_TRACE.
 */
int mmap_lock_set_trace_hooks(const struct mmap_lock_trace_hooks *hooks);
/* 1 when hooks are set. */
int mmap_lock_trace_enabled(void);

/* Recorder events: the tracepoint that fired. */
#define MMAP_LOCK_EV_START_LOCKING 0
#define MMAP_LOCK_EV_ACQUIRE_RETURNED 1
#define MMAP_LOCK_EV_RELEASED 2

struct mmap_lock_event {
	uint64_t ts_ns;		/* CLOCK_MONOTONIC */
	uint64_t task;		/* task_current() of the caller */
	uint64_t mm;		/* the mm's address */
	uint8_t event;		/* MMAP_LOCK_EV_* */
	uint8_t write;
	uint8_t success;	/* acquire_returned only */
	uint8_t op;		/* MMAP_OP_* of the call (trylock, killable, ...) */
	uint16_t caller;	/* what the caller said it was doing (mmap_lock_set_caller) */
	uint16_t reserved;
};

/*
 * Attach a recorder of @capacity events to @mm (-EBUSY if one is attached,
 * -EINVAL for capacity 0, -ENOMEM, -ENOTSUP for a process-shared mm).  Events are kept in the order their
 * slots were reserved; once the buffer is full, later events are counted as
 * dropped, never silently lost.
 */
int mmap_lock_record_start(struct mm_struct *mm, size_t capacity);
/*
 * Detach @mm's recorder, wait for events in flight, and hand it over (NULL
 * if none was attached).  The caller reads it, then frees it.
 */
struct mmap_lock_recorder *mmap_lock_record_stop(struct mm_struct *mm);
size_t mmap_lock_recorder_count(const struct mmap_lock_recorder *rec);
uint64_t mmap_lock_recorder_dropped(const struct mmap_lock_recorder *rec);
const struct mmap_lock_event *mmap_lock_recorder_events(const struct mmap_lock_recorder *rec);
void mmap_lock_recorder_free(struct mmap_lock_recorder *rec);
/* cffi:end */

/*
 * A tag the recorder stores with each event of the calling thread: what
 * the caller is doing (the mm layer's MM_OP_*, mm.h), 0 for nothing said.
 * Returns the previous tag, to be put back when the caller is done.
 */
extern MLN_HOT_TLS _Thread_local uint16_t mmap_lock_caller;

static inline uint16_t mmap_lock_set_caller(uint16_t tag)
{
	uint16_t prev = mmap_lock_caller;

	mmap_lock_caller = tag;
	return prev;
}

#endif /* MLN_MMAP_LOCK_TRACE_H */
