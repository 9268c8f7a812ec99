/* SPDX-License-Identifier: MIT */
/*
 * frames.h - the host frame file behind contiguous host backing
 * (docs/mm.md, "Contiguous host backing").
 *
 * One process-wide memfd, sparse, of FRAMES_MAX 4 KiB frames (tmpfs gives
 * a page memory only once it is written), and one MAP_SHARED view of all of
 * it, the pool: frame f's data is always at frames_pool + f * 4096, whatever
 * other host ranges (an mm's windows) map the same frame.  So a struct page
 * of a frame has a stable data pointer, as a slab page has, while a window
 * shows a whole VMA in one host range.
 *
 * Frames are handed out in runs of contiguous frame numbers (one mmap maps
 * a run), each with one reference; the holder of the last reference gives
 * the frame back, and it is punched (fallocate PUNCH_HOLE: its memory goes
 * and it reads as zero again) before anyone gets it anew.
 */
#ifndef MLN_FRAMES_H
#define MLN_FRAMES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtable.h"

#define FRAMES_MAX (1u << 24)	/* 64 GiB of frame file: the most contiguous backing in use */

typedef uint32_t frame_t;

/* The pool view (NULL before frames_init); the frame file's descriptor. */
extern uint8_t *_Atomic frames_pool;
extern int frames_fd;

/* Set the frame file up, once per process (per generation, see below): 0,
 * or -errno (ENOSYS without memfd). */
int frames_init(void);

/*
 * Host fork (frames.c): a forked child starts a new generation with a frame
 * file of its own; the frames of earlier generations are the parent's and
 * are never allocated, punched nor freed in the child.  frames_generation:
 * the current one (an mm made in an earlier one is stale: mm_backing_stale);
 * frames_inherited: whether @p points into the pool of an earlier one.
 */
#define FRAMES_OLD_POOLS_MAX 8	/* ancestors' pools a process remembers (frames.c) */
extern _Atomic uint32_t frames_gen;
extern _Atomic uint32_t frames_nr_old;

static inline uint32_t frames_generation(void)
{
	/* Relaxed: it changes only in a fork's child, before any other thread exists. */
	return atomic_load_explicit(&frames_gen, memory_order_relaxed);
}

bool frames_in_old_pool(const void *p);

static inline bool frames_inherited(const void *p)
{
	/* One relaxed load where no fork made a new generation (the common case). */
	return atomic_load_explicit(&frames_nr_old, memory_order_relaxed) && frames_in_old_pool(p);
}


/*
 * Relaxed loads of the pool: it is stored once a generation, and whoever
 * holds a frame got it through synchronisation with that store (the
 * release store and frames_init's acquire load, in the mm's creator); a
 * thread that has no frame may read NULL, rightly.
 */
static inline uint8_t *frames_base(void)
{
	return atomic_load_explicit(&frames_pool, memory_order_relaxed);
}

static inline uint8_t *frame_data(frame_t f)
{
	return frames_base() + ((size_t)f << MLN_PAGE_SHIFT);
}

/* Whether @p points into the pool (the page behind it is a frame). */
static inline bool frames_contains(const void *p)
{
	uint8_t *pool = frames_base();

	return pool && (uintptr_t)p - (uintptr_t)pool < ((size_t)FRAMES_MAX << MLN_PAGE_SHIFT);
}

static inline frame_t frame_of(const void *p)
{
	return (frame_t)(((uintptr_t)p - (uintptr_t)frames_base()) >> MLN_PAGE_SHIFT);
}

/* @n contiguous zero frames, one reference each: the first, or -ENOMEM. */
int64_t frames_alloc(size_t n);
/* Another reference to @f (the caller holds one, or a lock that keeps one). */
void frame_get(frame_t f);
/* The references to @f now (exact only while no other holder can come or go). */
uint32_t frame_refs(frame_t f);
/* Drop one reference to each of @f[0..n); frames left with none are punched
 * and freed, a run of consecutive frame numbers with one syscall. */
void frames_put(const frame_t *f, size_t n);
/* Drop one reference to each frame of the run [f, f + n). */
void frames_put_run(frame_t f, size_t n);
/* Zero @n frames from @f (punch): they stay allocated and mapped. */
void frames_zero(frame_t f, size_t n);
/* Map frames [f, f + n) read-write, shared, at @at exactly (MAP_FIXED): 0 or -errno. */
int frames_map_at(void *at, frame_t f, size_t n);
/* Map them at @hint if that range is free (MAP_FIXED_NOREPLACE), else anywhere: NULL on failure. */
void *frames_map_near(void *hint, frame_t f, size_t n);
/* The first frame of [f, end) written since it was last zero (lseek's SEEK_DATA:
 * a syscall per written extent, not per frame), or @end. */
frame_t frames_next_data(frame_t f, frame_t end);
/* The first frame of [f, end) that reads as zero untouched (SEEK_HOLE), or @end. */
frame_t frames_next_hole(frame_t f, frame_t end);

/*
 * Spare one-page windows: a window page whose frame dies with it (@f's
 * only reference is the caller's) may be kept mapped, with its frame, for
 * the next one-page window (no mmap, munmap, nor page fault in the kernel).
 * frames_spare_put: true if kept (the reference is the cache's now), else
 * the caller unmaps and puts as usual.  frames_spare_take: true with a
 * spare's window page and frame, zeroed, one reference for the caller.
 */
bool frames_spare_put(uintptr_t host, frame_t f);
bool frames_spare_take(uintptr_t *host, frame_t *f);

/* Frames handed out and not given back (for tests and accounting). */
size_t frames_in_use(void);

/*
 * Fault injection, for the tests of what happens when the host runs out:
 * with FRAMES_FAIL_ALLOC, frames_alloc and frames_spare_take fail as when
 * no frame is left; with FRAMES_FAIL_MAP, frames_map_at and frames_map_near
 * fail as mmap does without memory.  Process-wide; 0, the default, is off.
 * Costs the paths it guards one relaxed load.
 */
#define FRAMES_FAIL_ALLOC 1u
#define FRAMES_FAIL_MAP 2u
void frames_inject_failures(unsigned int what);

#endif /* MLN_FRAMES_H */
