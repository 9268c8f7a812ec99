/* SPDX-License-Identifier: MIT */
/*
 * futex.h - thin wrappers around futex(2) and the monotonic clock.
 *
 * Internal to the core: nothing here is part of the public API.  Every
 * blocking primitive of the project ends in futex_wait_until() below, so this
 * is the one place that knows how the kernel is asked to sleep.
 */
#ifndef MLN_FUTEX_H
#define MLN_FUTEX_H

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MLN_NSEC_PER_SEC 1000000000ULL
/* "No deadline": futex_wait_until() sleeps without a timeout. */
#define MLN_NO_DEADLINE UINT64_MAX

#if defined(__x86_64__) || defined(__i386__)
#define mln_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define mln_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define mln_cpu_relax() ((void)0)
#endif

/*
 * Thread-locals read on every lock call.  In the shared object the bindings
 * load, the default TLS model costs a __tls_get_addr() call per access;
 * initial-exec is one %fs-relative load, and these few bytes fit the static
 * TLS surplus glibc keeps for dlopen()ed objects.
 */
#define MLN_HOT_TLS __attribute__((tls_model("initial-exec")))

/*
 * A store that a later load (of another word) must not pass: every
 * publish-then-look (Dekker) handshake of the project, such as a reader
 * naming itself in its slot and then reading the bias.  An exchange, not
 * a seq_cst store: C11 orders either before a later seq_cst load, but only
 * the exchange keeps that order where arm64's stlr/ldar pair is emulated
 * without it (qemu-user on an x86 host, where CI runs the arm64 tests: a
 * store-buffering litmus test saw both loads pass their stores with stlr,
 * never with the exchange); on x86 both compile to one xchg.
 */
#define mln_store_before_load(obj, val) \
	((void)atomic_exchange_explicit((obj), (val), memory_order_seq_cst))

#define mln_likely(x) __builtin_expect(!!(x), 1)
#define mln_unlikely(x) __builtin_expect(!!(x), 0)

/* CLOCK_MONOTONIC in nanoseconds: the clock of every deadline in the core. */
static inline uint64_t mln_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * MLN_NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* FUTEX_PRIVATE_FLAG unless the word lives in memory shared between processes. */
static inline int mln_futex_op(int op, int shared)
{
	return shared ? op : (op | FUTEX_PRIVATE_FLAG);
}

/*
 * Sleep while *word == expected, until woken, until a signal arrives, or until
 * the absolute CLOCK_MONOTONIC deadline passes.  @bitset selects which
 * FUTEX_WAKE_BITSET calls may wake us (FUTEX_BITSET_MATCH_ANY for all).
 * Returns 0 on a wake-up (possibly spurious), or -EAGAIN, -EINTR, -ETIMEDOUT.
 */
static inline int mln_futex_wait_until(_Atomic uint32_t *word, uint32_t expected,
				       uint64_t deadline_ns, uint32_t bitset, int shared)
{
	struct timespec ts, *tsp = NULL;
	long rc;

	if (deadline_ns != MLN_NO_DEADLINE) {
		ts.tv_sec = (time_t)(deadline_ns / MLN_NSEC_PER_SEC);
		ts.tv_nsec = (long)(deadline_ns % MLN_NSEC_PER_SEC);
		tsp = &ts;
	}
	/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. */
	rc = syscall(SYS_futex, (uint32_t *)word, mln_futex_op(FUTEX_WAIT_BITSET, shared),
		     expected, tsp, NULL, bitset);
	return rc == 0 ? 0 : -errno;
}

/* Wake up to @count waiters of @word whose wait bitset intersects @bitset. */
static inline void mln_futex_wake(_Atomic uint32_t *word, int count, uint32_t bitset, int shared)
{
	syscall(SYS_futex, (uint32_t *)word, mln_futex_op(FUTEX_WAKE_BITSET, shared), count,
		NULL, NULL, bitset);
}

/*
 * A three-state futex mutex (0 free, 1 held, 2 held with sleepers), after
 * Drepper's "Futexes Are Tricky", for the library's own process-private
 * locks (the task registry, a task record, statistics and caches): they live
 * in memory no caller writes, and guard sections of a few instructions, so
 * a brief spin precedes sleeping and a sleep needs no deadline.  The
 * rwsem's wait-lock, which lives in a caller's (maybe shared, maybe
 * garbage) memory, is wait_lock.h's instead, whose every wait is bounded.
 */
#define MLN_MUTEX_SPINS 100

static inline void mln_mutex_lock_slow(_Atomic uint32_t *m, int shared)
{
	uint32_t c;

	for (int i = 0; i < MLN_MUTEX_SPINS; i++) {
		c = 0;
		/* Acquire: the section's data were released by the last unlock. */
		if (atomic_compare_exchange_weak_explicit(m, &c, 1, memory_order_acquire,
							  memory_order_relaxed))
			return;
		mln_cpu_relax();
	}
	/* Mark "held with sleepers" so that the unlocker knows to wake someone. */
	while (atomic_exchange_explicit(m, 2, memory_order_acquire) != 0)
		mln_futex_wait_until(m, 2, MLN_NO_DEADLINE, FUTEX_BITSET_MATCH_ANY, shared);
}

static inline void mln_mutex_lock(_Atomic uint32_t *m, int shared)
{
	uint32_t c = 0;

	if (mln_likely(atomic_compare_exchange_strong_explicit(m, &c, 1, memory_order_acquire,
							      memory_order_relaxed)))
		return;
	mln_mutex_lock_slow(m, shared);
}

static inline void mln_mutex_unlock(_Atomic uint32_t *m, int shared)
{
	/* Release: publishes the section's writes to the next holder. */
	if (atomic_exchange_explicit(m, 0, memory_order_release) == 2)
		mln_futex_wake(m, 1, FUTEX_BITSET_MATCH_ANY, shared);
}

#endif /* MLN_FUTEX_H */
