/* SPDX-License-Identifier: MIT */
/*
 * host_backing_util.h - what the host-backing tests share: a host-backed
 * mm, a private read-write mapping, a host range, and a byte read or
 * written through the mm or straight through a window.
 */
#ifndef MLN_TEST_HOST_BACKING_UTIL_H
#define MLN_TEST_HOST_BACKING_UTIL_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "mm.h"
#include "mm_guest.h"
#include "mmap_lock.h"
#include "test_util.h"

#define PG ((uint64_t)MM_PAGE_SIZE)
#define RW (PROT_READ | PROT_WRITE)
#define ANON_PRIV (MAP_ANONYMOUS | MAP_PRIVATE)

static inline struct mm_struct *new_mm(void)
{
	struct mm_struct *mm = mm_alloc_opts(0, MMAP_LOCK_DEFAULT_BACKEND, MM_HOST_BACKING);

	CHECK(mm != NULL);
	return mm;
}

static inline uint64_t map(struct mm_struct *mm, uint64_t addr, uint64_t npages, int flags)
{
	int64_t a = mm_mmap(mm, addr, npages * PG, RW, ANON_PRIV | flags);

	CHECK(a > 0);
	return (uint64_t)a;
}

static inline struct mm_host_range range(struct mm_struct *mm, uint64_t addr, int access)
{
	struct mm_host_range hr;

	memset(&hr, 0, sizeof(hr));
	CHECK_EQ(mm_host_range(mm, addr, access, 0, &hr), 0);
	return hr;
}

/* The window byte behind guest @addr, as @hr shows it. */
static inline volatile uint8_t *at(const struct mm_host_range *hr, uint64_t addr)
{
	return (volatile uint8_t *)(uintptr_t)(hr->host + (addr - hr->start));
}

static inline uint8_t peek(struct mm_struct *mm, uint64_t addr)
{
	uint8_t b = 0xEE;

	CHECK_EQ(mm_access(mm, addr, &b, 1, 0, NULL), 0);
	return b;
}

static inline void poke(struct mm_struct *mm, uint64_t addr, uint8_t b)
{
	CHECK_EQ(mm_access(mm, addr, &b, 1, 1, NULL), 0);
}

#endif /* MLN_TEST_HOST_BACKING_UTIL_H */
