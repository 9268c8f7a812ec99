/* SPDX-License-Identifier: MIT */
/*
 * reader_slots.c - the per-thread reader indicator lines (reader_slots.h)
 * and the writer's wait for published readers to leave.
 */
#include <sched.h>
#include <time.h>

#include "futex.h"
#include "reader_slots.h"

struct mln_reader_line mln_reader_lines[MLN_THREAD_SLOTS + 1];

#define WAIT_SPINS	1000u		/* cpu_relax turns before yielding */
#define WAIT_YIELDS	16u		/* sched_yield()s before sleeping */
#define WAIT_SLEEP_MAX_NS 1000000u	/* longest single sleep */

/* Wait for one slot to stop holding @p. */
static void wait_slot(void *_Atomic *slot, const void *p)
{
	unsigned int spins = 0, yields = 0;
	long sleep_ns = 1000;

	/* Seq_cst: the reader's release (a seq_cst or release store) is read here. */
	while (atomic_load_explicit(slot, memory_order_seq_cst) == p) {
		if (spins < WAIT_SPINS) {
			spins++;
			mln_cpu_relax();
		} else if (yields < WAIT_YIELDS) {
			yields++;
			sched_yield();
		} else {
			struct timespec ts = { 0, sleep_ns };

			nanosleep(&ts, NULL);
			if (sleep_ns < (long)WAIT_SLEEP_MAX_NS)
				sleep_ns *= 2;
		}
	}
}

void mln_reader_slots_wait(unsigned int i, const void *p)
{
	unsigned int high = mln_thread_index_high();

	for (unsigned int t = 1; t <= high; t++)
		wait_slot(mln_reader_slot_of(t, i), p);
}
