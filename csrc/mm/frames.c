/* SPDX-License-Identifier: MIT */
/*
 * frames.c - the host frame file (frames.h): its setup, the allocator of
 * frame runs, and the per-frame reference counts.
 *
 * The allocator keeps the free frames below a high-water mark as extents
 * sorted by first frame and coalesced, under one futex mutex; frames at or
 * above the mark were never handed out (still holes in the file).  An
 * allocation takes the first extent long enough, else raises the mark, so
 * that a run is always contiguous and a window maps it with one mmap.  An
 * extent freed up to the mark lowers the mark instead.
 *
 * A map/touch/unmap cycle of one page would punch a frame (a syscall) and
 * then have the kernel allocate and zero a page for it again on the next
 * touch.  So up to FRAMES_CACHE single frames that died are kept as they
 * are, resident, and a one-frame allocation takes the latest of them and
 * zeroes it with a memset through the pool (the slab's per-thread caches
 * do the same for slab pages).  They count as free.  Likewise up to
 * FRAMES_SPARES one-page windows whose frame died with them stay mapped,
 * frame and all, for the next one-page window: a one-page mmap, touch and
 * munmap then costs the host no syscall and no page fault.
 *
 * Reference counts live in a sparse anonymous mapping indexed by frame
 * (4 bytes a frame; the kernel gives a page of them memory on first touch),
 * with the rules of page_put(): an increment is relaxed (the incrementer
 * holds a reference, or a lock that keeps one), a decrement a release, and
 * the decrement to zero is followed by an acquire, so that the thread that
 * punches the frame sees every other holder's writes done.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "frames.h"
#include "futex.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000	/* <linux/mman.h>; glibc before 2.28 lacks it */
#endif
#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01	/* <linux/falloc.h> */
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif

#define FRAME_BYTES(n) ((size_t)(n) << MLN_PAGE_SHIFT)
#define FRAMES_CACHE 256	/* dead frames kept resident for reuse (1 MiB) */
#define FRAMES_SPARES 64	/* one-page windows kept mapped with their frames */

uint8_t *_Atomic frames_pool;
int frames_fd = -1;
static _Atomic uint32_t *frame_refcount;	/* by frame number */
static pthread_mutex_t frames_setup_lock = PTHREAD_MUTEX_INITIALIZER;
static int frames_err;				/* the setup failed: -errno, for good */
_Atomic uint32_t frames_gen;
/* The pools of earlier generations (host fork): the parent's frames, never released here. */
static uint8_t *frames_old_pool[FRAMES_OLD_POOLS_MAX];
_Atomic uint32_t frames_nr_old;
static _Atomic bool frames_frozen;		/* the pool is an ancestor's, kept as it is */
/* FRAMES_FAIL_*: relaxed, a test sets it between the operations it checks. */
static _Atomic unsigned int frames_fail;

static bool failing(unsigned int what)
{
	return atomic_load_explicit(&frames_fail, memory_order_relaxed) & what;
}

void frames_inject_failures(unsigned int what)
{
	atomic_store_explicit(&frames_fail, what, memory_order_relaxed);
}

struct extent {
	frame_t start, len;
};

static struct {
	_Atomic uint32_t lock;		/* futex mutex over the fields below */
	struct extent *free;		/* sorted, coalesced, all below top */
	size_t nr, cap;
	frame_t top;			/* frames from here on were never handed out */
	size_t in_use;
	frame_t cache[FRAMES_CACHE];	/* dead frames not punched, newest last */
	size_t nr_cache;
	struct {
		uintptr_t host;
		frame_t f;
	} spare[FRAMES_SPARES];		/* spare windows, newest last */
	size_t nr_spare;
} fa;

__attribute__((noreturn, cold))
static void frames_bug(const char *what, frame_t f)
{
	fprintf(stderr, "frames: %s (frame %u)\n", what, f);
	abort();
}

/* Under frames_setup_lock, once per generation. */
static void frames_setup(void)
{
	size_t bytes = FRAME_BYTES(FRAMES_MAX);
	void *pool, *refs;
	int fd = memfd_create("mmap-lock-native frames", MFD_CLOEXEC);

	if (fd < 0) {
		frames_err = -errno;
		return;
	}
	/* Sparse: tmpfs allocates a page only when it is written. */
	if (ftruncate(fd, (off_t)bytes)) {
		frames_err = -errno;
		close(fd);
		return;
	}
	pool = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	refs = mmap(NULL, FRAMES_MAX * sizeof(*frame_refcount), PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (pool == MAP_FAILED || refs == MAP_FAILED) {
		frames_err = -ENOMEM;
		if (pool != MAP_FAILED)
			munmap(pool, bytes);
		if (refs != MAP_FAILED)
			munmap(refs, FRAMES_MAX * sizeof(*frame_refcount));
		close(fd);
		return;
	}
	frames_fd = fd;
	frame_refcount = refs;
	/* Release: frames_init's acquire fast path sees the setup's stores with the pool. */
	atomic_store_explicit(&frames_pool, pool, memory_order_release);
}

static bool frozen(void)
{
	/* Relaxed: set only in a fork's child, before any other thread exists. */
	return atomic_load_explicit(&frames_frozen, memory_order_relaxed);
}

int frames_init(void)
{
	int err;

	/* Acquire: pairs with the setup's release store. */
	if (mln_likely(atomic_load_explicit(&frames_pool, memory_order_acquire) && !frozen()))
		return 0;
	pthread_mutex_lock(&frames_setup_lock);
	if (frozen()) {
		err = -ENOMEM;			/* no generation of our own (see Host fork) */
	} else {
		if (!atomic_load_explicit(&frames_pool, memory_order_relaxed) && !frames_err)
			frames_setup();
		err = atomic_load_explicit(&frames_pool, memory_order_relaxed) ? 0 : frames_err;
	}
	pthread_mutex_unlock(&frames_setup_lock);
	return err;
}

/*
 * Host fork.  The child's copy of the pool maps the parent's frame file
 * MAP_SHARED, and its copy of the allocator hands out frame numbers the
 * parent hands out too: every write, punch or reuse would reach the
 * parent's memory.  So the fork is fenced (prepare takes the setup lock
 * and the allocator's, so that neither is mid-change; the parent gives
 * them back) and the child starts a new generation: no pool, a fresh
 * allocator, a frame file of its own at its next frames_init.  The old
 * pool stays mapped, as the inherited mms' pages and any buffer an
 * embedder took from them point into it, and is remembered so that such a
 * page is never released into this generation's file (frames_inherited).
 * A child of FRAMES_OLD_POOLS_MAX generations of host-backed ancestors has no
 * room to remember one more: it keeps its parent's pool as it is, frozen
 * (nothing allocated, put back nor punched), and gets no host backing.
 */
static void frames_fork_prepare(void)
{
	pthread_mutex_lock(&frames_setup_lock);
	mln_mutex_lock(&fa.lock, 0);
}

static void frames_fork_parent(void)
{
	mln_mutex_unlock(&fa.lock, 0);
	pthread_mutex_unlock(&frames_setup_lock);
}

static void frames_fork_child(void)
{
	uint8_t *pool = atomic_load_explicit(&frames_pool, memory_order_relaxed);
	uint32_t nr_old = atomic_load_explicit(&frames_nr_old, memory_order_relaxed);

	atomic_fetch_add_explicit(&frames_gen, 1, memory_order_relaxed);
	if (pool && !frozen()) {
		if (nr_old == FRAMES_OLD_POOLS_MAX) {
			atomic_store_explicit(&frames_frozen, true, memory_order_relaxed);
		} else {
			frames_old_pool[nr_old] = pool;
			atomic_store_explicit(&frames_nr_old, nr_old + 1, memory_order_relaxed);
			close(frames_fd);
			frames_fd = -1;
			frame_refcount = NULL;		/* the old counts stay mapped, unused */
			atomic_store_explicit(&frames_pool, NULL, memory_order_relaxed);
		}
	}
	/* The extent array is the parent's bookkeeping: left behind, not freed. */
	memset(&fa, 0, sizeof(fa));		/* the lock word too: unlocked */
	pthread_mutex_unlock(&frames_setup_lock);
}

/* At load, before any thread can be inside the allocator: no fork can come first. */
__attribute__((constructor)) static void frames_module_init(void)
{
	pthread_atfork(frames_fork_prepare, frames_fork_parent, frames_fork_child);
}

bool frames_in_old_pool(const void *p)
{
	uint32_t n = atomic_load_explicit(&frames_nr_old, memory_order_relaxed);
	size_t span = (size_t)FRAMES_MAX << MLN_PAGE_SHIFT;

	for (uint32_t i = 0; i < n; i++)
		if ((uintptr_t)p - (uintptr_t)frames_old_pool[i] < span)
			return true;
	return false;
}

/* Under the lock: the extent index where one starting at @f belongs. */
static size_t extent_slot(frame_t f)
{
	size_t lo = 0, hi = fa.nr;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (fa.free[mid].start < f)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Under the lock: give [f, f + n) back, coalescing; the mark drops if it ends there. */
static void extent_free(frame_t f, frame_t n)
{
	size_t i = extent_slot(f);
	bool join_prev = i > 0 && fa.free[i - 1].start + fa.free[i - 1].len == f;
	bool join_next = i < fa.nr && f + n == fa.free[i].start;

	fa.in_use -= n;
	if (join_prev) {
		fa.free[i - 1].len += n;
		if (join_next) {
			fa.free[i - 1].len += fa.free[i].len;
			memmove(&fa.free[i], &fa.free[i + 1], (fa.nr - i - 1) * sizeof(fa.free[0]));
			fa.nr--;
		}
		i--;
	} else if (join_next) {
		fa.free[i].start = f;
		fa.free[i].len += n;
	} else {
		if (fa.nr == fa.cap) {
			size_t cap = fa.cap ? 2 * fa.cap : 64;
			struct extent *m = realloc(fa.free, cap * sizeof(*m));

			/* No memory to remember them: the frames are lost (punched already). */
			if (!m)
				return;
			fa.free = m;
			fa.cap = cap;
		}
		memmove(&fa.free[i + 1], &fa.free[i], (fa.nr - i) * sizeof(fa.free[0]));
		fa.free[i] = (struct extent){ f, n };
		fa.nr++;
	}
	if (i == fa.nr - 1 && fa.free[i].start + fa.free[i].len == fa.top) {
		fa.top = fa.free[i].start;
		fa.nr--;
	}
}

int64_t frames_alloc(size_t n)
{
	int64_t f = -ENOMEM;

	if (!n || n > FRAMES_MAX || frames_init() || failing(FRAMES_FAIL_ALLOC))
		return -ENOMEM;
	mln_mutex_lock(&fa.lock, 0);
	if (n == 1 && fa.nr_cache) {
		f = fa.cache[--fa.nr_cache];
		fa.in_use++;
		mln_mutex_unlock(&fa.lock, 0);
		memset(frame_data((frame_t)f), 0, FRAME_BYTES(1));	/* mapped nowhere else */
		atomic_store_explicit(&frame_refcount[f], 1, memory_order_relaxed);
		return f;
	}
	for (size_t i = 0; i < fa.nr; i++) {
		if (fa.free[i].len < n)
			continue;
		f = fa.free[i].start;
		fa.free[i].start += (frame_t)n;
		fa.free[i].len -= (frame_t)n;
		if (!fa.free[i].len) {
			memmove(&fa.free[i], &fa.free[i + 1], (fa.nr - i - 1) * sizeof(fa.free[0]));
			fa.nr--;
		}
		break;
	}
	if (f < 0 && FRAMES_MAX - fa.top >= n) {
		f = fa.top;
		fa.top += (frame_t)n;
	}
	if (f >= 0)
		fa.in_use += n;
	mln_mutex_unlock(&fa.lock, 0);
	/* Relaxed: the frame numbers reach others through a lock or a syscall after this. */
	for (size_t i = 0; f >= 0 && i < n; i++)
		atomic_store_explicit(&frame_refcount[f + (int64_t)i], 1, memory_order_relaxed);
	return f;
}

void frame_get(frame_t f)
{
	/* Relaxed: the caller holds a reference, or the lock over one. */
	atomic_fetch_add_explicit(&frame_refcount[f], 1, memory_order_relaxed);
}

uint32_t frame_refs(frame_t f)
{
	/* Acquire: a holder's release decrement and its writes before it are seen together. */
	return atomic_load_explicit(&frame_refcount[f], memory_order_acquire);
}

void frames_zero(frame_t f, size_t n)
{
	if (frozen())
		return;				/* an ancestor's frames: not ours to punch */
	if (fallocate(frames_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)FRAME_BYTES(f), (off_t)FRAME_BYTES(n)))
		memset(frame_data(f), 0, FRAME_BYTES(n));	/* cannot punch: zero by hand */
}

/* Punch a run of dead frames and give it back; a single one goes to the cache if it has room. */
static void run_free(frame_t f, size_t n)
{
	if (n == 1) {
		mln_mutex_lock(&fa.lock, 0);
		if (fa.nr_cache < FRAMES_CACHE) {
			fa.cache[fa.nr_cache++] = f;
			fa.in_use--;
			mln_mutex_unlock(&fa.lock, 0);
			return;
		}
		mln_mutex_unlock(&fa.lock, 0);
	}
	frames_zero(f, n);
	mln_mutex_lock(&fa.lock, 0);
	extent_free(f, (frame_t)n);
	mln_mutex_unlock(&fa.lock, 0);
}

void frames_put(const frame_t *v, size_t n)
{
	frame_t run = 0;
	size_t len = 0;

	if (frozen())
		return;				/* an ancestor's frames: not ours to give back */
	for (size_t i = 0; i < n; i++) {
		frame_t f = v[i];
		/* Release: our writes to the frame happen before whoever punches it. */
		uint32_t old = atomic_fetch_sub_explicit(&frame_refcount[f], 1, memory_order_release);

		if (old > 1)
			continue;
		if (old == 0)
			frames_bug("frames_put: refcount underflow", f);
		/* Acquire: the last decrement synchronises with every earlier release one. */
		(void)atomic_load_explicit(&frame_refcount[f], memory_order_acquire);
		if (len && f == run + len) {
			len++;
			continue;
		}
		if (len)
			run_free(run, len);
		run = f;
		len = 1;
	}
	if (len)
		run_free(run, len);
}

void frames_put_run(frame_t f, size_t n)
{
	frame_t batch[64];

	while (n) {
		size_t k = n < 64 ? n : 64;

		for (size_t i = 0; i < k; i++)
			batch[i] = f + (frame_t)i;
		frames_put(batch, k);
		f += (frame_t)k;
		n -= k;
	}
}

int frames_map_at(void *at, frame_t f, size_t n)
{
	void *p;

	if (failing(FRAMES_FAIL_MAP))
		return -ENOMEM;
	p = mmap(at, FRAME_BYTES(n), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		       frames_fd, (off_t)FRAME_BYTES(f));

	return p == MAP_FAILED ? -errno : 0;
}

void *frames_map_near(void *hint, frame_t f, size_t n)
{
	void *p;

	if (failing(FRAMES_FAIL_MAP))
		return NULL;
	if (hint) {
		p = mmap(hint, FRAME_BYTES(n), PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED_NOREPLACE, frames_fd, (off_t)FRAME_BYTES(f));
		if (p == hint)
			return p;
		if (p != MAP_FAILED)		/* a kernel before 4.17 took it as a hint */
			munmap(p, FRAME_BYTES(n));
	}
	p = mmap(NULL, FRAME_BYTES(n), PROT_READ | PROT_WRITE, MAP_SHARED, frames_fd,
		 (off_t)FRAME_BYTES(f));
	return p == MAP_FAILED ? NULL : p;
}

/* lseek(SEEK_DATA or SEEK_HOLE) from frame @f, in frames, at most @end. */
static frame_t seek_frame(frame_t f, frame_t end, int whence)
{
	off_t at = lseek(frames_fd, (off_t)FRAME_BYTES(f), whence);
	frame_t d;

	if (at < 0)
		return end;		/* ENXIO: no data from there on (the file ends in a hole) */
	d = (frame_t)((uint64_t)at >> MLN_PAGE_SHIFT);
	return d < end ? d : end;
}

frame_t frames_next_data(frame_t f, frame_t end)
{
	return seek_frame(f, end, SEEK_DATA);
}

frame_t frames_next_hole(frame_t f, frame_t end)
{
	return seek_frame(f, end, SEEK_HOLE);
}

bool frames_spare_put(uintptr_t host, frame_t f)
{
	bool kept = false;

	mln_mutex_lock(&fa.lock, 0);
	if (fa.nr_spare < FRAMES_SPARES) {
		fa.spare[fa.nr_spare].host = host;
		fa.spare[fa.nr_spare++].f = f;
		fa.in_use--;
		kept = true;
	}
	mln_mutex_unlock(&fa.lock, 0);
	return kept;
}

bool frames_spare_take(uintptr_t *host, frame_t *f)
{
	bool got = false;

	if (failing(FRAMES_FAIL_ALLOC) || frozen())
		return false;
	mln_mutex_lock(&fa.lock, 0);
	if (fa.nr_spare) {
		fa.nr_spare--;
		*host = fa.spare[fa.nr_spare].host;
		*f = fa.spare[fa.nr_spare].f;
		fa.in_use++;
		got = true;
	}
	mln_mutex_unlock(&fa.lock, 0);
	if (got)	/* its last user's writes happen before: the lock, and its release put */
		memset(frame_data(*f), 0, FRAME_BYTES(1));
	return got;
}

size_t frames_in_use(void)
{
	size_t n;

	mln_mutex_lock(&fa.lock, 0);
	n = fa.in_use;
	mln_mutex_unlock(&fa.lock, 0);
	return n;
}
