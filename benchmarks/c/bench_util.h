/* SPDX-License-Identifier: MIT */
/*
 * bench_util.h - shared helpers for the C benchmark programs: clocks,
 * medians and percentiles, a tiny option parser, progress lines on stderr,
 * and a minimal JSON writer for --json PATH.
 *
 * Header only (every benchmark is one .c file linked against the core), so
 * everything here is static inline.
 *
 * The machines these run on have 2 cores and are noisy: every benchmark
 * alternates the things it compares in one run and reports medians and
 * ratios, never a lone absolute time.
 */
#ifndef MLN_BENCH_UTIL_H
#define MLN_BENCH_UTIL_H

#include <errno.h>
#include <gnu/libc-version.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define BU_NSEC_PER_SEC 1000000000ULL

/* ---------------------------------------------------------------- clocks */

static inline uint64_t bu_clock_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * BU_NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* CLOCK_MONOTONIC, ns. */
static inline uint64_t bu_now_ns(void)
{
	return bu_clock_ns(CLOCK_MONOTONIC);
}

/* CPU time consumed by the calling thread, ns. */
static inline uint64_t bu_thread_cpu_ns(void)
{
	return bu_clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

/* Relative sleep, restarted on EINTR. */
static inline void bu_sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / BU_NSEC_PER_SEC),
			       .tv_nsec = (long)(ns % BU_NSEC_PER_SEC) };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

/* Busy-wait @ns on the monotonic clock. */
static inline void bu_spin_ns(uint64_t ns)
{
	uint64_t end = bu_now_ns() + ns;

	while (bu_now_ns() < end)
		;
}

/* ---------------------------------------------------------------- rounds */

/*
 * The variant to run @k-th in round @r of @n variants: the order rotates by
 * one each round and is reversed every @n rounds, so that each variant runs
 * in each position, after each other variant, equally often.
 */
static inline int bu_round_variant(int k, long r, int n)
{
	int pos = (int)((k + r) % n);

	return (r / n) % 2 ? n - 1 - pos : pos;
}

/* ------------------------------------------------------------ statistics */

static inline int bu_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static inline void bu_sort(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), bu_cmp_double);
}

/*
 * Percentile @p (0..100) of @n values, on a sorted copy: linear interpolation
 * between closest ranks (p = 50 is the usual median; 0 the min, 100 the max).
 */
static inline double bu_percentile(const double *v, size_t n, double p)
{
	double *s, pos, r;
	size_t lo;

	if (n == 0)
		return 0.0;
	s = malloc(n * sizeof(*s));
	if (!s) {
		perror("malloc");
		exit(2);
	}
	memcpy(s, v, n * sizeof(*s));
	bu_sort(s, n);
	pos = p / 100.0 * (double)(n - 1);
	lo = (size_t)pos;
	if (lo >= n - 1)
		r = s[n - 1];
	else
		r = s[lo] + (pos - (double)lo) * (s[lo + 1] - s[lo]);
	free(s);
	return r;
}

static inline double bu_median(const double *v, size_t n)
{
	return bu_percentile(v, n, 50.0);
}

static inline double bu_max(const double *v, size_t n)
{
	double m = n ? v[0] : 0.0;

	for (size_t i = 1; i < n; i++)
		if (v[i] > m)
			m = v[i];
	return m;
}

static inline double bu_min(const double *v, size_t n)
{
	double m = n ? v[0] : 0.0;

	for (size_t i = 1; i < n; i++)
		if (v[i] < m)
			m = v[i];
	return m;
}

/* A growable array of doubles (samples). */
struct bu_samples {
	double *v;
	size_t n, cap;
};

static inline void bu_samples_push(struct bu_samples *s, double x)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 1024;
		double *v = realloc(s->v, cap * sizeof(*v));

		if (!v) {
			perror("realloc");
			exit(2);
		}
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = x;
}

static inline void bu_samples_free(struct bu_samples *s)
{
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}

/* -------------------------------------------------------------- progress */

__attribute__((format(printf, 1, 2)))
static inline void bu_progress(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
}

__attribute__((noreturn, format(printf, 1, 2)))
static inline void bu_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "error: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

/* --------------------------------------------------------------- options */

enum bu_opt_type { BU_OPT_INT, BU_OPT_DOUBLE, BU_OPT_STR };

struct bu_opt {
	const char *name;	/* "--rounds" */
	enum bu_opt_type type;
	void *dst;		/* long *, double *, const char ** */
	const char *help;
};

static inline void bu_usage(const char *prog, const char *what, const struct bu_opt *o, size_t n)
{
	fprintf(stderr, "usage: %s [options]\n%s\n\noptions:\n", prog, what);
	for (size_t i = 0; i < n; i++) {
		fprintf(stderr, "  %-14s %s", o[i].name, o[i].help);
		switch (o[i].type) {
		case BU_OPT_INT:
			fprintf(stderr, " (default %ld)\n", *(long *)o[i].dst);
			break;
		case BU_OPT_DOUBLE:
			fprintf(stderr, " (default %g)\n", *(double *)o[i].dst);
			break;
		case BU_OPT_STR: {
			const char *s = *(const char **)o[i].dst;

			fprintf(stderr, " (default %s)\n", s ? s : "none");
			break;
		}
		}
	}
	fprintf(stderr, "  %-14s %s\n", "-h, --help", "this text");
}

/* Parses "--name VALUE" and "--name=VALUE"; exits on error or --help. */
static inline void bu_parse_args(int argc, char **argv, const char *what,
				 const struct bu_opt *o, size_t n)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *val = NULL, *eq;
		size_t len;
		size_t k;

		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			bu_usage(argv[0], what, o, n);
			exit(0);
		}
		eq = strchr(arg, '=');
		len = eq ? (size_t)(eq - arg) : strlen(arg);
		for (k = 0; k < n; k++)
			if (strlen(o[k].name) == len && !strncmp(arg, o[k].name, len))
				break;
		if (k == n) {
			fprintf(stderr, "%s: unknown option %s\n", argv[0], arg);
			bu_usage(argv[0], what, o, n);
			exit(2);
		}
		if (eq)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else
			bu_die("%s needs a value", o[k].name);

		char *end = NULL;

		errno = 0;
		switch (o[k].type) {
		case BU_OPT_INT:
			*(long *)o[k].dst = strtol(val, &end, 0);
			break;
		case BU_OPT_DOUBLE:
			*(double *)o[k].dst = strtod(val, &end);
			break;
		case BU_OPT_STR:
			*(const char **)o[k].dst = val;
			end = (char *)val + strlen(val);
			break;
		}
		if (errno || end == val || *end)
			bu_die("bad value for %s: %s", o[k].name, val);
	}
}

/* ------------------------------------------------------------------ JSON */

/*
 * A minimal streaming JSON writer: objects and arrays nest; inside an object
 * every value takes a key, inside an array the key is NULL.  Errors (cannot
 * open the file) exit; a NULL writer (no --json given) ignores every call.
 */
#define BU_JSON_MAX_DEPTH 32

struct bu_json {
	FILE *f;
	int depth;
	int count[BU_JSON_MAX_DEPTH];	/* values written at each level */
};

static inline struct bu_json *bu_json_open(const char *path)
{
	struct bu_json *j;

	if (!path)
		return NULL;
	j = calloc(1, sizeof(*j));
	if (!j)
		bu_die("out of memory");
	j->f = fopen(path, "w");
	if (!j->f)
		bu_die("cannot write %s: %s", path, strerror(errno));
	return j;
}

static inline void bu_json_str_raw(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* Separator, indentation and key before a value. */
static inline void bu_json_prefix(struct bu_json *j, const char *key)
{
	if (j->depth > 0) {
		if (j->count[j->depth]++)
			fputc(',', j->f);
		fputc('\n', j->f);
		for (int i = 0; i < j->depth; i++)
			fputs("  ", j->f);
	}
	if (key) {
		bu_json_str_raw(j->f, key);
		fputs(": ", j->f);
	}
}

static inline void bu_json_open_c(struct bu_json *j, const char *key, char c)
{
	if (!j)
		return;
	bu_json_prefix(j, key);
	fputc(c, j->f);
	if (++j->depth >= BU_JSON_MAX_DEPTH)
		bu_die("JSON nested too deep");
	j->count[j->depth] = 0;
}

static inline void bu_json_close_c(struct bu_json *j, char c)
{
	if (!j)
		return;
	int had = j->count[j->depth];

	j->depth--;
	if (had) {
		fputc('\n', j->f);
		for (int i = 0; i < j->depth; i++)
			fputs("  ", j->f);
	}
	fputc(c, j->f);
}

static inline void bu_json_obj_begin(struct bu_json *j, const char *key)
{
	bu_json_open_c(j, key, '{');
}

static inline void bu_json_obj_end(struct bu_json *j)
{
	bu_json_close_c(j, '}');
}

static inline void bu_json_arr_begin(struct bu_json *j, const char *key)
{
	bu_json_open_c(j, key, '[');
}

static inline void bu_json_arr_end(struct bu_json *j)
{
	bu_json_close_c(j, ']');
}

static inline void bu_json_num(struct bu_json *j, const char *key, double v)
{
	if (!j)
		return;
	bu_json_prefix(j, key);
	if (v != v || v > 1e308 || v < -1e308)
		fputs("null", j->f);	/* NaN and infinities are not JSON */
	else
		fprintf(j->f, "%.6g", v);
}

static inline void bu_json_int(struct bu_json *j, const char *key, long long v)
{
	if (!j)
		return;
	bu_json_prefix(j, key);
	fprintf(j->f, "%lld", v);
}

static inline void bu_json_bool(struct bu_json *j, const char *key, int v)
{
	if (!j)
		return;
	bu_json_prefix(j, key);
	fputs(v ? "true" : "false", j->f);
}

static inline void bu_json_str(struct bu_json *j, const char *key, const char *v)
{
	if (!j)
		return;
	bu_json_prefix(j, key);
	bu_json_str_raw(j->f, v);
}

/* An array of numbers. */
static inline void bu_json_nums(struct bu_json *j, const char *key, const double *v, size_t n)
{
	if (!j)
		return;
	bu_json_arr_begin(j, key);
	for (size_t i = 0; i < n; i++)
		bu_json_num(j, NULL, v[i]);
	bu_json_arr_end(j);
}

/* The 1-minute load average, or -1: other work on a 2-core machine skews everything. */
static inline double bu_loadavg(void)
{
	FILE *f = fopen("/proc/loadavg", "r");
	double l = -1.0;

	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1.0;
		fclose(f);
	}
	return l;
}

/* The environment every result file records: host, cores, libc, load. */
static inline void bu_json_env(struct bu_json *j, const char *bench)
{
	struct utsname u;

	if (!j)
		return;
	bu_json_str(j, "benchmark", bench);
	bu_json_int(j, "unix_time", (long long)time(NULL));
	bu_json_int(j, "online_cpus", sysconf(_SC_NPROCESSORS_ONLN));
	bu_json_str(j, "glibc", gnu_get_libc_version());
	if (!uname(&u)) {
		bu_json_str(j, "kernel", u.release);
		bu_json_str(j, "machine", u.machine);
	}
	bu_json_num(j, "loadavg_1min_at_end", bu_loadavg());
}

/* Closes the writer; exits non-zero if anything failed to reach the file. */
static inline void bu_json_close(struct bu_json *j, const char *path)
{
	if (!j)
		return;
	while (j->depth > 0)
		bu_json_close_c(j, '}');
	fputc('\n', j->f);
	if (ferror(j->f) | fclose(j->f))
		bu_die("writing %s failed", path);
	free(j);
	fprintf(stderr, "wrote %s\n", path);
}

/* One line that says where the run happened, for the printed table. */
static inline void bu_print_env(const char *bench)
{
	printf("%s: %ld online CPUs, glibc %s, 1-min load average at end %.2f (this run included)\n", bench,
	       sysconf(_SC_NPROCESSORS_ONLN), gnu_get_libc_version(), bu_loadavg());
}

#endif /* MLN_BENCH_UTIL_H */
