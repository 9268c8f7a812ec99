/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_internal.h - what the pieces of the mmap lock layer share:
 * the instrumentation bits of mm->mmap_lock_instr and the entry points of
 * the statistics, trace and recorder files.  Not a public header.
 */
#ifndef MLN_MMAP_LOCK_INTERNAL_H
#define MLN_MMAP_LOCK_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "futex.h"
#include "mm_types.h"

/*
 * mm->mmap_lock_instr:
 *
 *   bit  meaning                          set / cleared by
 *   0    DEBUG: the checker tracks it     init (mmap_lock_init); fixed after
 *   1    RECORD: a recorder is attached   mmap_lock_record_start / _stop
 *   2    NOSTATS: statistics are off      init, mmap_lock_stats_set_enabled
 *   3    TRACE: trace hooks are set       mmap_lock_set_trace_hooks, on every
 *                                         registered mm, under the list mutex
 *   4    UNREGISTERED: not on the list    MMAP_LOCK_INITIALIZER; cleared by the
 *                                         first call (mmap_lock_register)
 *   5    ALT: a glibc lock design         init (mmap_lock_init_backend); fixed
 *   6    BRAVO: the bravo design          init; fixed
 *   7    PER_VMA: the per_vma design      init; fixed (its mmap lock is the
 *                                         plain rwsem: not hooked)
 *
 * All but NOSTATS and PER_VMA send every call through the hooked
 * (out-of-line) path.
 * Relaxed loads: each bit is a switch; what it guards is reached through
 * pointers published with their own release/acquire or SC operations.
 */
#define MMAP_LOCK_INSTR_DEBUG	1u
#define MMAP_LOCK_INSTR_RECORD	2u
#define MMAP_LOCK_INSTR_NOSTATS	4u
#define MMAP_LOCK_INSTR_TRACE	8u
/* MMAP_LOCK_INSTR_UNREGISTERED (16) is in mm_types.h, for MMAP_LOCK_INITIALIZER. */
#define MMAP_LOCK_INSTR_ALT	32u
#define MMAP_LOCK_INSTR_BRAVO	64u
#define MMAP_LOCK_INSTR_PER_VMA	128u
#define MMAP_LOCK_INSTR_HOOKED	(MMAP_LOCK_INSTR_DEBUG | MMAP_LOCK_INSTR_RECORD | \
				 MMAP_LOCK_INSTR_TRACE | MMAP_LOCK_INSTR_UNREGISTERED | \
				 MMAP_LOCK_INSTR_ALT | MMAP_LOCK_INSTR_BRAVO)

/* Nonzero while trace hooks are set (mmap_lock_trace.c). */
extern _Atomic uint32_t mmap_lock_hooks_on;

/*
 * Put @mm on the hooks' list (setting TRACE if hooks are set) and clear
 * UNREGISTERED; take it off.  mmap_lock_register() is idempotent.
 */
void mmap_lock_register(struct mm_struct *mm);
void mmap_lock_unregister(struct mm_struct *mm);

static inline uint32_t mm_instr(const struct mm_struct *mm)
{
	return atomic_load_explicit(&mm->mmap_lock_instr, memory_order_relaxed);
}

/* Fire the tracepoint hooks (call only when mmap_lock_hooks_on). */
void mmap_lock_hooks_fire(struct mm_struct *mm, int event, bool write, bool success);

/* Append an event to @mm's recorder, if one is attached (RECORD set). */
void mmap_lock_record_event(struct mm_struct *mm, int event, bool write, bool success,
			    unsigned int op);

/* Free whatever the recorder holds for @mm (mmap_lock_destroy). */
void mmap_lock_recorder_release_mm(struct mm_struct *mm);

#endif /* MLN_MMAP_LOCK_INTERNAL_H */
