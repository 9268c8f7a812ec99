/* SPDX-License-Identifier: MIT */
/*
 * mm_guest.h - guest memory for embedders: what an emulator needs to use an
 * mm as its guest's address space (docs/embedding.md).
 *
 *   mm_guest_fault, mm_guest_access   faults and copies with an access type
 *                                     (read, write, exec) and flags
 *   mm_pin_pages, mm_unpin_pins       pins with the host address and the
 *                                     protection the guest has through each
 *   mm_host_range                     the host memory behind an address
 *   mm_find_vma, mm_vma_seq           one VMA, and a count of layout changes
 *   mm_read_lock, mm_read_unlock      one read acquisition for a series of
 *                                     MM_GUEST_LOCKED calls
 *
 * Locking is the kernel's: faults and copies take only the VMA's lock under
 * the per_vma design (mm_fault.c), pins and lookups the mmap read lock, as
 * get_user_pages and find_vma callers do.  With MM_GUEST_LOCKED the caller
 * holds the read lock already (mm_read_lock) and nothing is taken.  Every
 * call refuses, with -EDEADLK, to run from one of the mm's own MMU notifiers
 * or from a thread inside its guest (mm_inval.h: mm_tlb_enter).
 */
#ifndef MLN_MM_GUEST_H
#define MLN_MM_GUEST_H

#include <stddef.h>
#include <stdint.h>

#include "mm.h"

/* cffi:begin */
/* Access types: what the guest does at the address. */
#define MM_ACCESS_READ 0
#define MM_ACCESS_WRITE 1
#define MM_ACCESS_EXEC 2	/* an instruction fetch: the VMA needs PROT_EXEC */

/* Flags of the guest-memory calls. */
#define MM_GUEST_KILLABLE 1	/* -EINTR for a killed task, before anything and between pages */
#define MM_GUEST_LOCKED 2	/* the caller holds the mmap read lock (mm_read_lock) */

/*
 * A fault at @addr for @access: 0 (the page is present with that access),
 * SEGV_MAPERR or SEGV_ACCERR, -ENOMEM, -EINVAL (bad access or flags), or
 * the lock's refusal.  A fault just below a MAP_GROWSDOWN mapping grows it
 * (not under MM_GUEST_LOCKED: growing needs the write lock).
 */
int mm_guest_fault(struct mm_struct *mm, uint64_t addr, int access, unsigned int flags);
/* mm_access() with flags. */
int mm_guest_access(struct mm_struct *mm, uint64_t addr, void *buf, size_t n, int write,
		    unsigned int flags, uint64_t *fault_addr);

struct mm_pin {
	struct page *page;	/* NULL once unpinned */
	uint64_t host;		/* the page's memory, in this process */
	uint64_t addr;		/* the guest page */
	uint32_t prot;		/* PROT_* the guest has through it now: the VMA's, less
				 * PROT_WRITE while the page is read-only (copy-on-write
				 * shared, or write-protected) */
	uint32_t reserved;
};
/*
 * Fault in and pin @npages pages from @addr (page aligned) for @access, as
 * pin_user_pages(): a pinned page outlives munmap, and a private page shared
 * copy-on-write is first copied, so the pin follows this mm's writes.
 * 0, or a SEGV_* code with *@fault_addr set and nothing pinned, or -errno.
 */
int mm_pin_pages(struct mm_struct *mm, uint64_t addr, size_t npages, int access,
		 unsigned int flags, struct mm_pin *out, uint64_t *fault_addr);
/* Unpin the still-pinned ones of @pins[0..n) (their page set to NULL): how many. */
size_t mm_unpin_pins(struct mm_pin *pins, size_t n);

/*
 * The host memory behind guest address @addr, faulted in for @access:
 * [start, end) of the guest is [host, host + end - start) in this process,
 * with protection @prot for the guest.  Nothing is pinned: it stays valid
 * until an invalidation (mm_inval.h) covering it starts.  In an mm made
 * with MM_HOST_BACKING it is the largest run around @addr of the VMA's
 * window (the whole VMA in the common case, up to BACKING_REACH each way)
 * whose pages allow at least @prot: writes through it land in the pages
 * (docs/mm.md, "Contiguous host backing").  Otherwise, and for shared
 * mappings, each page is its own host allocation and the range is one page.
 */
struct mm_host_range {
	uint64_t host, start, end;
	uint32_t prot;
	uint32_t reserved;
};
int mm_host_range(struct mm_struct *mm, uint64_t addr, int access, unsigned int flags,
		  struct mm_host_range *out);

/*
 * The kernel's find_vma() (@containing = 0: the first VMA ending above
 * @addr) or vma_lookup() (@containing = 1: the VMA containing @addr), copied
 * into @out with the layout count it was read at (@out->seq).  1 if found,
 * 0 if not, or -errno.  O(log n); under per_vma, a containing lookup takes
 * only the VMA's lock.
 */
int mm_find_vma(struct mm_struct *mm, uint64_t addr, int containing, unsigned int flags,
		struct mm_vma_info *out);
/*
 * A count of the mm's layout changes: bumped under the write lock by every
 * change of any VMA (mmap, munmap, mprotect, brk, mremap, a stack growing)
 * and of the break.  A VMA record read at count c is still exact while
 * mm_vma_seq() == c.
 */
uint64_t mm_vma_seq(struct mm_struct *mm);

/* The read lock for a series of MM_GUEST_LOCKED calls (killable, refusals as every operation). */
int mm_read_lock(struct mm_struct *mm);
int mm_read_unlock(struct mm_struct *mm);
/* cffi:end */

#endif /* MLN_MM_GUEST_H */
