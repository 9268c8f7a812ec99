/* SPDX-License-Identifier: MIT */
/*
 * mm.h - the emulated address space: VMAs, page table, faults, guest memory.
 *
 * The operations take the mm's mmap_lock exactly where the kernel takes it:
 *
 *   mm_mmap, mm_mprotect, mm_brk,
 *   mm_madvise with advice Linux keeps in
 *   vm_flags (DONTFORK, DOFORK, WIPEONFORK,
 *   KEEPONFORK, NORMAL, RANDOM, SEQUENTIAL,
 *   (NO)HUGEPAGE, DONTDUMP, DODUMP)             write
 *   mm_munmap                                   write, downgraded to read while
 *                                               the page tables are torn down
 *   mm_madvise (advice about pages: DONTNEED(_LOCKED),
 *   FREE, WILLNEED, COLD, PAGEOUT, POPULATE_*), mm_fault,
 *   mm_access, mm_get_user_pages, mm_maps       read
 *   mm_fork                                     the parent's write lock, then the
 *                                               child's with mmap_write_lock_nested(
 *                                               child, SINGLE_DEPTH_NESTING)
 *   mm_register_notifier, mm_exit_mmap          write
 *
 * Errors are the kernel's: a negative errno where the system call fails
 * (EINVAL, ENOMEM, EEXIST, EBADF), and for bad accesses the si_code a
 * SIGSEGV would carry (SEGV_MAPERR: no VMA; SEGV_ACCERR: the VMA forbids it).
 * An operation whose lock acquisition is refused (-EDEADLK: the caller holds
 * the lock already, or the lock-order checker refused it) fails with that
 * errno, changes nothing and leaves the caller's holds as they were.  So
 * does a call into an mm from one of its own MMU notifiers (-EDEADLK): they
 * run under its lock, and the operation under way still needs its state.
 * Every wait for the lock is killable (-EINTR once task_kill() reaches the
 * task) and, for a binding that runs signal handlers between calls
 * (mm_signal_aware, mm_internal.h), interruptible: -ERESTART, nothing done,
 * call again.
 *
 * With the per_vma design, faults and guest accesses read-lock only the VMA
 * they touch (vma_lock.h), found without the mmap lock, and fall back to
 * the read lock when that fails.
 * Addresses are below MM_TASK_SIZE; pages are 4 KiB.
 */
#ifndef MLN_MM_H
#define MLN_MM_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#include "mm_types.h"
#include "pgtable.h"

/* PROT_*, MAP_*, MADV_* and SEGV_* are the system's (<sys/mman.h>, <signal.h>). */
/* Advice numbers newer than some C libraries' headers: Linux's uapi values. */
#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif
#ifndef MADV_DONTFORK
#define MADV_DONTFORK 10
#endif
#ifndef MADV_DOFORK
#define MADV_DOFORK 11
#endif
#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif
#ifndef MADV_KEEPONFORK
#define MADV_KEEPONFORK 19
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* cffi:begin */
#define MM_PAGE_SIZE 4096
#define MM_TASK_SIZE 0x7ffffffff000		/* x86-64's, 47-bit user space */
#define MM_MMAP_BASE 0x7f0000000000		/* top-down mmap starts below this */
#define MM_START_BRK 0x0000555555560000		/* where the heap begins */
#define MM_MMAP_MIN_ADDR 65536			/* vm.mmap_min_addr */
#define MM_DEFAULT_MAX_MAP_COUNT 65530		/* vm.max_map_count */
#define MM_STACK_GUARD_GAP 0x100000		/* stack_guard_gap: 256 pages */
#define MM_STACK_LIMIT 0x800000		/* RLIMIT_STACK's default: 8 MiB */

/* A new, empty mm, its lock initialised with @lock_flags (mmap_lock_init) over
 * the default design, per_vma as in current kernels (the rwsem for a
 * MMAP_LOCK_SHARED mm); NULL on ENOMEM or bad flags. */
struct mm_struct *mm_alloc(unsigned int lock_flags);
/* The same over lock backend @backend (MMAP_LOCK_BACKEND_*); fork keeps it. */
struct mm_struct *mm_alloc_backend(unsigned int lock_flags, int backend);
/*
 * Options of mm_alloc_opts(), which fork keeps.  MM_HOST_BACKING: private
 * anonymous memory lives in windows, one contiguous host range per VMA, so
 * that mm_host_range() gives an emulator a whole VMA (docs/mm.md,
 * "Contiguous host backing"); needs memfd_create (NULL with ENOSYS-less
 * kernels: the mm cannot be made).
 */
#define MM_HOST_BACKING 1u
struct mm_struct *mm_alloc_opts(unsigned int lock_flags, int backend, unsigned int mm_flags);
/* Whether @mm was made with MM_HOST_BACKING (or forked from one that was). */
int mm_host_backed(const struct mm_struct *mm);
/* Frames of the process-wide frame file in use (host backing), for accounting and tests. */
size_t mm_host_frames(void);
/* exit_mmap() if not done, then free @mm: 0, or -EBUSY (nothing freed) while
 * its lock is held or awaited, or -ESTALE (nothing freed, ever) for a
 * host-backed mm a host fork() copied into this process: its frames are the
 * parent's.  Every other call on such an mm is -ESTALE too. */
int mm_free(struct mm_struct *mm);
/* exit_mmap(): notifiers' release(), every mapping removed; later operations fail
 * with -EINVAL (faults with SEGV_MAPERR).  0, or -EINVAL if already closed. */
int mm_exit_mmap(struct mm_struct *mm);

/*
 * mmap(2) of anonymous memory: the address, or a negative errno.  Flags as
 * Linux: MAP_POPULATE (and MAP_LOCKED) prefault the range after the write
 * lock is dropped, unless MAP_NONBLOCK; MAP_GROWSDOWN makes a private
 * mapping that a fault just below grows (EINVAL with MAP_SHARED);
 * MAP_32BIT places it in [1 GiB, 2 GiB) as x86-64 does; MAP_HUGETLB is
 * EINVAL, as on a kernel without huge pages; MAP_NORESERVE, MAP_STACK and
 * flags Linux ignores are accepted and do nothing.
 */
int64_t mm_mmap(struct mm_struct *mm, uint64_t addr, uint64_t length, int prot, int flags);
int mm_munmap(struct mm_struct *mm, uint64_t addr, uint64_t length);
/*
 * mremap(2) of anonymous memory (MREMAP_MAYMOVE, MREMAP_FIXED,
 * MREMAP_DONTUNMAP): the new address, or a negative errno as Linux gives it
 * (mm_mremap.c lists them).
 */
int64_t mm_mremap(struct mm_struct *mm, uint64_t addr, uint64_t old_len, uint64_t new_len,
		  int flags, uint64_t new_addr);
int mm_mprotect(struct mm_struct *mm, uint64_t addr, uint64_t length, int prot);
/* brk(2): the new break, or the current one when the request fails (as the
 * syscall); a negative errno only when the mm's lock was refused. */
int64_t mm_brk(struct mm_struct *mm, uint64_t brk);
/*
 * madvise(2) of anonymous memory: 0, or a negative errno as Linux gives it
 * (mm_mmap.c, above madvise_kind(), says what each advice does here).
 */
int mm_madvise(struct mm_struct *mm, uint64_t addr, uint64_t length, int advice);
/* fork's address-space copy: the child, or NULL with *@err set.  A VMA with
 * MADV_DONTFORK is not copied; one with MADV_WIPEONFORK is copied empty. */
struct mm_struct *mm_fork(struct mm_struct *mm, int *err);

/*
 * A fault at @addr: 0 (the page is present, writable if @write), SEGV_MAPERR
 * or SEGV_ACCERR, or -ENOMEM.  Takes the read lock.
 */
int mm_fault(struct mm_struct *mm, uint64_t addr, int write);
/*
 * copy_from_user / copy_to_user: copy @n bytes between @buf and guest memory
 * at @addr (@write: into the guest), faulting pages in, under one read-lock
 * acquisition.  0, or a SEGV_* code with *@fault_addr set (bytes before it
 * were copied), or -ENOMEM.  With @fault_addr NULL the address is kept for
 * the calling thread: mm_access_fault_addr().
 */
int mm_access(struct mm_struct *mm, uint64_t addr, void *buf, size_t n, int write,
	      uint64_t *fault_addr);
uint64_t mm_access_fault_addr(void);
/*
 * get_user_pages: fault in and pin @npages pages from @addr (page aligned),
 * storing them in @pages.  A pinned page survives munmap until mm_unpin_page().
 * 0, or a SEGV_* code with *@fault_addr set (nothing stays pinned), or -ENOMEM.
 */
int mm_get_user_pages(struct mm_struct *mm, uint64_t addr, size_t npages, int write,
		      struct page **pages, uint64_t *fault_addr);
void mm_unpin_page(struct page *page);
const uint8_t *mm_page_data(const struct page *page);

/* MMU notifiers: called with the mmap_lock held (either mode), around every
 * removal or write-protection of PTEs, and release() from exit_mmap. */
struct mmu_notifier_ops {
	void (*invalidate_range_start)(struct mm_struct *mm, uint64_t start, uint64_t end,
				       void *arg);
	void (*invalidate_range_end)(struct mm_struct *mm, uint64_t start, uint64_t end,
				     void *arg);
	void (*release)(struct mm_struct *mm, void *arg);
};
/* Takes the write lock, as the kernel does: an id > 0, or a negative errno. */
int mm_register_notifier(struct mm_struct *mm, const struct mmu_notifier_ops *ops, void *arg);
int mm_unregister_notifier(struct mm_struct *mm, int id);
/*
 * For bindings: static ops that forward to the functions set here (NULL
 * ones are skipped).  A binding registers these instead of its own, and
 * clears the relay when its interpreter goes away, so that an mm freed
 * later calls nothing that is gone.
 */
const struct mmu_notifier_ops *mm_relay_notifier_ops(void);
void mm_set_notifier_relay(const struct mmu_notifier_ops *to);

struct mm_vma_info {
	uint64_t start, end;
	uint32_t prot, flags;	/* PROT_*; VM_SHARED, VM_GROWSDOWN */
	uint64_t pgoff;
	uint32_t heap;		/* the brk area */
	uint32_t reserved;
	uint64_t seq;		/* mm_vma_seq() when read (mm_find_vma) */
};
/* Copy the VMAs into @out (at most @cap) under the read lock; *@count = how
 * many there are (call again with a bigger array if it exceeds @cap). */
int mm_maps(struct mm_struct *mm, struct mm_vma_info *out, size_t cap, size_t *count);

int mm_set_max_map_count(struct mm_struct *mm, uint32_t count);
/* The VMA count and the break; a negative errno when the lock was refused. */
int64_t mm_map_count(struct mm_struct *mm);
int64_t mm_get_brk(struct mm_struct *mm);
/* Page-table bytes and mapped pages, for accounting. */
size_t mm_pgtable_bytes(struct mm_struct *mm);
size_t mm_nr_pages(struct mm_struct *mm);
/*
 * What an mm operation tags its lock events with (the recorder's caller
 * field: mmap_lock_trace.h), so a trace shows which operation took the lock.
 */
#define MM_OP_MMAP 1
#define MM_OP_MUNMAP 2
#define MM_OP_MPROTECT 3
#define MM_OP_BRK 4
#define MM_OP_MADVISE 5
#define MM_OP_MREMAP 6
#define MM_OP_FORK 7
#define MM_OP_FAULT 8
#define MM_OP_ACCESS 9		/* read / write: copy_from_user, copy_to_user */
#define MM_OP_PIN 10		/* get_user_pages, pins, host ranges */
#define MM_OP_MAPS 11		/* maps, find_vma, the counts */
#define MM_OP_EXIT 12
#define MM_OP_NOTIFIER 13	/* registering or unregistering a notifier or a TLB */
#define MM_OP_READ_LOCKED 14	/* mm_read_lock / mm_read_unlock */
#define MM_OP_POPULATE 15
#define MM_OP_NR 16
/* cffi:end */

#endif /* MLN_MM_H */
