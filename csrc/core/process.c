/* SPDX-License-Identifier: MIT */
/*
 * process.c - the calling process's identity, and other processes' liveness,
 * from /proc (process.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "futex.h"
#include "process.h"

/* What /proc/<pid>/stat says of a process. */
struct proc_stat {
	char state;		/* R, S, D, T, Z, X, ... */
	long threads;		/* num_threads */
	uint64_t start;		/* starttime, clock ticks since boot */
};

/*
 * Read /proc/<pid>/stat.  0, or -errno of open/read (ENOENT: no such
 * process, or one /proc hides).  Only open/read/close: a process that forks
 * from a thread may call it in the child.
 *
 * Every record is read alike, our own included, by a path relative to an
 * opened /proc: a process's own start time must be the one the others read
 * of it.  (qemu-user, which runs CI's arm64 tests, rewrites the paths
 * /proc/self/stat and /proc/<own pid>/stat, with a start time a tick off.)
 */
static int read_proc_stat(uint32_t pid, struct proc_stat *st)
{
	char name[16], buf[1024];
	const char *p;
	ssize_t n;
	int dir, fd, field, err;

	dir = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return -errno;
	snprintf(name, sizeof(name), "%u/stat", pid);
	fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
	err = fd < 0 ? -errno : 0;
	close(dir);
	if (err)
		return err;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n < 0 ? -errno : -ENODATA;
	buf[n] = '\0';
	/* Field 2, the command, is in parentheses and may hold anything: start after the last ')'. */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2])
		return -ENODATA;
	p += 2;
	st->state = *p;
	st->threads = 0;
	st->start = 0;
	/* Now at field 3 (state); num_threads is field 20, starttime field 22. */
	for (field = 3; field < 22; field++) {
		p = strchr(p, ' ');
		if (!p)
			return -ENODATA;
		p++;
		if (field + 1 == 20)
			st->threads = strtol(p, NULL, 10);
	}
	st->start = strtoull(p, NULL, 10);
	return 0;
}

bool mln_process_alive(uint32_t pid, uint32_t start, uint32_t start_mask)
{
	struct proc_stat st;
	int rc = read_proc_stat(pid, &st);

	if (rc == 0) {
		/*
		 * A zombie is dead once its threads are: a leader that left by
		 * pthread_exit() also shows Z while the others run (threads > 1).
		 */
		if ((st.state == 'Z' || st.state == 'X') && st.threads <= 1)
			return false;
		return ((uint32_t)st.start & start_mask) == (start & start_mask);
	}
	/* /proc cannot tell: kill(2) knows at least whether the pid is taken. */
	return !(kill((pid_t)pid, 0) < 0 && errno == ESRCH);
}

/*
 * The calling process, looked up on first use and published by the release
 * store of `self_known`: a reader whose acquire load sees it set reads the
 * record as stored.  First users that race take `self_lock` to fill it once;
 * after fork() the child (one thread) forgets it and fills it again.
 */
static _Atomic uint32_t self_lock;
static _Atomic uint32_t self_known;
static struct mln_process self;

static void self_lookup(void) __attribute__((noinline, cold));
static void self_lookup(void)
{
	mln_mutex_lock(&self_lock, 0);
	if (!atomic_load_explicit(&self_known, memory_order_relaxed)) {
		struct proc_stat st;
		struct stat ns;

		self.pid = (uint32_t)getpid();
		self.start = read_proc_stat(self.pid, &st) == 0 ? (uint32_t)st.start : 0;
		self.pid_ns = stat("/proc/self/ns/pid", &ns) == 0 ? (uint32_t)ns.st_ino : 0;
		/* Release: the record above, before anyone may read it. */
		atomic_store_explicit(&self_known, 1, memory_order_release);
	}
	mln_mutex_unlock(&self_lock, 0);
}

const struct mln_process *mln_self(void)
{
	/* Acquire: pairs with the release in self_lookup(). */
	if (mln_unlikely(!atomic_load_explicit(&self_known, memory_order_acquire)))
		self_lookup();
	return &self;
}

/* A forked child is another process: look again on its first use. */
static void process_atfork_child(void)
{
	atomic_store_explicit(&self_lock, 0, memory_order_relaxed);
	atomic_store_explicit(&self_known, 0, memory_order_relaxed);
}

__attribute__((constructor)) static void process_module_init(void)
{
	pthread_atfork(NULL, NULL, process_atfork_child);
}
