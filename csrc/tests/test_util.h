/* SPDX-License-Identifier: MIT */
/*
 * test_util.h - what the C test programs share: check macros that record a
 * failure and go on, bounded waits (every wait in a test has a limit, so a
 * bug fails the test instead of hanging it), bounded thread joins, a
 * per-test watchdog, and the monotonic clock.
 *
 * Header-only; everything is static inline (or marked unused) so that a
 * program using part of it still builds with -Werror.
 */
#ifndef MLN_TEST_UTIL_H
#define MLN_TEST_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TU_NS_PER_MS 1000000ull
#define TU_NS_PER_US 1000ull

/* The bound of every wait that is expected to end (generous: noisy 2-core box, sanitizers). */
#define TU_WAIT_MS 10000u
/* The per-test watchdog: a test that runs longer hung. */
#define TU_TEST_TIMEOUT_S 60u

/* Name of the test now running, for failure messages and the watchdog. */
static const char *volatile tu_current __attribute__((unused)) = "(setup)";
static atomic_int tu_test_failures __attribute__((unused));

static inline uint64_t tu_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t tu_thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void tu_sleep_us(unsigned int us)
{
	struct timespec ts = { .tv_sec = us / 1000000u, .tv_nsec = (long)(us % 1000000u) * 1000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Record a failure of the current test (thread-safe; stdio locks per call). */
__attribute__((format(printf, 3, 4)))
static inline void tu_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	char buf[512];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "  FAILED [%s] %s:%d: %s\n", tu_current, file, line, buf);
	fflush(stderr);
	atomic_fetch_add(&tu_test_failures, 1);
}

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond))                                                         \
			tu_fail(__FILE__, __LINE__, "%s", #cond);                    \
	} while (0)

#define CHECK_MSG(cond, ...)                                                         \
	do {                                                                         \
		if (!(cond))                                                         \
			tu_fail(__FILE__, __LINE__, __VA_ARGS__);                    \
	} while (0)

/* Integer equality, printing both sides. */
#define CHECK_EQ(a, b)                                                               \
	do {                                                                         \
		long long _a = (long long)(a), _b = (long long)(b);                 \
		if (_a != _b)                                                        \
			tu_fail(__FILE__, __LINE__, "%s == %s (%lld != %lld)", #a,  \
				#b, _a, _b);                                         \
	} while (0)

/* A negative errno, printing the value. */
#define CHECK_NEG(a)                                                                 \
	do {                                                                         \
		long long _a = (long long)(a);                                       \
		if (_a >= 0)                                                         \
			tu_fail(__FILE__, __LINE__, "%s < 0 (got %lld)", #a, _a);    \
	} while (0)

/*
 * Poll @cond until it holds or @ms pass; evaluates to whether it held.  The
 * poll sleeps 20 us between looks, so it costs nothing measurable.
 */
#define WAIT_UNTIL(cond, ms)                                                         \
	__extension__({                                                              \
		uint64_t _dl = tu_now_ns() + (uint64_t)(ms) * TU_NS_PER_MS;          \
		bool _ok;                                                            \
		while (!(_ok = (cond)) && tu_now_ns() < _dl)                         \
			tu_sleep_us(20);                                             \
		_ok;                                                                 \
	})

/* Wait for @cond (bounded); on timeout record a failure naming it. */
#define EXPECT_WITHIN(cond, ms)                                                      \
	do {                                                                         \
		if (!WAIT_UNTIL(cond, ms))                                           \
			tu_fail(__FILE__, __LINE__,                                  \
				"timed out after %u ms waiting for %s",              \
				(unsigned int)(ms), #cond);                          \
	} while (0)

/* A hang is unrecoverable (a thread is stuck in the lock): report and exit. */
__attribute__((noreturn))
static inline void tu_hang(const char *file, int line, const char *what)
{
	fprintf(stderr, "  HUNG [%s] %s:%d: %s\n", tu_current, file, line, what);
	fprintf(stderr, "%s: FAIL (hung)\n", tu_current);
	fflush(NULL);
	_exit(3);
}

/* Join @t within @ms, or report the hang and exit. */
static inline void tu_join_at(pthread_t t, unsigned int ms, const char *file, int line,
			      const char *what)
{
	struct timespec ts;
	uint64_t ns;
	int rc;

	clock_gettime(CLOCK_REALTIME, &ts);
	ns = (uint64_t)ts.tv_nsec + (uint64_t)ms * TU_NS_PER_MS;
	ts.tv_sec += (time_t)(ns / 1000000000ull);
	ts.tv_nsec = (long)(ns % 1000000000ull);
	rc = pthread_timedjoin_np(t, NULL, &ts);
	if (rc != 0) {
		char buf[256];

		snprintf(buf, sizeof(buf), "thread %s not finished after %u ms (%s)", what, ms,
			 strerror(rc));
		tu_hang(file, line, buf);
	}
}
#define JOIN(t, what) tu_join_at((t), TU_WAIT_MS, __FILE__, __LINE__, (what))

static inline void tu_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
	int rc = pthread_create(t, NULL, fn, arg);

	if (rc != 0) {
		fprintf(stderr, "pthread_create: %s\n", strerror(rc));
		exit(2);
	}
}

/* The watchdog: SIGALRM names the test that hung and exits non-zero. */
static inline void tu_watchdog_handler(int sig)
{
	const char *name = tu_current;
	static const char pre[] = "\nWATCHDOG: test '";
	static const char post[] = "' hung (no progress before its time limit)\n";
	ssize_t r;

	(void)sig;
	r = write(2, pre, sizeof(pre) - 1);
	r = write(2, name, strlen(name));
	r = write(2, post, sizeof(post) - 1);
	(void)r;
	_exit(4);
}

static inline void tu_watchdog_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = tu_watchdog_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
}

static inline void tu_watchdog_arm(unsigned int seconds)
{
	alarm(seconds);
}

/* Zeroed memory that forked children share with us (MAP_SHARED); exits 2 on failure. */
static inline void *tu_shared_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	return p;	/* anonymous mappings come zeroed */
}

/*
 * Processes.  fork() with stdio flushed (or the child would print the
 * parent's buffered lines again) and the child's watchdog armed (alarms are
 * not inherited); exits 2 if fork fails.
 */
static inline pid_t tu_fork(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(2);
	}
	if (pid == 0)
		tu_watchdog_arm(TU_TEST_TIMEOUT_S);
	return pid;
}

/*
 * Bounded waitpid: the child's exit status, 128 + the signal that ended it,
 * -2 if it was no child of ours, or -1 if it ran past @ms (then it is
 * SIGKILLed and reaped).
 */
static inline int tu_wait_child(pid_t pid, unsigned int ms)
{
	uint64_t dl = tu_now_ns() + (uint64_t)ms * TU_NS_PER_MS;
	int status;

	while (tu_now_ns() < dl) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		if (r < 0)
			return -2;
		tu_sleep_us(1000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

/* Wait (bounded by @ms) until child @pid stops (SIGSTOP); false if it did not. */
static inline bool tu_wait_stopped(pid_t pid, unsigned int ms)
{
	uint64_t dl = tu_now_ns() + (uint64_t)ms * TU_NS_PER_MS;
	int status;

	while (tu_now_ns() < dl) {
		pid_t r = waitpid(pid, &status, WNOHANG | WUNTRACED);

		if (r == pid)
			return WIFSTOPPED(status);
		if (r < 0)
			return false;
		tu_sleep_us(50);
	}
	return false;
}

/* A small per-thread PRNG (xorshift64*). */
static inline uint64_t tu_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* Busy work that the compiler cannot drop. */
static inline void tu_spin(unsigned int iters)
{
	for (volatile unsigned int i = 0; i < iters; i++)
		;
}

/*
 * The test runner every program shares: runs each test of @tests under the
 * watchdog (all of them, or those named by --only NAME, substrings allowed),
 * prints ok/FAIL lines and a summary; --list prints the names.  Runs
 * @before_each (may be NULL) before each test.  Returns the exit status.
 */
struct tu_test {
	const char *name;
	void (*fn)(void);
};
#define TU_TEST(fn) { #fn, fn }

static inline bool tu_selected(const char *name, int argc, char **argv)
{
	bool any = false;

	for (int i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], "--only") == 0) {
			any = true;
			if (strcmp(argv[i + 1], name) == 0 || strstr(name, argv[i + 1]))
				return true;
		}
	}
	return !any;
}

static inline int tu_run(const char *program, const struct tu_test *tests, int n, int argc,
			 char **argv, void (*before_each)(void))
{
	int passed = 0, failed = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--list") == 0) {
			for (int t = 0; t < n; t++)
				printf("%s\n", tests[t].name);
			return 0;
		}
	}
	tu_watchdog_install();
	for (int t = 0; t < n; t++) {
		uint64_t t0;

		if (!tu_selected(tests[t].name, argc, argv))
			continue;
		tu_current = tests[t].name;
		atomic_store(&tu_test_failures, 0);
		if (before_each)
			before_each();
		tu_watchdog_arm(TU_TEST_TIMEOUT_S);
		t0 = tu_now_ns();
		tests[t].fn();
		tu_watchdog_arm(0);
		if (atomic_load(&tu_test_failures)) {
			failed++;
			printf("FAIL %s\n", tests[t].name);
		} else {
			passed++;
			printf("ok   %s (%.1f ms)\n", tests[t].name, (double)(tu_now_ns() - t0) / 1e6);
		}
	}
	printf("%s: %d passed, %d failed\n", program, passed, failed);
	return failed ? 1 : 0;
}

#endif /* MLN_TEST_UTIL_H */
