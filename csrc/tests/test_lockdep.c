/* SPDX-License-Identifier: MIT */
/*
 * test_lockdep.c - unit tests of the lock-order checker (lockdep.h).
 *
 * The checker never touches the locks themselves, so the "locks" here are
 * addresses of static ints, and the tests call the mln_lockdep_* hooks
 * directly, as the lock layer would.  Every test starts from
 * mln_lockdep_reset() in raise mode with a site hook that returns whatever
 * the calling thread put in tl_site, so reports can be matched by site.
 *
 *   test_lockdep [--only NAME]... [--list]
 *
 * Other arguments (make check's TEST_ARGS) are ignored.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lockdep.h"
#include "task.h"
#include "test_util.h"

static int lock_a, lock_b, lock_c, lock_x, lock_y;
static int mm1, mm2;
static int cls_a, cls_b, cls_c;

/* ------------------------------------------------------------------------
 * Hooks: the site is whatever the calling thread set; reports are counted.
 */
static _Thread_local const char *tl_site;

static const char *test_site_hook(void)
{
	return tl_site;
}

static pthread_mutex_t g_report_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_reports;
static int g_report_kind;
static char g_report_text[4096];

static void test_report_hook(int kind, const char *text)
{
	pthread_mutex_lock(&g_report_mu);
	g_report_kind = kind;
	snprintf(g_report_text, sizeof(g_report_text), "%s", text);
	pthread_mutex_unlock(&g_report_mu);
	atomic_fetch_add(&g_reports, 1);
}

static void setup(int mode)
{
	mln_lockdep_reset();
	CHECK_EQ(mln_lockdep_set_mode(mode), 0);
	mln_lockdep_set_site_hook(test_site_hook);
	mln_lockdep_set_report_hook(test_report_hook);
	atomic_store(&g_reports, 0);
	pthread_mutex_lock(&g_report_mu);
	g_report_kind = 0;
	g_report_text[0] = '\0';
	pthread_mutex_unlock(&g_report_mu);
	tl_site = NULL;
}

/* The lock layer's calls, with the site the hook will report. */
static int acq(const void *lock, int cls, int sub, int write, const char *site)
{
	tl_site = site;
	return mln_lockdep_acquire(lock, cls, sub, write, 0, __builtin_return_address(0));
}

static int try_acq(const void *lock, int cls, int write, const char *site)
{
	tl_site = site;
	return mln_lockdep_acquire(lock, cls, 0, write, 1, __builtin_return_address(0));
}

static int rel(const void *lock, const char *site)
{
	tl_site = site;
	return mln_lockdep_release(lock, __builtin_return_address(0));
}

/* @text contains @needle, else a failure that shows the text. */
#define CHECK_HAS(text, needle)                                                      \
	do {                                                                         \
		const char *_t = (text);                                             \
		if (!strstr(_t, (needle)))                                           \
			tu_fail(__FILE__, __LINE__, "no \"%s\" in report:\n%s",      \
				(needle), _t);                                       \
	} while (0)

/* ------------------------------------------------------------------------
 * Recursion.
 */
static void t_recursion_read_twice(void)
{
	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 0, "x.py:10"), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 0, "x.py:12"), -EDEADLK);
	CHECK_EQ(mln_lockdep_last_report_kind(), MLN_LOCKDEP_RECURSION);
	CHECK_HAS(mln_lockdep_last_report(), "possible recursive locking detected");
	CHECK_HAS(mln_lockdep_last_report(), "x.py:10");
	CHECK_HAS(mln_lockdep_last_report(), "x.py:12");
	CHECK_HAS(mln_lockdep_last_report(), "for read");
	/* Refused: nothing pushed. */
	CHECK_EQ(mln_lockdep_depth(), 1);
	CHECK_EQ(rel(&lock_a, "x.py:14"), 0);
	CHECK_EQ(mln_lockdep_depth(), 0);
	CHECK_EQ(atomic_load(&g_reports), 0);
}

static void t_recursion_distinct_locks_and_subclass(void)
{
	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(acq(&mm1, 0, 0, 1, "m.py:1"), 0);
	CHECK_EQ(acq(&mm2, 0, 0, 1, "m.py:2"), -EDEADLK);
	CHECK_EQ(mln_lockdep_last_report_kind(), MLN_LOCKDEP_RECURSION);
	CHECK_HAS(mln_lockdep_last_report(), "mm->mmap_lock");
	CHECK_HAS(mln_lockdep_last_report(), "m.py:1");
	CHECK_HAS(mln_lockdep_last_report(), "m.py:2");
	CHECK_HAS(mln_lockdep_last_report(), "mmap_write_lock_nested");
	/* The correct annotation: a distinct subclass. */
	CHECK_EQ(acq(&mm2, 0, 1, 1, "m.py:3"), 0);
	CHECK_EQ(mln_lockdep_depth(), 2);
	CHECK_EQ(rel(&mm2, "m.py:4"), 0);
	CHECK_EQ(rel(&mm1, "m.py:5"), 0);
	/* ... which recorded mm->mmap_lock -> mm->mmap_lock/1. */
	CHECK_EQ(acq(&mm2, 0, 1, 1, "m.py:6"), 0);
	CHECK_EQ(acq(&mm1, 0, 0, 1, "m.py:7"), -EDEADLK);
	CHECK_EQ(mln_lockdep_last_report_kind(), MLN_LOCKDEP_INVERSION);
	CHECK_HAS(mln_lockdep_last_report(), "mm->mmap_lock/1");
	CHECK_EQ(rel(&mm2, "m.py:8"), 0);
	CHECK_EQ(mln_lockdep_depth(), 0);
	CHECK_EQ(atomic_load(&g_reports), 0);
}

/* ------------------------------------------------------------------------
 * Inversion.
 */
static uint64_t g_t1_task;
static char g_t2_report[4096];
static int g_t2_kind, g_t2_ret, g_t2_depth;

static void *inv_first(void *arg)
{
	(void)arg;
	g_t1_task = task_current();
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "t1.py:1"), 0);
	CHECK_EQ(acq(&lock_b, cls_b, 0, 1, "t1.py:2"), 0);
	CHECK_EQ(rel(&lock_b, "t1.py:3"), 0);
	CHECK_EQ(rel(&lock_a, "t1.py:4"), 0);
	return NULL;
}

static void *inv_second(void *arg)
{
	(void)arg;
	CHECK_EQ(acq(&lock_b, cls_b, 0, 0, "t2.py:1"), 0);
	g_t2_ret = acq(&lock_a, cls_a, 0, 0, "t2.py:2");
	g_t2_kind = mln_lockdep_last_report_kind();
	snprintf(g_t2_report, sizeof(g_t2_report), "%s", mln_lockdep_last_report());
	g_t2_depth = mln_lockdep_depth();
	CHECK_EQ(mln_lockdep_held(&lock_a, 0), 0);
	CHECK_EQ(rel(&lock_b, "t2.py:3"), 0);
	return NULL;
}

static void t_inversion_two_threads(void)
{
	pthread_t t;
	char task[32];

	setup(MLN_LOCKDEP_RAISE);
	tu_create(&t, inv_first, NULL);
	JOIN(t, "inv_first");
	tu_create(&t, inv_second, NULL);
	JOIN(t, "inv_second");
	CHECK_EQ(g_t2_ret, -EDEADLK);
	CHECK_EQ(g_t2_kind, MLN_LOCKDEP_INVERSION);
	CHECK_EQ(g_t2_depth, 1);
	CHECK_HAS(g_t2_report, "possible circular locking dependency detected");
	CHECK_HAS(g_t2_report, "A -> B");
	CHECK_HAS(g_t2_report, "t1.py:1");
	CHECK_HAS(g_t2_report, "t1.py:2");
	CHECK_HAS(g_t2_report, "t2.py:1");
	CHECK_HAS(g_t2_report, "t2.py:2");
	snprintf(task, sizeof(task), "task %llu", (unsigned long long)g_t1_task);
	CHECK_HAS(g_t2_report, task);
	/* The main thread was not involved and saw nothing. */
	CHECK_EQ(mln_lockdep_last_report_kind(), 0);
	CHECK_EQ(atomic_load(&g_reports), 0);
}

static void t_inversion_three_nodes(void)
{
	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "p.py:1"), 0);
	CHECK_EQ(acq(&lock_b, cls_b, 0, 1, "p.py:2"), 0);
	CHECK_EQ(rel(&lock_b, "p.py:3"), 0);
	CHECK_EQ(rel(&lock_a, "p.py:4"), 0);
	CHECK_EQ(acq(&lock_b, cls_b, 0, 1, "p.py:5"), 0);
	CHECK_EQ(acq(&lock_c, cls_c, 0, 1, "p.py:6"), 0);
	CHECK_EQ(rel(&lock_c, "p.py:7"), 0);
	CHECK_EQ(rel(&lock_b, "p.py:8"), 0);

	CHECK_EQ(acq(&lock_c, cls_c, 0, 1, "p.py:9"), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "p.py:10"), -EDEADLK);
	CHECK_EQ(mln_lockdep_last_report_kind(), MLN_LOCKDEP_INVERSION);
	CHECK_HAS(mln_lockdep_last_report(), "A -> B -> C");
	/* Evidence of both edges of the path, and the current pair. */
	CHECK_HAS(mln_lockdep_last_report(), "A acquired at p.py:1, then B at p.py:2");
	CHECK_HAS(mln_lockdep_last_report(), "B acquired at p.py:5, then C at p.py:6");
	CHECK_HAS(mln_lockdep_last_report(), "p.py:9");
	CHECK_HAS(mln_lockdep_last_report(), "p.py:10");
	CHECK_EQ(mln_lockdep_depth(), 1);
	CHECK_EQ(rel(&lock_c, "p.py:11"), 0);
}

/* ------------------------------------------------------------------------
 * Trylocks, releases, downgrade, held().
 */
static void t_trylock_adds_no_edge(void)
{
	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "tr:1"), 0);
	CHECK_EQ(try_acq(&lock_b, cls_b, 1, "tr:2"), 0);
	CHECK_EQ(mln_lockdep_depth(), 2);
	CHECK_EQ(mln_lockdep_held(&lock_b, 1), 1);
	/* A trylock of a held class is no recursion either. */
	CHECK_EQ(try_acq(&lock_a, cls_a, 0, "tr:3"), 0);
	CHECK_EQ(mln_lockdep_depth(), 3);
	CHECK_EQ(rel(&lock_a, "tr:4"), 0);
	CHECK_EQ(rel(&lock_b, "tr:5"), 0);
	CHECK_EQ(rel(&lock_a, "tr:6"), 0);
	CHECK_EQ(mln_lockdep_depth(), 0);
	/* No A -> B was recorded, so B then A is fine. */
	CHECK_EQ(acq(&lock_b, cls_b, 0, 1, "tr:7"), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "tr:8"), 0);
	CHECK_EQ(rel(&lock_a, "tr:9"), 0);
	CHECK_EQ(rel(&lock_b, "tr:10"), 0);
	/* B -> A is known now; a trylock against it is still never reported. */
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "tr:11"), 0);
	CHECK_EQ(try_acq(&lock_b, cls_b, 1, "tr:12"), 0);
	CHECK_EQ(rel(&lock_b, "tr:13"), 0);
	CHECK_EQ(rel(&lock_a, "tr:14"), 0);
	/* A lock held by trylock is no source of dependencies either. */
	CHECK_EQ(try_acq(&lock_c, cls_c, 1, "tr:15"), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "tr:16"), 0);
	CHECK_EQ(rel(&lock_a, "tr:17"), 0);
	CHECK_EQ(rel(&lock_c, "tr:18"), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "tr:19"), 0);
	CHECK_EQ(acq(&lock_c, cls_c, 0, 1, "tr:20"), 0);
	CHECK_EQ(rel(&lock_c, "tr:21"), 0);
	CHECK_EQ(rel(&lock_a, "tr:22"), 0);
	CHECK_EQ(mln_lockdep_last_report_kind(), 0);
	CHECK_EQ(atomic_load(&g_reports), 0);
}

static void t_failed_acquisition_pops(void)
{
	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "f:1"), 0);
	mln_lockdep_acquired(&lock_a, 1);
	CHECK_EQ(mln_lockdep_depth(), 1);
	CHECK_EQ(try_acq(&lock_b, cls_b, 0, "f:2"), 0);
	mln_lockdep_acquired(&lock_b, 0);
	CHECK_EQ(mln_lockdep_depth(), 1);
	CHECK_EQ(mln_lockdep_held(&lock_b, 0), 0);
	/* A failed blocking acquisition (timeout, kill) is undone the same way. */
	CHECK_EQ(acq(&lock_c, cls_c, 0, 0, "f:3"), 0);
	mln_lockdep_acquired(&lock_c, 0);
	CHECK_EQ(mln_lockdep_held(&lock_c, 0), 0);
	CHECK_EQ(rel(&lock_a, "f:4"), 0);
	CHECK_EQ(mln_lockdep_depth(), 0);
}

static void t_bad_unlock(void)
{
	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(rel(&lock_x, "u.py:5"), -EDEADLK);
	CHECK_EQ(mln_lockdep_last_report_kind(), MLN_LOCKDEP_BAD_UNLOCK);
	CHECK_HAS(mln_lockdep_last_report(), "u.py:5");
	CHECK_HAS(mln_lockdep_last_report(), "does not hold");
	/* The correct pairing is not reported. */
	CHECK_EQ(acq(&lock_x, cls_a, 0, 0, "u.py:6"), 0);
	CHECK_EQ(acq(&lock_b, cls_b, 0, 0, "u.py:7"), 0);
	CHECK_EQ(rel(&lock_x, "u.py:8"), 0);
	/* Released twice: the second is refused, and the report lists what is held. */
	CHECK_EQ(rel(&lock_x, "u.py:9"), -EDEADLK);
	CHECK_HAS(mln_lockdep_last_report(), "u.py:9");
	CHECK_HAS(mln_lockdep_last_report(), "u.py:7");
	CHECK_EQ(rel(&lock_b, "u.py:10"), 0);
	CHECK_EQ(mln_lockdep_depth(), 0);
	CHECK_EQ(atomic_load(&g_reports), 0);

	/* Warn mode: reported (once per site) and allowed. */
	CHECK_EQ(mln_lockdep_set_mode(MLN_LOCKDEP_WARN), 0);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(rel(&lock_y, "u.py:20"), 0);
	CHECK_EQ(atomic_load(&g_reports), 1);
	CHECK_EQ(g_report_kind, MLN_LOCKDEP_BAD_UNLOCK);
	CHECK_HAS(g_report_text, "u.py:20");
}

static void t_out_of_order_release(void)
{
	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 0, "o:1"), 0);
	CHECK_EQ(acq(&lock_b, cls_b, 0, 0, "o:2"), 0);
	CHECK_EQ(acq(&lock_c, cls_c, 0, 0, "o:3"), 0);
	CHECK_EQ(rel(&lock_a, "o:4"), 0);
	CHECK_EQ(mln_lockdep_depth(), 2);
	CHECK_EQ(mln_lockdep_held(&lock_a, 0), 0);
	CHECK_EQ(mln_lockdep_held(&lock_b, 0), 1);
	CHECK_EQ(mln_lockdep_held(&lock_c, 0), 1);
	CHECK_EQ(rel(&lock_c, "o:5"), 0);
	CHECK_EQ(rel(&lock_b, "o:6"), 0);
	CHECK_EQ(mln_lockdep_depth(), 0);
	CHECK_EQ(atomic_load(&g_reports), 0);
}

static void t_downgrade(void)
{
	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "d:1"), 0);
	CHECK_EQ(mln_lockdep_held(&lock_a, 1), 1);
	mln_lockdep_downgrade(&lock_a);
	CHECK_EQ(mln_lockdep_held(&lock_a, 1), 0);
	CHECK_EQ(mln_lockdep_held(&lock_a, 0), 1);
	CHECK_EQ(mln_lockdep_depth(), 1);
	CHECK_EQ(rel(&lock_a, "d:2"), 0);
	CHECK_EQ(mln_lockdep_held(&lock_a, 0), 0);
}

static int g_other_held;

static void *held_elsewhere(void *arg)
{
	(void)arg;
	g_other_held = mln_lockdep_held(&lock_a, 0) + mln_lockdep_depth();
	return NULL;
}

static void t_held(void)
{
	pthread_t t;

	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(mln_lockdep_held(&lock_a, 0), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 0, "h:1"), 0);
	CHECK_EQ(mln_lockdep_held(&lock_a, 0), 1);
	CHECK_EQ(mln_lockdep_held(&lock_a, 1), 0);
	CHECK_EQ(mln_lockdep_held(&lock_b, 0), 0);
	/* Another task does not hold it. */
	g_other_held = -1;
	tu_create(&t, held_elsewhere, NULL);
	JOIN(t, "held_elsewhere");
	CHECK_EQ(g_other_held, 0);
	CHECK_EQ(rel(&lock_a, "h:2"), 0);
}

/* ------------------------------------------------------------------------
 * Modes.
 */
static void t_warn_reports_once_and_proceeds(void)
{
	setup(MLN_LOCKDEP_WARN);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "w:1"), 0);
	CHECK_EQ(acq(&lock_b, cls_b, 0, 1, "w:2"), 0);
	CHECK_EQ(rel(&lock_b, "w:3"), 0);
	CHECK_EQ(rel(&lock_a, "w:4"), 0);
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(acq(&lock_b, cls_b, 0, 1, "w:5"), 0);
		CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "w:6"), 0);
		CHECK_EQ(mln_lockdep_depth(), 2);
		CHECK_EQ(rel(&lock_a, "w:7"), 0);
		CHECK_EQ(rel(&lock_b, "w:8"), 0);
	}
	CHECK_EQ(atomic_load(&g_reports), 1);
	CHECK_EQ(g_report_kind, MLN_LOCKDEP_INVERSION);
	CHECK_HAS(g_report_text, "circular");
	CHECK_HAS(g_report_text, "w:1");
	CHECK_HAS(g_report_text, "w:6");
	/* Warn mode refuses nothing, so there is no "last refused call". */
	CHECK_EQ(mln_lockdep_last_report_kind(), 0);
	CHECK_EQ(mln_lockdep_last_report()[0], '\0');
	/* The cycle-closing edge was not added: the original order is still quiet. */
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "w:9"), 0);
	CHECK_EQ(acq(&lock_b, cls_b, 0, 1, "w:10"), 0);
	CHECK_EQ(rel(&lock_b, "w:11"), 0);
	CHECK_EQ(rel(&lock_a, "w:12"), 0);
	/* Nor is any path through it: C -> B, then A -> C is fine. */
	CHECK_EQ(acq(&lock_c, cls_c, 0, 1, "w:20"), 0);
	CHECK_EQ(acq(&lock_b, cls_b, 0, 1, "w:21"), 0);
	CHECK_EQ(rel(&lock_b, "w:22"), 0);
	CHECK_EQ(rel(&lock_c, "w:23"), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "w:24"), 0);
	CHECK_EQ(acq(&lock_c, cls_c, 0, 1, "w:25"), 0);
	CHECK_EQ(rel(&lock_c, "w:26"), 0);
	CHECK_EQ(rel(&lock_a, "w:27"), 0);
	CHECK_EQ(atomic_load(&g_reports), 1);
	/* A recursion, twice: one more report. */
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(acq(&lock_c, cls_c, 0, 0, "w:13"), 0);
		CHECK_EQ(acq(&lock_c, cls_c, 0, 0, "w:14"), 0);
		CHECK_EQ(mln_lockdep_depth(), 2);
		CHECK_EQ(rel(&lock_c, "w:15"), 0);
		CHECK_EQ(rel(&lock_c, "w:16"), 0);
	}
	CHECK_EQ(atomic_load(&g_reports), 2);
	CHECK_EQ(g_report_kind, MLN_LOCKDEP_RECURSION);
	CHECK_EQ(mln_lockdep_depth(), 0);
	/* reset() forgets the one-shot memory too. */
	mln_lockdep_reset();
	CHECK_EQ(acq(&lock_c, cls_c, 0, 0, "w:17"), 0);
	CHECK_EQ(acq(&lock_c, cls_c, 0, 0, "w:18"), 0);
	CHECK_EQ(atomic_load(&g_reports), 3);
	mln_lockdep_reset();
	CHECK_EQ(mln_lockdep_depth(), 0);
}

static void t_off_mode_tracks_only(void)
{
	setup(MLN_LOCKDEP_OFF);
	CHECK_EQ(mln_lockdep_get_mode(), MLN_LOCKDEP_OFF);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "off:1"), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "off:2"), 0);
	CHECK_EQ(mln_lockdep_held(&lock_a, 1), 1);
	CHECK_EQ(mln_lockdep_depth(), 2);
	CHECK_EQ(rel(&lock_a, "off:3"), 0);
	CHECK_EQ(rel(&lock_a, "off:4"), 0);
	CHECK_EQ(mln_lockdep_held(&lock_a, 0), 0);
	CHECK_EQ(rel(&lock_a, "off:5"), 0);
	CHECK_EQ(atomic_load(&g_reports), 0);
	CHECK_EQ(mln_lockdep_last_report_kind(), 0);
	/* Nor does it learn dependencies that raise mode would then hold against us. */
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "off:6"), 0);
	CHECK_EQ(acq(&lock_b, cls_b, 0, 1, "off:7"), 0);
	CHECK_EQ(rel(&lock_b, "off:8"), 0);
	CHECK_EQ(rel(&lock_a, "off:9"), 0);
	CHECK_EQ(mln_lockdep_set_mode(MLN_LOCKDEP_RAISE), 0);
	CHECK_EQ(acq(&lock_b, cls_b, 0, 1, "off:10"), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "off:11"), 0);
	CHECK_EQ(rel(&lock_a, "off:12"), 0);
	CHECK_EQ(rel(&lock_b, "off:13"), 0);
}

/* ------------------------------------------------------------------------
 * Sites.
 */
static const char *null_site_hook(void)
{
	return NULL;
}

static __attribute__((noinline)) const void *here(void)
{
	return __builtin_return_address(0);
}

static void t_site_hook_and_fallback(void)
{
	const char *ip1 = (const char *)(uintptr_t)&getpid + 1;
	const char *ip2 = (const char *)(uintptr_t)&getpid + 2;

	setup(MLN_LOCKDEP_RAISE);
	/* The hook's string, when it has one. */
	CHECK_EQ(acq(&lock_a, cls_a, 0, 0, "hook.py:1"), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 0, "hook.py:2"), -EDEADLK);
	CHECK_HAS(mln_lockdep_last_report(), "hook.py:1");
	CHECK_EQ(rel(&lock_a, "hook.py:3"), 0);

	/* Else symbol+offset, from dladdr(). */
	mln_lockdep_set_site_hook(null_site_hook);
	CHECK_EQ(mln_lockdep_acquire(&lock_a, cls_a, 0, 0, 0, ip1), 0);
	CHECK_EQ(mln_lockdep_acquire(&lock_a, cls_a, 0, 0, 0, ip2), -EDEADLK);
	CHECK_HAS(mln_lockdep_last_report(), "getpid+0x1");
	CHECK_HAS(mln_lockdep_last_report(), "getpid+0x2");
	CHECK_EQ(mln_lockdep_release(&lock_a, ip1), 0);
	/* Cached per address: the same address again gives the same text. */
	CHECK_EQ(mln_lockdep_release(&lock_a, ip2), -EDEADLK);
	CHECK_HAS(mln_lockdep_last_report(), "getpid+0x2");
	/* An address without an exported symbol: object+offset. */
	CHECK_EQ(mln_lockdep_release(&lock_a, here()), -EDEADLK);
	CHECK_HAS(mln_lockdep_last_report(), "+0x");
	/* No address at all. */
	CHECK_EQ(mln_lockdep_release(&lock_a, NULL), -EDEADLK);
	CHECK_HAS(mln_lockdep_last_report(), "(unknown)");

	/* No hook at all: the same fallback. */
	mln_lockdep_set_site_hook(NULL);
	CHECK_EQ(mln_lockdep_release(&lock_a, ip1), -EDEADLK);
	CHECK_HAS(mln_lockdep_last_report(), "getpid+0x1");
	mln_lockdep_set_site_hook(test_site_hook);
	CHECK_EQ(mln_lockdep_depth(), 0);
}

/* ------------------------------------------------------------------------
 * Tasks.
 */
#define MIGRATING_TASK 4242424242ull

static int g_mig_depth, g_mig_held, g_mig_recursion, g_mig_release;

static void *mig_first(void *arg)
{
	(void)arg;
	CHECK_EQ(task_set_current(MIGRATING_TASK), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "mig:1"), 0);
	CHECK_EQ(mln_lockdep_depth(), 1);
	return NULL;
}

static void *mig_second(void *arg)
{
	(void)arg;
	/* Before binding: this thread's own task holds nothing. */
	CHECK_EQ(mln_lockdep_depth(), 0);
	CHECK_EQ(task_set_current(MIGRATING_TASK), 0);
	g_mig_depth = mln_lockdep_depth();
	g_mig_held = mln_lockdep_held(&lock_a, 1);
	g_mig_recursion = acq(&lock_a, cls_a, 0, 1, "mig:2");
	g_mig_release = rel(&lock_a, "mig:3");
	CHECK_EQ(mln_lockdep_depth(), 0);
	CHECK_EQ(task_set_current(0), 0);
	return NULL;
}

static void t_task_migration(void)
{
	pthread_t t;

	setup(MLN_LOCKDEP_RAISE);
	tu_create(&t, mig_first, NULL);
	JOIN(t, "mig_first");
	CHECK_EQ(mln_lockdep_depth(), 0);
	CHECK_EQ(mln_lockdep_held(&lock_a, 0), 0);
	tu_create(&t, mig_second, NULL);
	JOIN(t, "mig_second");
	CHECK_EQ(g_mig_depth, 1);
	CHECK_EQ(g_mig_held, 1);
	CHECK_EQ(g_mig_recursion, -EDEADLK);
	CHECK_EQ(g_mig_release, 0);
	/* The main thread may run that task too. */
	CHECK_EQ(task_set_current(MIGRATING_TASK), 0);
	CHECK_EQ(mln_lockdep_depth(), 0);
	CHECK_EQ(task_set_current(0), 0);
}

static void t_depth_overflow(void)
{
	static int locks[MLN_LOCKDEP_MAX_DEPTH + 16];
	int n = (int)(sizeof(locks) / sizeof(locks[0]));

	setup(MLN_LOCKDEP_RAISE);
	fprintf(stderr, "  (t_depth_overflow: one overflow message expected below)\n");
	/* Trylocks, so that no recursion check refuses the same-class locks. */
	for (int i = 0; i < n; i++)
		CHECK_EQ(try_acq(&locks[i], cls_a, 0, "deep:1"), 0);
	CHECK_EQ(mln_lockdep_depth(), MLN_LOCKDEP_MAX_DEPTH);
	/* No longer tracked: not checked, and held() does not fail assertions. */
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "deep:2"), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "deep:3"), 0);
	CHECK_EQ(mln_lockdep_held(&locks[n - 1], 0), 1);
	for (int i = n - 1; i >= 0; i--)
		CHECK_EQ(rel(&locks[i], "deep:4"), 0);
	CHECK_EQ(rel(&lock_a, "deep:5"), 0);
	CHECK_EQ(rel(&lock_a, "deep:6"), 0);
	CHECK_EQ(atomic_load(&g_reports), 0);
	mln_lockdep_reset();
	CHECK_EQ(mln_lockdep_depth(), 0);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "deep:7"), 0);
	CHECK_EQ(mln_lockdep_held(&lock_b, 0), 0);
	CHECK_EQ(rel(&lock_a, "deep:8"), 0);
}

/* Threads hammer the checker with one consistent order: nothing to report. */
#define HAMMER_THREADS 4
#define HAMMER_ITERS 2000

static void *hammer(void *arg)
{
	uintptr_t k = (uintptr_t)arg;
	uint64_t rng = 0x9e3779b97f4a7c15ull * (k + 1);

	/* Half the threads run a bound task id, half their own. */
	if (k % 2)
		CHECK_EQ(task_set_current((1ull << 40) + k), 0);
	for (int i = 0; i < HAMMER_ITERS; i++) {
		uint64_t r = tu_rand(&rng);

		CHECK_EQ(acq(&lock_a, cls_a, 0, (int)(r & 1), "hm:1"), 0);
		CHECK_EQ(acq(&lock_b, cls_b, 0, 0, "hm:2"), 0);
		if (r & 2)
			CHECK_EQ(try_acq(&lock_x, cls_a, 1, "hm:3"), 0);
		CHECK_EQ(acq(&lock_c, cls_c, (int)(k % 8), 0, "hm:4"), 0);
		CHECK(mln_lockdep_held(&lock_b, 0));
		if (r & 1)
			mln_lockdep_downgrade(&lock_a);
		/* Release in a random order. */
		CHECK_EQ(rel(r & 4 ? &lock_a : &lock_c, "hm:5"), 0);
		CHECK_EQ(rel(&lock_b, "hm:6"), 0);
		CHECK_EQ(rel(r & 4 ? &lock_c : &lock_a, "hm:7"), 0);
		if (r & 2)
			CHECK_EQ(rel(&lock_x, "hm:8"), 0);
		CHECK_EQ(mln_lockdep_depth(), 0);
	}
	if (k % 2)
		CHECK_EQ(task_set_current(0), 0);
	return NULL;
}

static void t_concurrent_consistent_order(void)
{
	pthread_t t[HAMMER_THREADS];

	setup(MLN_LOCKDEP_RAISE);
	for (uintptr_t k = 0; k < HAMMER_THREADS; k++)
		tu_create(&t[k], hammer, (void *)k);
	for (int k = 0; k < HAMMER_THREADS; k++)
		JOIN(t[k], "hammer");
	CHECK_EQ(atomic_load(&g_reports), 0);
	CHECK_EQ(mln_lockdep_depth(), 0);
}

static void t_fork_child_keeps_own_stack(void)
{
	int status = -1;
	pid_t pid;

	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(acq(&lock_a, cls_a, 0, 1, "fork:1"), 0);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		int ok = mln_lockdep_held(&lock_a, 1) == 1 && mln_lockdep_depth() == 1 &&
			 rel(&lock_a, "fork:2") == 0 && mln_lockdep_depth() == 0 &&
			 acq(&lock_b, cls_b, 0, 1, "fork:3") == 0 && rel(&lock_b, "fork:4") == 0;

		_exit(ok ? 0 : 1);
	}
	CHECK(pid > 0);
	if (pid > 0) {
		CHECK_EQ(waitpid(pid, &status, 0), pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	/* The parent's stack is untouched. */
	CHECK_EQ(mln_lockdep_depth(), 1);
	CHECK_EQ(rel(&lock_a, "fork:5"), 0);
}

/* ------------------------------------------------------------------------
 * Configuration and classes.
 */
static void t_config_and_bad_arguments(void)
{
	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(mln_set_debug(1), 0);
	CHECK_EQ(mln_get_debug(), 1);
	CHECK_EQ(mln_set_debug(0), 0);
	CHECK_EQ(mln_get_debug(), 0);
	CHECK_EQ(mln_lockdep_set_mode(7), -EINVAL);
	CHECK_EQ(mln_lockdep_get_mode(), MLN_LOCKDEP_RAISE);
	CHECK_EQ(acq(&lock_a, MLN_LOCKDEP_MAX_CLASSES, 0, 1, "bad:1"), -EINVAL);
	CHECK_EQ(acq(&lock_a, -1, 0, 1, "bad:2"), -EINVAL);
	CHECK_EQ(acq(&lock_a, cls_a, 8, 1, "bad:3"), -EINVAL);
	CHECK_EQ(acq(&lock_a, cls_a, -1, 1, "bad:4"), -EINVAL);
	CHECK_EQ(mln_lockdep_depth(), 0);
	CHECK_EQ(mln_lockdep_class(NULL), -EINVAL);
	CHECK(mln_lockdep_class_name(-1) == NULL);
	CHECK(mln_lockdep_class_name(MLN_LOCKDEP_MAX_CLASSES) == NULL);
}

/* Last: it fills the class table for good. */
static void t_class_registration(void)
{
	char name[32] = "dynamic";
	int id, n = 0, ret;

	setup(MLN_LOCKDEP_RAISE);
	CHECK_EQ(mln_lockdep_class("mm->mmap_lock"), 0);
	CHECK(strcmp(mln_lockdep_class_name(0), "mm->mmap_lock") == 0);
	id = mln_lockdep_class(name);
	CHECK(id > 0);
	name[0] = 'X';		/* the table keeps its own copy */
	CHECK(strcmp(mln_lockdep_class_name(id), "dynamic") == 0);
	CHECK_EQ(mln_lockdep_class("dynamic"), id);
	CHECK_EQ(mln_lockdep_class("A"), cls_a);
	while ((ret = mln_lockdep_class((snprintf(name, sizeof(name), "fill%d", n), name))) >= 0) {
		n++;
		if (n > MLN_LOCKDEP_MAX_CLASSES)
			break;
	}
	CHECK_EQ(ret, -ENOSPC);
	CHECK(mln_lockdep_class_name(MLN_LOCKDEP_MAX_CLASSES - 1) != NULL);
	/* Known names still resolve when full. */
	CHECK_EQ(mln_lockdep_class("dynamic"), id);
	CHECK_EQ(mln_lockdep_class("fill0"), mln_lockdep_class("fill0"));
	/* The last class is usable. */
	CHECK_EQ(acq(&lock_a, MLN_LOCKDEP_MAX_CLASSES - 1, 7, 1, "cls:1"), 0);
	CHECK_EQ(acq(&lock_b, cls_a, 0, 1, "cls:2"), 0);
	CHECK_EQ(rel(&lock_b, "cls:3"), 0);
	CHECK_EQ(rel(&lock_a, "cls:4"), 0);
}

#define T(fn) TU_TEST(fn)
static const struct tu_test tests[] = {
	T(t_recursion_read_twice),
	T(t_recursion_distinct_locks_and_subclass),
	T(t_inversion_two_threads),
	T(t_inversion_three_nodes),
	T(t_trylock_adds_no_edge),
	T(t_failed_acquisition_pops),
	T(t_bad_unlock),
	T(t_out_of_order_release),
	T(t_downgrade),
	T(t_held),
	T(t_warn_reports_once_and_proceeds),
	T(t_off_mode_tracks_only),
	T(t_site_hook_and_fallback),
	T(t_task_migration),
	T(t_depth_overflow),
	T(t_concurrent_consistent_order),
	T(t_fork_child_keeps_own_stack),
	T(t_config_and_bad_arguments),
	T(t_class_registration),
};
#define NR_TESTS ((int)(sizeof(tests) / sizeof(tests[0])))

int main(int argc, char **argv)
{
	int rc;

	cls_a = mln_lockdep_class("A");
	cls_b = mln_lockdep_class("B");
	cls_c = mln_lockdep_class("C");
	if (cls_a <= 0 || cls_b <= 0 || cls_c <= 0) {
		fprintf(stderr, "class registration failed: %d %d %d\n", cls_a, cls_b, cls_c);
		return 2;
	}
	rc = tu_run("test_lockdep", tests, NR_TESTS, argc, argv, NULL);
	mln_lockdep_reset();
	return rc;
}
