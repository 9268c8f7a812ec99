/* SPDX-License-Identifier: MIT */
/*
 * thread_index.c - the pool of per-thread numbers (thread_index.h): a
 * bitmap under a futex mutex, touched once per thread at its first lock
 * call and once at its exit.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "futex.h"
#include "thread_index.h"

MLN_HOT_TLS _Thread_local unsigned int mln_thread_index_tls;

static _Atomic uint32_t pool_lock;
static uint64_t pool_used[MLN_THREAD_SLOTS / 64];
static _Atomic unsigned int pool_high;
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

_Static_assert(MLN_THREAD_SLOTS % 64 == 0, "the bitmap is whole words");

static void pool_release(void *arg)
{
	unsigned int t = (unsigned int)(uintptr_t)arg;

	/*
	 * Destructors of keys made after ours may still lock on this thread:
	 * from now on it uses the shared entries, since its number may go to
	 * a new thread at once.
	 */
	mln_thread_index_tls = MLN_THREAD_OVERFLOW;
	mln_mutex_lock(&pool_lock, 0);
	pool_used[(t - 1) / 64] &= ~(1ull << ((t - 1) % 64));
	mln_mutex_unlock(&pool_lock, 0);
}

/* In a forked child only the forking thread lives: only its number is taken. */
static void pool_atfork_child(void)
{
	unsigned int t = mln_thread_index_tls;

	atomic_store_explicit(&pool_lock, 0, memory_order_relaxed);
	memset(pool_used, 0, sizeof(pool_used));
	if (t && t <= MLN_THREAD_SLOTS)
		pool_used[(t - 1) / 64] |= 1ull << ((t - 1) % 64);
}

static void pool_init(void)
{
	pthread_key_create(&pool_key, pool_release);
	pthread_atfork(NULL, NULL, pool_atfork_child);
}

unsigned int mln_thread_index_assign(void)
{
	unsigned int t = MLN_THREAD_OVERFLOW;

	pthread_once(&pool_once, pool_init);
	mln_mutex_lock(&pool_lock, 0);
	for (unsigned int w = 0; w < MLN_THREAD_SLOTS / 64; w++) {
		if (~pool_used[w]) {
			unsigned int b = (unsigned int)__builtin_ctzll(~pool_used[w]);

			pool_used[w] |= 1ull << b;
			t = w * 64 + b + 1;
			break;
		}
	}
	/* Seq_cst: see mln_thread_index_high(). */
	if (t <= MLN_THREAD_SLOTS && t > atomic_load_explicit(&pool_high, memory_order_relaxed))
		mln_store_before_load(&pool_high, t);
	mln_mutex_unlock(&pool_lock, 0);
	if (t <= MLN_THREAD_SLOTS)
		pthread_setspecific(pool_key, (void *)(uintptr_t)t);
	mln_thread_index_tls = t;
	return t;
}

unsigned int mln_thread_index_high(void)
{
	return atomic_load_explicit(&pool_high, memory_order_seq_cst);
}
