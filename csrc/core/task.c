/* SPDX-License-Identifier: MIT */
/*
 * task.c - current task ids and task_kill().
 *
 * A killable wait must end when its task is killed, even while it sleeps in
 * futex(2) on a lock word.  Each thread that sleeps owns a task record
 * (thread-local, linked into a process-wide registry) naming the futex word
 * it sleeps on.  task_kill() marks the id killed, then for each record whose
 * thread runs that task it bumps the recorded word and wakes it: the bump
 * makes a futex_wait() that has not started yet return at once, so the kill
 * cannot be lost between the sleeper's last check and its sleep.  The lock
 * code treats its futex words as "something changed" counters only, so an
 * extra bump costs nothing but a recheck.
 *
 * Each record has a small mutex: task_kill() holds it while it touches the
 * recorded word, and the sleeper takes it to clear the word after waking, so
 * a killer never writes into a lock whose waiter has returned (and which may
 * since have been freed).
 *
 * Lock order: registry_lock, then a record's lock.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "task_internal.h"

struct task_rec {
	struct task_rec *next, *prev;	/* registry links, under registry_lock */
	_Atomic uint32_t lock;		/* guards wait_word/wait_shared vs task_kill() */
	_Atomic uint32_t *wait_word;	/* futex word the thread sleeps on, or NULL */
	uint64_t wait_task;		/* the task that sleeps there */
	int wait_shared;		/* that word is process-shared */
	int registered;			/* linked into the registry */
};

MLN_HOT_TLS _Thread_local uint64_t mln_tls_task;
static _Thread_local int tls_task_bound;	/* set by task_set_current(), not gettid() */
static _Thread_local struct task_rec tls_rec;

static _Atomic uint32_t registry_lock;
static struct task_rec *registry;		/* every thread that ever slept */
static pthread_key_t rec_key;			/* unregisters a record at thread exit */

/*
 * The killed set: open addressing over a fixed table, under registry_lock.
 * nr_killed lets the common "nobody is killed" check skip the lock.
 */
#define KILLED_SLOTS 1024
#define SLOT_FREE 0
#define SLOT_TOMBSTONE UINT64_MAX
static uint64_t killed[KILLED_SLOTS];
static _Atomic uint32_t nr_killed;

uint64_t mln_task_init_current(void)
{
	mln_tls_task = (uint64_t)syscall(SYS_gettid);
	return mln_tls_task;
}

uint64_t task_current(void)
{
	return mln_current_task();
}

int task_set_current(uint64_t id)
{
	if (id > MLN_TASK_ID_MAX)
		return -EINVAL;
	tls_task_bound = id != 0;
	mln_tls_task = id ? id : (uint64_t)syscall(SYS_gettid);
	return 0;
}

static size_t killed_hash(uint64_t id)
{
	return (size_t)((id * 0x9e3779b97f4a7c15ULL) >> 54) % KILLED_SLOTS;
}

/* Slot holding @id, or -1.  Under registry_lock. */
static long killed_find(uint64_t id)
{
	size_t h = killed_hash(id);

	for (size_t i = 0; i < KILLED_SLOTS; i++) {
		size_t s = (h + i) % KILLED_SLOTS;

		if (killed[s] == id)
			return (long)s;
		if (killed[s] == SLOT_FREE)
			return -1;
	}
	return -1;
}

static int killed_insert(uint64_t id)
{
	size_t h = killed_hash(id);

	if (killed_find(id) >= 0)
		return 0;
	for (size_t i = 0; i < KILLED_SLOTS; i++) {
		size_t s = (h + i) % KILLED_SLOTS;

		if (killed[s] == SLOT_FREE || killed[s] == SLOT_TOMBSTONE) {
			killed[s] = id;
			/* seq_cst: orders the insert before our reads of wait_word. */
			atomic_fetch_add(&nr_killed, 1);
			return 0;
		}
	}
	return -ENOMEM;
}

int task_is_killed(uint64_t id)
{
	int ret;

	/* seq_cst: pairs with the increment in killed_insert(). */
	if (id == 0 || atomic_load(&nr_killed) == 0)
		return 0;
	mln_mutex_lock(&registry_lock, 0);
	ret = killed_find(id) >= 0;
	mln_mutex_unlock(&registry_lock, 0);
	return ret;
}

int mln_current_task_killed(void)
{
	return task_is_killed(mln_current_task());
}

int task_kill(uint64_t id)
{
	int ret;

	if (id == 0 || id > MLN_TASK_ID_MAX)
		return -EINVAL;
	mln_mutex_lock(&registry_lock, 0);
	ret = killed_insert(id);
	if (ret == 0) {
		for (struct task_rec *r = registry; r; r = r->next) {
			mln_mutex_lock(&r->lock, 0);
			if (r->wait_word && r->wait_task == id) {
				atomic_fetch_add_explicit(r->wait_word, 1, memory_order_relaxed);
				mln_futex_wake(r->wait_word, INT_MAX, FUTEX_BITSET_MATCH_ANY,
					       r->wait_shared);
			}
			mln_mutex_unlock(&r->lock, 0);
		}
	}
	mln_mutex_unlock(&registry_lock, 0);
	return ret;
}

int task_revive(uint64_t id)
{
	long s;

	if (id == 0 || id > MLN_TASK_ID_MAX)
		return -EINVAL;
	mln_mutex_lock(&registry_lock, 0);
	s = killed_find(id);
	if (s >= 0) {
		killed[s] = SLOT_TOMBSTONE;
		atomic_fetch_sub(&nr_killed, 1);
	}
	mln_mutex_unlock(&registry_lock, 0);
	return s >= 0 ? 0 : -ESRCH;
}

/*
 * Thread exit.  A killed id stays killed until task_revive(), even after its
 * thread exits (the kill names a task, not a thread).
 */
static void rec_unregister(void *arg)
{
	struct task_rec *r = arg;

	if (!r->registered)
		return;		/* registered before a fork(), in the parent */
	mln_mutex_lock(&registry_lock, 0);
	if (r->prev)
		r->prev->next = r->next;
	else
		registry = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->registered = 0;
	mln_mutex_unlock(&registry_lock, 0);
}

/* In a forked child only the forking thread exists: start a fresh registry. */
static void task_atfork_child(void)
{
	atomic_store_explicit(&registry_lock, 0, memory_order_relaxed);
	registry = NULL;
	for (size_t i = 0; i < KILLED_SLOTS; i++)
		killed[i] = SLOT_FREE;
	atomic_store_explicit(&nr_killed, 0, memory_order_relaxed);
	atomic_store_explicit(&tls_rec.lock, 0, memory_order_relaxed);
	tls_rec.wait_word = NULL;
	tls_rec.next = tls_rec.prev = NULL;
	tls_rec.registered = 0;
	pthread_setspecific(rec_key, NULL);
	if (!tls_task_bound)
		mln_tls_task = 0;	/* the child's thread id differs */
}

__attribute__((constructor)) static void task_module_init(void)
{
	pthread_key_create(&rec_key, rec_unregister);
	pthread_atfork(NULL, NULL, task_atfork_child);
}

static struct task_rec *current_rec(void)
{
	struct task_rec *r = &tls_rec;

	if (mln_unlikely(!r->registered)) {
		mln_mutex_lock(&registry_lock, 0);
		r->next = registry;
		r->prev = NULL;
		if (registry)
			registry->prev = r;
		registry = r;
		r->registered = 1;
		mln_mutex_unlock(&registry_lock, 0);
		pthread_setspecific(rec_key, r);
	}
	return r;
}

int mln_task_wait_begin(_Atomic uint32_t *word, int shared)
{
	struct task_rec *r = current_rec();

	mln_mutex_lock(&r->lock, 0);
	r->wait_word = word;
	r->wait_task = mln_current_task();
	r->wait_shared = shared;
	mln_mutex_unlock(&r->lock, 0);
	/*
	 * Either task_kill() inserted the id before taking r->lock after us,
	 * and so saw wait_word and will bump it, or it inserted the id before
	 * we took r->lock, and the lock's acquire makes the insert visible to
	 * this check.
	 */
	return mln_current_task_killed();
}

void mln_task_wait_end(void)
{
	struct task_rec *r = &tls_rec;

	mln_mutex_lock(&r->lock, 0);
	r->wait_word = NULL;
	mln_mutex_unlock(&r->lock, 0);
}
