/* SPDX-License-Identifier: MIT */
/*
 * thread_index.h - a small number per live thread, for per-thread tables.
 *
 * Whatever must be written on a fast path without sharing a cache line with
 * another thread (lock statistics, reader indicators, page counters) lives
 * in a table with one entry per thread, and a thread finds its entry by this
 * number: 1..MLN_THREAD_SLOTS while it lives, returned to the pool when it
 * exits (a pthread key destructor), so two live threads never share one.
 * Threads beyond MLN_THREAD_SLOTS, and a thread whose destructors are
 * running, get MLN_THREAD_OVERFLOW: tables keep one shared entry for them,
 * updated with read-modify-writes (or, for reader indicators, none at all:
 * such a thread takes the slow path).
 */
#ifndef MLN_THREAD_INDEX_H
#define MLN_THREAD_INDEX_H

#include "futex.h"

#define MLN_THREAD_SLOTS 128				/* private numbers */
#define MLN_THREAD_OVERFLOW (MLN_THREAD_SLOTS + 1)	/* everyone else's */

/* The calling thread's number, 0 until first asked for. */
extern MLN_HOT_TLS _Thread_local unsigned int mln_thread_index_tls;
unsigned int mln_thread_index_assign(void);

/* The calling thread's number: 1..MLN_THREAD_SLOTS, or MLN_THREAD_OVERFLOW. */
static inline unsigned int mln_thread_index(void)
{
	unsigned int t = mln_thread_index_tls;

	return mln_likely(t) ? t : mln_thread_index_assign();
}

/*
 * The highest private number handed out so far: a scan of a per-thread
 * table stops there.  Sequentially consistent, as the number's assignment:
 * a scanner that misses a number handed out later is ordered before
 * everything that thread does with it (see the reader indicators' use).
 */
unsigned int mln_thread_index_high(void);

#endif /* MLN_THREAD_INDEX_H */
