/* SPDX-License-Identifier: MIT */
/*
 * process.h - who the calling process is, and whether another one is still
 * alive: what a process-shared semaphore records of the processes that hold
 * or wait on it, so that the survivors can tell when one has died.
 *
 * A process is its pid plus its start time (clock ticks since boot, as
 * /proc/<pid>/stat gives it): a pid alone may be reused once its process has
 * died and been reaped; the pair names one process for as long as the
 * machine runs.  Internal to the core.
 */
#ifndef MLN_PROCESS_H
#define MLN_PROCESS_H

#include <stdbool.h>
#include <stdint.h>

struct mln_process {
	uint32_t pid;		/* getpid(), in the caller's pid namespace */
	uint32_t start;		/* start time, low 32 bits; 0 when /proc could not say */
	uint32_t pid_ns;	/* inode of its pid namespace, low 32 bits; 0: unknown */
};

/*
 * The calling process, looked up once (and again in a child after fork():
 * a pthread_atfork handler forgets it); the record stays where it is.  A child made by clone(2) without
 * fork()'s handlers would go on as its parent: see docs/design.md.
 */
const struct mln_process *mln_self(void);

/*
 * Is the process with @pid, which started at @start, alive?  Only the bits
 * of @start_mask are compared (0: @pid alone).  Dead: no such process, a
 * zombie whose every thread has exited, or a process whose start differs
 * (the pid was reused).  Where /proc cannot tell (not mounted, hidepid), it
 * asks kill(@pid, 0), which cannot tell a zombie nor a reused pid: alive.
 * A system call or two; for slow paths only.
 */
bool mln_process_alive(uint32_t pid, uint32_t start, uint32_t start_mask);

#endif /* MLN_PROCESS_H */
