/* SPDX-License-Identifier: MIT */
/*
 * lockdep.c - the lock-order checker of debug mode (interface in lockdep.h,
 * design note in docs/lockdep.md).
 *
 * Design, in the kernel's terms:
 *
 *  - A node of the dependency graph is a (class, subclass) pair, at most
 *    MLN_LOCKDEP_MAX_CLASSES * RWSEM_MAX_SUBCLASSES = 2048 of them, so the
 *    graph is a bitmap adjacency matrix (512 KiB of zero-fill memory, whose
 *    rows cost RSS only once a class has edges).  The first evidence of each
 *    edge (both acquisition sites and the task) is kept in an edge array,
 *    reached from its source node through a singly linked list.
 *
 *  - The graph is kept acyclic: an edge that would close a cycle is the
 *    violation being reported and is never added, in any mode.  Hence when
 *    every lock the task holds already has an edge to the new node, no cycle
 *    can appear and no search is needed (the kernel's chain cache plays that
 *    part); otherwise one breadth-first search from the new node finds every
 *    held node it already reaches.
 *
 *  - Each task (task_current(), not the thread: an embedder migrates tasks
 *    between threads) has a stack of held locks, in a hash table keyed by
 *    task id.  A task that holds nothing has no record, so thread churn does
 *    not grow the table; records are recycled through a free list.
 *
 *  - Raise mode refuses a violating acquisition before anything is
 *    recorded; warn mode reports each distinct violation once (the kernel
 *    stops at the first; we keep going, but one-shot per violation keeps the
 *    output bounded) and proceeds.  Off mode only tracks held locks.
 *
 * Locking: one futex mutex, ld_lock, guards the graph, the task table, the
 * one-shot set and the site cache.  Never held while calling out: the site
 * hook and the report hook may enter Python and take the GIL, and dladdr()
 * takes the dynamic loader's lock, which a constructor run by dlopen() holds
 * while it may take an mm lock.  Classes are append-only and published with
 * a release store, so their names are read without the lock.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "futex.h"
#include "lockdep.h"
#include "rwsem.h"
#include "task_internal.h"

#define LD_SUBCLASSES		RWSEM_MAX_SUBCLASSES
#define LD_NODES		(MLN_LOCKDEP_MAX_CLASSES * LD_SUBCLASSES)
#define LD_NODE_WORDS		(LD_NODES / 64)
/* Report text, truncated beyond this. */
#define LD_REPORT_MAX		4096
#define LD_SITE_MAX		256
/* A long cycle is shown as its first and last LD_PATH_SHOWN edges. */
#define LD_PATH_SHOWN		4
/* A bad-unlock report lists at most this many held locks. */
#define LD_HELD_SHOWN		16

_Static_assert(LD_NODES % 64 == 0, "the adjacency rows are whole words");
_Static_assert(LD_NODES <= 65536, "node ids are uint16_t");

typedef const char *(*ld_site_hook_fn)(void);
typedef void (*ld_report_hook_fn)(int kind, const char *text);

/* One lock a task holds. */
struct ld_held {
	const void *lock;
	const char *site;	/* where it was acquired; valid forever */
	uint16_t node;		/* class * LD_SUBCLASSES + subclass */
	uint8_t write;
	uint8_t trylock;
};

struct ld_task {
	uint64_t id;
	struct ld_task *next_free;
	int depth;
	/* Overflowed its stack: not tracked (nor checked) until reset. */
	bool lost;
	struct ld_held held[MLN_LOCKDEP_MAX_DEPTH];
};

/* The first evidence of "@from was held when @to was acquired". */
struct ld_edge {
	const char *from_site, *to_site;
	uint64_t task;
	uint32_t next_out;	/* next edge leaving @from, as index + 1; 0 ends */
	uint16_t from, to;
};

/* Open addressing, linear probing; key 0 marks a free slot. */
struct ld_slot {
	uint64_t key;
	void *val;
};

struct ld_map {
	struct ld_slot *slots;
	size_t mask;		/* capacity - 1 */
	size_t used;
};

static _Atomic uint32_t ld_lock;
static atomic_int ld_debug;
static atomic_int ld_mode = MLN_LOCKDEP_RAISE;
static _Atomic(ld_site_hook_fn) ld_site_hook;
static _Atomic(ld_report_hook_fn) ld_report_hook;

/* Append-only: written under ld_lock, published by the release store of ld_nr_classes. */
static const char *ld_class_names[MLN_LOCKDEP_MAX_CLASSES] = { "mm->mmap_lock" };
static atomic_int ld_nr_classes = 1;

/* Everything below is under ld_lock. */
static uint64_t ld_adj[LD_NODES][LD_NODE_WORDS];
static uint32_t ld_first_out[LD_NODES];
static struct ld_edge *ld_edges;
static uint32_t ld_nr_edges, ld_cap_edges;
static struct ld_map ld_tasks;		/* task id -> struct ld_task */
static struct ld_task *ld_free_tasks;
static struct ld_map ld_reported;	/* one-shot keys of warned violations */
static struct ld_map ld_sites;		/* ip -> interned "symbol+0xoff" */
static bool ld_overflow_warned;
/* An internal allocation failed: the checker is off until reset. */
static bool ld_disabled;
/* fork(): the forking task and its thread id, saved by the prepare handler. */
static uint64_t ld_fork_task, ld_fork_tid;

/*
 * Each thread's report buffers: reports are built in scratch; only a refusal
 * copies one to report.  On the heap, made on first use and freed at thread
 * exit: 8 KiB of thread-locals would keep the library's hot thread-locals
 * (task.c, mmap_lock_stats.c) from the initial-exec TLS model, whose static
 * space is small.  NULL when out of memory: reports are then empty.
 */
struct ld_buf {
	char *p;
	size_t len, cap;
};

struct ld_bufs {
	char report[LD_REPORT_MAX];
	char scratch[LD_REPORT_MAX];
};
static _Thread_local struct ld_bufs *tls_bufs;
static _Thread_local int tls_report_kind;
static pthread_key_t ld_bufs_key;
static pthread_once_t ld_bufs_once = PTHREAD_ONCE_INIT;
static char ld_no_report[1];	/* "" when there are no buffers; never written */

static void ld_bufs_key_init(void)
{
	pthread_key_create(&ld_bufs_key, free);
}

static struct ld_bufs *bufs(void)
{
	if (!tls_bufs) {
		pthread_once(&ld_bufs_once, ld_bufs_key_init);
		tls_bufs = calloc(1, sizeof(*tls_bufs));
		if (tls_bufs)
			pthread_setspecific(ld_bufs_key, tls_bufs);
	}
	return tls_bufs;
}

/* A cleared scratch buffer to build a report in. */
static struct ld_buf scratch_buf(void)
{
	struct ld_bufs *bb = bufs();

	if (!bb)
		return (struct ld_buf){ .p = ld_no_report, .cap = 0 };
	bb->scratch[0] = '\0';
	return (struct ld_buf){ .p = bb->scratch, .cap = LD_REPORT_MAX };
}

/* ---- a small hash map ---------------------------------------------------- */

static size_t map_hash(uint64_t key)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdULL;
	key ^= key >> 33;
	return (size_t)key;
}

/* The slot holding @key, or the free slot where it would go; NULL if no table. */
static struct ld_slot *map_slot(const struct ld_map *m, uint64_t key)
{
	if (!m->slots)
		return NULL;
	for (size_t i = map_hash(key) & m->mask;; i = (i + 1) & m->mask) {
		if (m->slots[i].key == key || m->slots[i].key == 0)
			return &m->slots[i];
	}
}

static void *map_get(const struct ld_map *m, uint64_t key)
{
	struct ld_slot *s = map_slot(m, key);

	return s && s->key == key ? s->val : NULL;
}

static int map_grow(struct ld_map *m)
{
	size_t old_cap = m->slots ? m->mask + 1 : 0;
	size_t cap = old_cap ? old_cap * 2 : 64;
	struct ld_slot *old = m->slots, *fresh = calloc(cap, sizeof(*fresh));

	if (!fresh)
		return -ENOMEM;
	m->slots = fresh;
	m->mask = cap - 1;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i].key)
			*map_slot(m, old[i].key) = old[i];
	}
	free(old);
	return 0;
}

static int map_put(struct ld_map *m, uint64_t key, void *val)
{
	struct ld_slot *s;

	/* At most half full, so that probe runs stay short. */
	if ((m->used + 1) * 2 > (m->slots ? m->mask + 1 : 0) && map_grow(m))
		return -ENOMEM;
	s = map_slot(m, key);
	if (s->key == 0) {
		s->key = key;
		m->used++;
	}
	s->val = val;
	return 0;
}

/* Remove @key by shifting back the entries after it: no tombstones pile up. */
static void map_del(struct ld_map *m, uint64_t key)
{
	struct ld_slot *s = map_slot(m, key);
	size_t i, j;

	if (!s || s->key != key)
		return;
	i = j = (size_t)(s - m->slots);
	for (;;) {
		size_t home;

		j = (j + 1) & m->mask;
		if (m->slots[j].key == 0)
			break;
		home = map_hash(m->slots[j].key) & m->mask;
		/* It may fill the hole unless its home lies after the hole. */
		if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	m->slots[i].key = 0;
	m->slots[i].val = NULL;
	m->used--;
}

/* Empty the map, keeping its table (reachable, so not a leak). */
static void map_clear(struct ld_map *m)
{
	if (m->slots)
		memset(m->slots, 0, (m->mask + 1) * sizeof(*m->slots));
	m->used = 0;
}

/* ---- report text ---------------------------------------------------------- */


__attribute__((format(printf, 2, 3)))
static void buf_printf(struct ld_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->len + 1 >= b->cap)
		return;		/* full: the report is truncated */
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	b->len += (size_t)n;
	if (b->len > b->cap - 1)
		b->len = b->cap - 1;
}

/* "mm->mmap_lock", or "mm->mmap_lock/1" for a subclass, as the kernel prints it. */
static void buf_node(struct ld_buf *b, unsigned int node)
{
	unsigned int sub = node % LD_SUBCLASSES;

	buf_printf(b, "%s", ld_class_names[node / LD_SUBCLASSES]);
	if (sub)
		buf_printf(b, "/%u", sub);
}

static const char *mode_str(int write)
{
	return write ? "write" : "read";
}

/* Warn mode: the report hook, else stderr.  Never under ld_lock. */
static void deliver(int kind, const char *text)
{
	ld_report_hook_fn hook = atomic_load_explicit(&ld_report_hook, memory_order_acquire);

	if (hook) {
		hook(kind, text);
		return;
	}
	fprintf(stderr, "\n======================================================\n"
			"WARNING: %s\n", text);
	fflush(stderr);
}

/* Raise mode: the refused call's report, for mln_lockdep_last_report(). */
static void keep_report(int kind)
{
	struct ld_bufs *bb = bufs();

	if (bb)
		memcpy(bb->report, bb->scratch, sizeof(bb->report));
	tls_report_kind = kind;
}

/*
 * Whether to report a violation now: raise mode refuses every time, warn mode
 * reports each distinct violation once.  Under ld_lock.
 */
static bool report_once(int mode, uint64_t key)
{
	if (mode == MLN_LOCKDEP_RAISE)
		return true;
	if (map_get(&ld_reported, key))
		return false;
	/* Out of memory: better a repeated warning than a lost one. */
	(void)map_put(&ld_reported, key, (void *)1);
	return true;
}

static uint64_t node_pair_key(int kind, unsigned int a, unsigned int b)
{
	return (uint64_t)kind << 60 | (uint64_t)a << 20 | b;
}

/* ---- call sites ----------------------------------------------------------- */

static void site_format(const void *ip, char *buf, size_t len)
{
	Dl_info info;

	if (!dladdr(ip, &info)) {
		snprintf(buf, len, "%p", ip);
	} else if (info.dli_sname && info.dli_saddr) {
		snprintf(buf, len, "%s+0x%tx", info.dli_sname,
			 (const char *)ip - (const char *)info.dli_saddr);
	} else if (info.dli_fname && info.dli_fname[0] && info.dli_fbase) {
		/*
		 * No exported symbol (a static function, an executable
		 * without -rdynamic): the object and offset, for addr2line.
		 */
		const char *base = strrchr(info.dli_fname, '/');

		snprintf(buf, len, "%s+0x%tx", base ? base + 1 : info.dli_fname,
			 (const char *)ip - (const char *)info.dli_fbase);
	} else {
		snprintf(buf, len, "%p", ip);
	}
}

/* @ip as an interned "symbol+0xoff", formatted once per address. */
static const char *site_intern(const void *ip)
{
	uint64_t key = (uint64_t)(uintptr_t)ip;
	char buf[LD_SITE_MAX];
	const char *old;
	char *s;

	if (!ip)
		return "(unknown)";
	mln_mutex_lock(&ld_lock, 0);
	s = map_get(&ld_sites, key);
	mln_mutex_unlock(&ld_lock, 0);
	if (s)
		return s;

	/* dladdr() takes the loader's lock: not under ld_lock. */
	site_format(ip, buf, sizeof(buf));
	s = strdup(buf);
	if (!s)
		return "(out of memory)";
	mln_mutex_lock(&ld_lock, 0);
	old = map_get(&ld_sites, key);
	if (!old && map_put(&ld_sites, key, s) != 0)
		old = "(out of memory)";
	mln_mutex_unlock(&ld_lock, 0);
	if (old) {
		free(s);	/* another thread formatted it first */
		return old;
	}
	return s;
}

/* Where the caller is.  Never under ld_lock: the hook may take the GIL. */
static const char *site_of(const void *ip)
{
	ld_site_hook_fn hook = atomic_load_explicit(&ld_site_hook, memory_order_acquire);
	const char *s;

	if (hook && (s = hook()) != NULL)
		return s;
	return site_intern(ip);
}

/* ---- per-task held-lock stacks -------------------------------------------- */

/* Internal allocation failure: stop checking rather than report nonsense. */
static void ld_disable(void)
{
	if (!ld_disabled)
		fprintf(stderr, "lockdep: out of memory; lock-order checking is off until "
				"mln_lockdep_reset()\n");
	ld_disabled = true;
}

static struct ld_task *task_find(uint64_t id)
{
	return map_get(&ld_tasks, id);
}

static struct ld_task *task_get(uint64_t id)
{
	struct ld_task *t = task_find(id);

	if (t)
		return t;
	t = ld_free_tasks;
	if (t)
		ld_free_tasks = t->next_free;
	else if (!(t = malloc(sizeof(*t))))
		return NULL;
	t->id = id;
	t->depth = 0;
	t->lost = false;
	if (map_put(&ld_tasks, id, t) != 0) {
		t->next_free = ld_free_tasks;
		ld_free_tasks = t;
		return NULL;
	}
	return t;
}

/* A task that holds nothing needs no record. */
static void task_put(struct ld_task *t)
{
	if (t->depth || t->lost)
		return;
	map_del(&ld_tasks, t->id);
	t->next_free = ld_free_tasks;
	ld_free_tasks = t;
}

/* The task's most recent entry for @lock, or -1. */
static int held_find(const struct ld_task *t, const void *lock)
{
	for (int i = t->depth - 1; i >= 0; i--) {
		if (t->held[i].lock == lock)
			return i;
	}
	return -1;
}

static void held_remove(struct ld_task *t, int i)
{
	memmove(&t->held[i], &t->held[i + 1], (size_t)(t->depth - i - 1) * sizeof(t->held[0]));
	t->depth--;
}

static void task_overflow(struct ld_task *t)
{
	t->lost = true;
	if (ld_overflow_warned)
		return;
	ld_overflow_warned = true;
	fprintf(stderr, "lockdep: task %" PRIu64 " holds more than %d locks; it is no longer "
			"tracked (MLN_LOCKDEP_MAX_DEPTH too low?)\n", t->id,
		MLN_LOCKDEP_MAX_DEPTH);
}

/* ---- the dependency graph ------------------------------------------------- */

static bool edge_has(unsigned int from, unsigned int to)
{
	return ld_adj[from][to / 64] >> (to % 64) & 1;
}

static const struct ld_edge *edge_find(unsigned int from, unsigned int to)
{
	for (uint32_t i = ld_first_out[from]; i; i = ld_edges[i - 1].next_out) {
		if (ld_edges[i - 1].to == to)
			return &ld_edges[i - 1];
	}
	return NULL;
}

static int edge_add(const struct ld_held *from, const struct ld_held *to, uint64_t task)
{
	struct ld_edge *e;

	if (ld_nr_edges == ld_cap_edges) {
		uint32_t cap = ld_cap_edges ? ld_cap_edges * 2 : 256;

		e = realloc(ld_edges, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		ld_edges = e;
		ld_cap_edges = cap;
	}
	e = &ld_edges[ld_nr_edges++];
	e->from_site = from->site;
	e->to_site = to->site;
	e->task = task;
	e->from = from->node;
	e->to = to->node;
	e->next_out = ld_first_out[from->node];
	ld_first_out[from->node] = ld_nr_edges;
	ld_adj[from->node][to->node / 64] |= 1ULL << (to->node % 64);
	return 0;
}

static bool bit_test(const uint64_t *map, unsigned int n)
{
	return map[n / 64] >> (n % 64) & 1;
}

/*
 * Breadth-first search from @src: sets in @reached every node it leads to,
 * and in @parent the node each was first reached from, so that the shortest
 * path back to @src can be read off.  Each node's row is scanned once.
 */
static void graph_reach(unsigned int src, uint64_t reached[LD_NODE_WORDS],
			uint16_t parent[LD_NODES])
{
	uint16_t queue[LD_NODES];
	unsigned int head = 0, tail = 0;

	memset(reached, 0, LD_NODE_WORDS * sizeof(reached[0]));
	reached[src / 64] |= 1ULL << (src % 64);
	queue[tail++] = (uint16_t)src;
	while (head < tail) {
		unsigned int u = queue[head++];

		for (unsigned int w = 0; w < LD_NODE_WORDS; w++) {
			uint64_t fresh = ld_adj[u][w] & ~reached[w];

			reached[w] |= fresh;
			while (fresh) {
				unsigned int v = w * 64 + (unsigned int)__builtin_ctzll(fresh);

				fresh &= fresh - 1;
				parent[v] = (uint16_t)u;
				queue[tail++] = (uint16_t)v;
			}
		}
	}
}

/* ---- reports -------------------------------------------------------------- */

static void report_recursion(struct ld_buf *b, uint64_t task, const struct ld_held *prev,
			     const struct ld_held *next)
{
	buf_printf(b, "possible recursive locking detected\n task %" PRIu64
		   " is trying to acquire ", task);
	buf_node(b, next->node);
	buf_printf(b, " (lock %p) for %s at %s\n but task already holds ", next->lock,
		   mode_str(next->write), next->site);
	buf_node(b, prev->node);
	buf_printf(b, " (lock %p) for %s, acquired at %s\n hint: ", prev->lock,
		   mode_str(prev->write), prev->site);
	if (prev->lock != next->lock)
		buf_printf(b, "annotate the second acquisition with "
			      "mmap_write_lock_nested(mm, SINGLE_DEPTH_NESTING) if the two "
			      "locks are distinct and ordered");
	else if (!prev->write && !next->write)
		buf_printf(b, "a read lock taken twice deadlocks once a writer queues "
			      "between the two acquisitions");
	else
		buf_printf(b, "the task would wait for itself");
}

/* "A -> B in task T: A acquired at S, then B at S" for the edge @from -> @to. */
static void report_edge(struct ld_buf *b, unsigned int from, unsigned int to)
{
	const struct ld_edge *e = edge_find(from, to);

	buf_printf(b, "\n   ");
	buf_node(b, from);
	buf_printf(b, " -> ");
	buf_node(b, to);
	if (!e)
		return;		/* cannot happen: the search followed this edge */
	buf_printf(b, " in task %" PRIu64 ": ", e->task);
	buf_node(b, from);
	buf_printf(b, " acquired at %s, then ", e->from_site);
	buf_node(b, to);
	buf_printf(b, " at %s", e->to_site);
}

static void report_inversion(struct ld_buf *b, uint64_t task, const struct ld_held *held,
			     const struct ld_held *next, const uint16_t parent[LD_NODES])
{
	uint16_t path[LD_NODES];
	unsigned int n = 0, edges;

	/* path[n - 1] = next's node ... path[0] = held's node */
	for (unsigned int v = held->node; v != next->node; v = parent[v])
		path[n++] = (uint16_t)v;
	path[n++] = next->node;
	edges = n - 1;

	buf_printf(b, "possible circular locking dependency detected\n task %" PRIu64
		   " is trying to acquire ", task);
	buf_node(b, next->node);
	buf_printf(b, " (lock %p) for %s at %s\n while holding ", next->lock,
		   mode_str(next->write), next->site);
	buf_node(b, held->node);
	buf_printf(b, " (lock %p) for %s, acquired at %s\n but the opposite order ",
		   held->lock, mode_str(held->write), held->site);
	for (unsigned int k = n; k-- > 0;) {
		buf_node(b, path[k]);
		if (k)
			buf_printf(b, " -> ");
	}
	buf_printf(b, " was seen before:");
	for (unsigned int k = 0; k < edges; k++) {
		unsigned int hi = n - 1 - k;

		if (edges > 2 * LD_PATH_SHOWN && k == LD_PATH_SHOWN) {
			buf_printf(b, "\n   ... %u more ...", edges - 2 * LD_PATH_SHOWN);
			k = edges - LD_PATH_SHOWN - 1;
			continue;
		}
		report_edge(b, path[hi], path[hi - 1]);
	}
	buf_printf(b, "\n hint: take these locks in one order everywhere; distinct locks of "
		      "one class taken in a fixed order need distinct subclasses "
		      "(mmap_write_lock_nested, down_write_nested)");
}

static void report_bad_unlock(struct ld_buf *b, uint64_t task, const struct ld_task *t,
			      const void *lock, const char *site)
{
	int depth = t ? t->depth : 0;

	buf_printf(b, "bad unlock balance detected\n task %" PRIu64 " is trying to release "
		   "lock %p at %s\n but the task does not hold it; it holds %d lock%s%s", task,
		   lock, site, depth, depth == 1 ? "" : "s", depth ? ":" : "");
	for (int i = 0; i < depth && i < LD_HELD_SHOWN; i++) {
		const struct ld_held *h = &t->held[i];

		buf_printf(b, "\n   #%d: ", i);
		buf_node(b, h->node);
		buf_printf(b, " (lock %p) for %s%s, acquired at %s", h->lock, mode_str(h->write),
			   h->trylock ? " (trylock)" : "", h->site);
	}
	if (depth > LD_HELD_SHOWN)
		buf_printf(b, "\n   ...");
}

/* ---- the checks ----------------------------------------------------------- */

/*
 * Check @next against the locks @t holds, and unless raise mode refuses,
 * record the new dependencies.  Returns the kind of the report written to
 * @b, or 0 when there is none to deliver.  Under ld_lock.
 */
static int check_and_record(struct ld_task *t, const struct ld_held *next, int mode,
			    struct ld_buf *b)
{
	uint64_t reached[LD_NODE_WORDS], fresh[LD_NODE_WORDS] = { 0 };
	uint16_t parent[LD_NODES];
	bool search = false;
	int kind = 0;

	/* Recursion: held trylocks count, since blocking on one waits forever. */
	for (int i = t->depth - 1; i >= 0; i--) {
		if (t->held[i].node != next->node)
			continue;
		if (report_once(mode, node_pair_key(MLN_LOCKDEP_RECURSION, next->node,
						     next->node))) {
			report_recursion(b, t->id, &t->held[i], next);
			kind = MLN_LOCKDEP_RECURSION;
			if (mode == MLN_LOCKDEP_RAISE)
				return kind;
		}
		break;
	}

	/* Only held nodes without an edge to @next yet can close a cycle. */
	for (int i = 0; i < t->depth; i++) {
		const struct ld_held *p = &t->held[i];

		if (p->trylock || p->node == next->node || edge_has(p->node, next->node))
			continue;
		fresh[p->node / 64] |= 1ULL << (p->node % 64);
		search = true;
	}
	if (!search)
		return kind;
	graph_reach(next->node, reached, parent);

	/* Outermost first, as a reader of the report expects. */
	for (int i = 0; i < t->depth; i++) {
		const struct ld_held *p = &t->held[i];

		if (!bit_test(fresh, p->node) || !bit_test(reached, p->node))
			continue;
		fresh[p->node / 64] &= ~(1ULL << (p->node % 64));	/* never close a cycle */
		if (kind || !report_once(mode, node_pair_key(MLN_LOCKDEP_INVERSION, next->node,
							       p->node)))
			continue;
		report_inversion(b, t->id, p, next, parent);
		kind = MLN_LOCKDEP_INVERSION;
		if (mode == MLN_LOCKDEP_RAISE)
			return kind;
	}

	for (int i = 0; i < t->depth; i++) {
		const struct ld_held *p = &t->held[i];

		if (!bit_test(fresh, p->node))
			continue;
		fresh[p->node / 64] &= ~(1ULL << (p->node % 64));
		if (edge_add(p, next, t->id) != 0) {
			ld_disable();
			break;
		}
	}
	return kind;
}

int mln_lockdep_acquire(const void *lock, int cls, int subclass, int write, int trylock,
			const void *ip)
{
	int mode = atomic_load_explicit(&ld_mode, memory_order_relaxed);
	struct ld_buf b = { .p = ld_no_report, .cap = 0 };
	struct ld_held next;
	struct ld_task *t;
	uint64_t id;
	int kind = 0, ret = 0;

	tls_report_kind = 0;	/* a report found after this call is this call's */
	if (cls < 0 || cls >= atomic_load_explicit(&ld_nr_classes, memory_order_acquire) ||
	    subclass < 0 || subclass >= LD_SUBCLASSES)
		return -EINVAL;
	next.lock = lock;
	next.site = site_of(ip);	/* first: the hook may take the GIL */
	next.node = (uint16_t)(cls * LD_SUBCLASSES + subclass);
	next.write = !!write;
	next.trylock = !!trylock;
	id = mln_current_task();

	mln_mutex_lock(&ld_lock, 0);
	if (ld_disabled)
		goto out;
	t = task_get(id);
	if (!t) {
		ld_disable();
		goto out;
	}
	if (t->lost)
		goto out;
	if (t->depth == MLN_LOCKDEP_MAX_DEPTH) {
		task_overflow(t);
		goto out;
	}
	/* Trylocks cannot deadlock; off mode keeps no dependencies. */
	if (!trylock && mode != MLN_LOCKDEP_OFF) {
		b = scratch_buf();
		kind = check_and_record(t, &next, mode, &b);
		if (kind && mode == MLN_LOCKDEP_RAISE) {
			keep_report(kind);
			ret = -EDEADLK;
			task_put(t);
			goto out;
		}
	}
	t->held[t->depth++] = next;
out:
	mln_mutex_unlock(&ld_lock, 0);
	if (kind && mode == MLN_LOCKDEP_WARN)
		deliver(kind, b.p);
	return ret;
}

void mln_lockdep_acquired(const void *lock, int success)
{
	struct ld_task *t;
	int i;

	if (success)
		return;
	mln_mutex_lock(&ld_lock, 0);
	t = task_find(mln_current_task());
	if (t && !t->lost && (i = held_find(t, lock)) >= 0) {
		held_remove(t, i);
		task_put(t);
	}
	mln_mutex_unlock(&ld_lock, 0);
}

int mln_lockdep_release(const void *lock, const void *ip)
{
	uint64_t id = mln_current_task();
	struct ld_task *t;
	const char *site;
	int mode, kind = 0, i;
	struct ld_buf b;

	tls_report_kind = 0;	/* a report found after this call is this call's */
	mln_mutex_lock(&ld_lock, 0);
	t = task_find(id);
	if (ld_disabled || (t && t->lost)) {
		mln_mutex_unlock(&ld_lock, 0);
		return 0;
	}
	if (t && (i = held_find(t, lock)) >= 0) {
		/* Any position: out-of-order release is fine. */
		held_remove(t, i);
		task_put(t);
		mln_mutex_unlock(&ld_lock, 0);
		return 0;
	}
	mln_mutex_unlock(&ld_lock, 0);

	mode = atomic_load_explicit(&ld_mode, memory_order_relaxed);
	if (mode == MLN_LOCKDEP_OFF)
		return 0;
	/* The site is wanted only now, and the hook must run unlocked. */
	site = site_of(ip);
	b = scratch_buf();
	mln_mutex_lock(&ld_lock, 0);
	if (report_once(mode, (uint64_t)MLN_LOCKDEP_BAD_UNLOCK << 60 |
			      ((uint64_t)(uintptr_t)site & ((1ULL << 60) - 1)))) {
		report_bad_unlock(&b, id, task_find(id), lock, site);
		kind = MLN_LOCKDEP_BAD_UNLOCK;
	}
	mln_mutex_unlock(&ld_lock, 0);
	if (mode == MLN_LOCKDEP_RAISE) {
		keep_report(kind);
		return -EDEADLK;
	}
	if (kind)
		deliver(kind, b.p);
	return 0;
}

void mln_lockdep_downgrade(const void *lock)
{
	struct ld_task *t;
	int i;

	mln_mutex_lock(&ld_lock, 0);
	t = task_find(mln_current_task());
	if (t && !t->lost && (i = held_find(t, lock)) >= 0)
		t->held[i].write = 0;
	mln_mutex_unlock(&ld_lock, 0);
}

int mln_lockdep_held(const void *lock, int write)
{
	struct ld_task *t;
	int ret = 0;

	mln_mutex_lock(&ld_lock, 0);
	t = task_find(mln_current_task());
	if (ld_disabled || (t && t->lost)) {
		ret = 1;	/* unknown: do not fail assertions, as the kernel */
	} else if (t) {
		for (int i = 0; i < t->depth && !ret; i++)
			ret = t->held[i].lock == lock && (!write || t->held[i].write);
	}
	mln_mutex_unlock(&ld_lock, 0);
	return ret;
}

int mln_lockdep_depth(void)
{
	struct ld_task *t;
	int depth;

	mln_mutex_lock(&ld_lock, 0);
	t = task_find(mln_current_task());
	depth = t ? t->depth : 0;
	mln_mutex_unlock(&ld_lock, 0);
	return depth;
}

/* ---- configuration -------------------------------------------------------- */

int mln_set_debug(int on)
{
	atomic_store_explicit(&ld_debug, !!on, memory_order_relaxed);
	return 0;
}

int mln_get_debug(void)
{
	return atomic_load_explicit(&ld_debug, memory_order_relaxed);
}

int mln_lockdep_set_mode(int mode)
{
	if (mode != MLN_LOCKDEP_OFF && mode != MLN_LOCKDEP_WARN && mode != MLN_LOCKDEP_RAISE)
		return -EINVAL;
	atomic_store_explicit(&ld_mode, mode, memory_order_relaxed);
	return 0;
}

int mln_lockdep_get_mode(void)
{
	return atomic_load_explicit(&ld_mode, memory_order_relaxed);
}

int mln_lockdep_class(const char *name)
{
	int n, ret = -ENOSPC;
	char *copy;

	if (!name)
		return -EINVAL;
	mln_mutex_lock(&ld_lock, 0);
	n = atomic_load_explicit(&ld_nr_classes, memory_order_relaxed);
	for (int i = 0; i < n; i++) {
		if (strcmp(ld_class_names[i], name) == 0) {
			ret = i;
			goto out;
		}
	}
	if (n == MLN_LOCKDEP_MAX_CLASSES)
		goto out;
	copy = strdup(name);
	if (!copy) {
		ret = -ENOMEM;
		goto out;
	}
	ld_class_names[n] = copy;
	/* Release: class_name() readers see the name before the count. */
	atomic_store_explicit(&ld_nr_classes, n + 1, memory_order_release);
	ret = n;
out:
	mln_mutex_unlock(&ld_lock, 0);
	return ret;
}

const char *mln_lockdep_class_name(int cls)
{
	if (cls < 0 || cls >= atomic_load_explicit(&ld_nr_classes, memory_order_acquire))
		return NULL;
	return ld_class_names[cls];
}

int mln_lockdep_last_report_kind(void)
{
	return tls_report_kind;
}

const char *mln_lockdep_last_report(void)
{
	return tls_report_kind && tls_bufs ? tls_bufs->report : "";
}

void mln_lockdep_set_site_hook(const char *(*hook)(void))
{
	atomic_store_explicit(&ld_site_hook, hook, memory_order_release);
}

void mln_lockdep_set_report_hook(void (*hook)(int kind, const char *text))
{
	atomic_store_explicit(&ld_report_hook, hook, memory_order_release);
}

/*
 * Every task record but @keep's (0: none) goes back to the free list.  The
 * table is rebuilt rather than deleted from, which would shift entries under
 * the scan.
 */
static void drop_tasks(uint64_t keep)
{
	struct ld_task *kept = NULL;

	for (size_t i = 0; ld_tasks.slots && i <= ld_tasks.mask; i++) {
		struct ld_task *t = ld_tasks.slots[i].val;

		if (!ld_tasks.slots[i].key)
			continue;
		if (keep && t->id == keep) {
			kept = t;
			continue;
		}
		t->next_free = ld_free_tasks;
		ld_free_tasks = t;
	}
	map_clear(&ld_tasks);
	if (kept)
		(void)map_put(&ld_tasks, keep, kept);	/* the table exists: cannot fail */
}

void mln_lockdep_reset(void)
{
	mln_mutex_lock(&ld_lock, 0);
	/* Only registered classes have edges: the other rows were never written. */
	memset(ld_adj, 0, (size_t)atomic_load_explicit(&ld_nr_classes, memory_order_relaxed) *
			  LD_SUBCLASSES * sizeof(ld_adj[0]));
	memset(ld_first_out, 0, sizeof(ld_first_out));
	ld_nr_edges = 0;
	drop_tasks(0);
	map_clear(&ld_reported);
	ld_overflow_warned = false;
	ld_disabled = false;
	mln_mutex_unlock(&ld_lock, 0);
	tls_report_kind = 0;
	if (tls_bufs)
		tls_bufs->report[0] = '\0';
}

/* ---- fork ----------------------------------------------------------------- */

/*
 * Hold ld_lock across fork(), so the child never sees the tables half
 * updated; in the child only the forking thread exists, so only its task's
 * held stack is kept.
 */
static void ld_atfork_prepare(void)
{
	uint64_t id = mln_current_task();

	mln_mutex_lock(&ld_lock, 0);
	ld_fork_task = id;
	ld_fork_tid = (uint64_t)syscall(SYS_gettid);
}

static void ld_atfork_parent(void)
{
	mln_mutex_unlock(&ld_lock, 0);
}

static void ld_atfork_child(void)
{
	struct ld_task *t;

	/* Nobody else runs: no waiter to wake. */
	atomic_store_explicit(&ld_lock, 0, memory_order_relaxed);
	drop_tasks(ld_fork_task);
	/*
	 * An unbound task is its thread id, which differs in the child (task.c
	 * forgets it there): move the stack to the new id.  A task bound to an
	 * id equal to its own thread id is taken for unbound.
	 */
	t = task_find(ld_fork_task);
	if (t && ld_fork_task == ld_fork_tid) {
		map_clear(&ld_tasks);
		t->id = (uint64_t)syscall(SYS_gettid);
		(void)map_put(&ld_tasks, t->id, t);
	}
}

__attribute__((constructor)) static void lockdep_module_init(void)
{
	pthread_atfork(ld_atfork_prepare, ld_atfork_parent, ld_atfork_child);
}
