/* SPDX-License-Identifier: MIT */
/*
 * mm_fault.c - page faults, guest memory access and get_user_pages.
 *
 * All run under the mmap_lock in read mode, so faults on different pages
 * (even of one VMA) proceed in parallel; the page table's per-leaf lock makes
 * concurrent faults on one page install exactly one page.  Pages are
 * allocated and copied outside that lock, and the PTE re-checked after.
 *
 * With the per_vma design, faults and accesses first try the kernel's
 * lock_vma_under_rcu(): the VMA found without the mmap lock and only it
 * read-locked (vma_lock.h).  Whatever cannot be done under that lock alone
 * (a copy-on-write copy, which calls the MMU notifiers, who are promised the
 * mmap lock) returns MM_FAULT_RETRY and is redone under mmap_read_lock, as
 * the kernel retries a VM_FAULT_RETRY.
 *
 * Copy-on-write: a private page shared with a fork is mapped read-only; a
 * write fault copies it, unless this mm holds its only references (its PTE
 * and its pins), in which case the PTE is simply made writable again.
 */
#include <errno.h>
#include <string.h>

#include "host_backing.h"
#include "mm.h"
#include "mm_internal.h"
#include "mmap_lock.h"
#include "mmap_lock_stats.h"
#include "task.h"
#include "vma_lock.h"

static struct page *new_page_for(struct vm_area_struct *vma, uint64_t addr)
{
	if (vma->vm_shared)
		return anon_shared_page(vma->vm_shared,
					vma->vm_pgoff + ((addr - vma->vm_start) >> MLN_PAGE_SHIFT));
	return page_alloc(NULL);
}

/*
 * Whether the private page behind a PTE is this mm's alone: referenced only
 * by the PTE and by pins.  Pins are always the mapping mm's own (a pin of a
 * page shared with a fork copies it first: page_at(); fork gives the
 * child a copy of a pinned page), so they do not make the page shared.
 * Called with the leaf locked; pins are taken under it, and a concurrent
 * unpin can only make the page look shared for a moment (a needless copy).
 */
static bool page_exclusive(const struct page *p)
{
	return atomic_load_explicit(&p->refcount, memory_order_acquire) -
		       atomic_load_explicit(&p->pincount, memory_order_acquire) == 1;
}

/*
 * Replace the page behind @pte, shared with a fork, by a private copy
 * mapped with @flags.  Called with @leaf locked; returns with it unlocked.
 */
static int copy_page_locked(struct mm_struct *mm, struct pte_table *leaf, uint64_t addr,
			    pte_t pte, pte_t flags, uint32_t prot)
{
	struct page *old = pte_page(pte), *copy;
	uint64_t page_addr = addr & MLN_PAGE_MASK;

	if (leaf->slots && host_slot_of(leaf, addr)->host)
		return backing_cow_locked(mm, leaf, addr, pte, flags, prot);	/* a window's page */
	page_get(old);			/* keeps it while we copy unlocked */
	pte_table_unlock(leaf);
	copy = page_alloc(old);
	if (!copy) {
		page_put(old);
		return -ENOMEM;
	}
	/* The old translation of this page is about to go. */
	mm_notify_start(mm, page_addr, page_addr + MLN_PAGE_SIZE, MM_INVAL_COW, prot);
	pte_table_lock(leaf);
	if (atomic_load_explicit(pte_slot(leaf, addr), memory_order_relaxed) == pte) {
		pte_replace_locked(leaf, addr, (pte_t)copy | flags);
		page_put(old);		/* the PTE's reference */
		copy = NULL;
	}
	pte_table_unlock(leaf);
	mm_notify_end(mm, page_addr, page_addr + MLN_PAGE_SIZE);
	if (copy)
		page_put(copy);		/* someone else resolved it first */
	page_put(old);
	return 0;
}

/* A write to a present read-only PTE of a writable VMA.  Unlocks @leaf. */
static int wp_fault(struct mm_struct *mm, struct vm_area_struct *vma, struct pte_table *leaf,
		    uint64_t addr, pte_t pte, bool vma_locked)
{
	/* Shared mappings' pages are never copied; a page of ours alone is reused. */
	if (vma->vm_shared || page_exclusive(pte_page(pte))) {
		pte_replace_locked(leaf, addr, pte | PTE_WRITE);
		pte_table_unlock(leaf);
		return 0;
	}
	if (vma_locked) {
		pte_table_unlock(leaf);
		return MM_FAULT_RETRY;	/* the copy calls notifiers: needs the mmap lock */
	}
	return copy_page_locked(mm, leaf, addr, pte, PTE_WRITE, vma->vm_prot);
}

int mm_handle_fault(struct mm_struct *mm, struct vm_area_struct *vma, uint64_t addr,
		    int access, bool vma_locked)
{
	bool write = access == MM_ACCESS_WRITE;
	bool backed = vma_host_backed(mm, vma);
	pte_t flags = vma->vm_prot & PROT_WRITE ? PTE_WRITE : 0;
	struct pte_table *leaf;
	struct page *page;

	if (!vma_permits(vma, access))
		return SEGV_ACCERR;
	leaf = pgtable_leaf(&mm->pgt, addr, 1);
	if (!leaf)
		return -ENOMEM;
	if (pte_present_for(leaf, addr, write))
		return 0;	/* mapped already: no lock, no shared write */
	/*
	 * Seen absent (most likely): make the page before taking the lock, so
	 * that a first touch takes the lock once.  A racing fault may install
	 * one meanwhile: then ours goes back.
	 */
	page = backed || atomic_load_explicit(pte_slot(leaf, addr), memory_order_relaxed)
		       ? NULL : new_page_for(vma, addr);
	for (;;) {
		pte_t pte;

		pte_table_lock(leaf);
		pte = atomic_load_explicit(pte_slot(leaf, addr), memory_order_relaxed);
		if (pte) {
			int rc = 0;

			if (!write || (pte & PTE_WRITE))
				pte_table_unlock(leaf);	/* present already (a racing fault) */
			else
				rc = wp_fault(mm, vma, leaf, addr, pte, vma_locked);	/* unlocks */
			if (page)
				page_put(page);		/* ours was not needed */
			return rc;
		}
		if (backed) {
			/* The window's frame is the page: no allocation of data, no zeroing. */
			int rc = backing_install_locked(mm, leaf, addr, flags);

			pte_table_unlock(leaf);
			if (rc <= 0)
				return rc;
			/* No window here yet; out of frames, this page is a slab page. */
			if (backing_ensure(mm, vma, addr))
				backed = false;
			continue;
		}
		if (page) {
			pte_install_locked(&mm->pgt, leaf, addr, (pte_t)page | flags);
			pte_table_unlock(leaf);
			return 0;
		}
		/* Gone again (zapped meanwhile), or never made: make one unlocked. */
		pte_table_unlock(leaf);
		page = new_page_for(vma, addr);
		if (!page)
			return -ENOMEM;
	}
}

/*
 * The kernel's lock_vma_under_rcu() (declared in mm_internal.h).  A VMA
 * found may have been freed and reused since (VMA memory is type-stable):
 * once read-locked, it must still be this mm's and still cover @addr.
 */
struct vm_area_struct *mm_lock_vma_under_rcu(struct mm_struct *mm, uint64_t addr)
{
	struct vm_area_struct *v = vma_lookup_lockless(&mm->mm_vmas, addr);

	if (!v) {
		mmap_vma_lock_event(mm, MMAP_VMA_LOCK_MISS);
		return NULL;
	}
	if (!vma_start_read(mm, &v->vm_lock)) {
		mmap_vma_lock_event(mm, MMAP_VMA_LOCK_ABORT);
		return NULL;
	}
	if (v->vm_mm != mm || addr < v->vm_start || addr >= v->vm_end) {
		vma_end_read(&v->vm_lock);
		mmap_vma_lock_event(mm, MMAP_VMA_LOCK_ABORT);
		return NULL;
	}
	return v;
}

/* End a VMA read lock taken by mm_lock_vma_under_rcu(), counting how it went. */
static void unlock_vma(struct mm_struct *mm, struct vm_area_struct *v, bool retry)
{
	vma_end_read(&v->vm_lock);
	mmap_vma_lock_event(mm, retry ? MMAP_VMA_LOCK_RETRY : MMAP_VMA_LOCK_SUCCESS);
}

#define GUEST_FLAGS (MM_GUEST_KILLABLE | MM_GUEST_LOCKED)

/*
 * The checks every guest-memory call makes first: mm_refused() (-EDEADLK
 * from the mm's own notifiers or guest, -ESTALE), known @access and @flags
 * (-EINVAL), a killed task with MM_GUEST_KILLABLE (-EINTR), and with
 * MM_GUEST_LOCKED a read lock someone holds (-EPERM otherwise).
 */
static int guest_call_ok(struct mm_struct *mm, int access, unsigned int flags)
{
	int rc = mm_refused(mm);

	if (rc)
		return rc;
	if ((unsigned int)access > MM_ACCESS_EXEC || (flags & ~GUEST_FLAGS))
		return -EINVAL;
	if ((flags & MM_GUEST_KILLABLE) && task_is_killed(task_current()))
		return -EINTR;
	if ((flags & MM_GUEST_LOCKED) && mmap_lock_check_held(mm, 0) != MMAP_CHECK_OK)
		return -EPERM;
	return 0;
}

int mm_guest_fault(struct mm_struct *mm, uint64_t addr, int access, unsigned int flags)
{
	MM_OP(MM_OP_FAULT);
	struct vm_area_struct *vma;
	int rc = guest_call_ok(mm, access, flags);

	if (rc)
		return rc;
	if (flags & MM_GUEST_LOCKED) {
		vma = mm->mm_closed ? NULL : vma_lookup(&mm->mm_vmas, addr);
		return vma ? mm_handle_fault(mm, vma, addr, access, false) : SEGV_MAPERR;
	}
	if (mmap_lock_has_vma_locks(mm) && (vma = mm_lock_vma_under_rcu(mm, addr))) {
		rc = mm_handle_fault(mm, vma, addr, access, true);
		unlock_vma(mm, vma, rc == MM_FAULT_RETRY);
		if (rc != MM_FAULT_RETRY)
			return rc;
	}
	rc = mm_lock(mm, false);
	if (rc)
		return rc;
	vma = mm->mm_closed ? NULL : vma_lookup(&mm->mm_vmas, addr);
	if (!vma && !mm->mm_closed) {
		rc = mm_grow_stack_relock(mm, addr);
		if (rc < 0)
			return rc;	/* the write lock was refused: nothing held */
		vma = rc ? NULL : vma_lookup(&mm->mm_vmas, addr);
	}
	rc = vma ? mm_handle_fault(mm, vma, addr, access, false) : SEGV_MAPERR;
	mmap_read_unlock(mm);
	return rc;
}

int mm_fault(struct mm_struct *mm, uint64_t addr, int write)
{
	return mm_guest_fault(mm, addr, write, 0);
}

/*
 * What an access or a pin holds while it walks its pages: the mmap read
 * lock, or (per_vma) a read lock on one VMA, given up for the next VMA's;
 * or, with MM_GUEST_LOCKED, the caller's read lock, which it keeps.
 */
struct fault_lock {
	struct vm_area_struct *vma;	/* the VMA last used (read-locked if vma_locked) */
	bool vma_locked;
	bool mmap_locked;
	bool caller_locked;		/* the mmap read lock is the caller's */
};

static void fault_lock_init(struct fault_lock *fl, unsigned int flags)
{
	fl->vma = NULL;
	fl->vma_locked = false;
	fl->caller_locked = fl->mmap_locked = flags & MM_GUEST_LOCKED;
}

/* Take the mmap read lock: 0, or its refusal. */
static int fault_lock_mmap(struct mm_struct *mm, struct fault_lock *fl)
{
	int rc = mm_lock(mm, false);

	fl->mmap_locked = rc == 0;
	return rc;
}

/* Make @fl cover @addr: 0, or the mmap lock's refusal. */
static int fault_lock_cover(struct mm_struct *mm, struct fault_lock *fl, uint64_t addr)
{
	if (fl->mmap_locked)
		return 0;
	if (fl->vma_locked) {
		if (addr >= fl->vma->vm_start && addr < fl->vma->vm_end)
			return 0;
		unlock_vma(mm, fl->vma, false);
		fl->vma_locked = false;
		fl->vma = NULL;
	}
	if (mmap_lock_has_vma_locks(mm) && (fl->vma = mm_lock_vma_under_rcu(mm, addr))) {
		fl->vma_locked = true;
		return 0;
	}
	fl->vma = NULL;
	return fault_lock_mmap(mm, fl);
}

/* Give the VMA lock up for the mmap read lock (a MM_FAULT_RETRY): 0 or refused. */
static int fault_lock_upgrade(struct mm_struct *mm, struct fault_lock *fl)
{
	unlock_vma(mm, fl->vma, true);
	fl->vma_locked = false;
	fl->vma = NULL;
	return fault_lock_mmap(mm, fl);
}

/*
 * After a SEGV_MAPERR under our own mmap read lock: grow a stack mapping
 * just above @addr (mm_grow_stack_relock).  0: mapped now, try again.
 */
static int fault_lock_grow(struct mm_struct *mm, struct fault_lock *fl, uint64_t addr)
{
	int rc;

	if (!fl->mmap_locked || fl->caller_locked || mm->mm_closed)
		return SEGV_MAPERR;
	fl->vma = NULL;		/* the lock is dropped meanwhile: forget the cache */
	rc = mm_grow_stack_relock(mm, addr);
	if (rc < 0)
		fl->mmap_locked = false;
	return rc;
}

static void fault_lock_release(struct mm_struct *mm, struct fault_lock *fl)
{
	if (fl->vma_locked)
		unlock_vma(mm, fl->vma, false);
	if (fl->mmap_locked && !fl->caller_locked)
		mmap_read_unlock(mm);
	fl->vma_locked = fl->mmap_locked = false;
}

/*
 * The page at @addr with a reference for the caller, faulted in for
 * @access as needed, and its PTE in *@pte_out: 0, a SEGV_* code, -ENOMEM,
 * or MM_FAULT_RETRY (only with @fl holding a VMA lock alone).  @fl->vma
 * caches the last VMA; with @fl->vma_locked it is the locked one, which
 * covers @addr.
 *
 * With @pin (get_user_pages), the reference is a pin, taken under the leaf
 * lock, and a private page still shared copy-on-write with a fork is first
 * copied into this mm (Linux 5.19+'s unsharing for FOLL_PIN), so the pin
 * follows this mm's writes and never sees the fork's.
 */
static int page_at(struct mm_struct *mm, struct fault_lock *fl, uint64_t addr, int access,
		   bool pin, struct page **out, pte_t *pte_out)
{
	struct vm_area_struct *v = fl->vma;
	bool write = access == MM_ACCESS_WRITE;

	if (!v || addr < v->vm_start || addr >= v->vm_end) {
		v = fl->vma = mm->mm_closed ? NULL : vma_lookup(&mm->mm_vmas, addr);
		if (!v)
			return SEGV_MAPERR;
	}
	if (!vma_permits(v, access))
		return SEGV_ACCERR;
	for (;;) {
		struct pte_table *leaf = pgtable_leaf(&mm->pgt, addr, 0);
		int rc;

		if (leaf) {
			pte_t pte;

			pte_table_lock(leaf);
			pte = atomic_load_explicit(pte_slot(leaf, addr), memory_order_relaxed);
			if (pte && (!write || (pte & PTE_WRITE))) {
				struct page *page = pte_page(pte);

				if (pin && !v->vm_shared && !(pte & PTE_WRITE) &&
				    !page_exclusive(page)) {
					if (fl->vma_locked) {
						pte_table_unlock(leaf);
						return MM_FAULT_RETRY;
					}
					rc = copy_page_locked(mm, leaf, addr, pte,
							      v->vm_prot & PROT_WRITE ? PTE_WRITE : 0,
							      v->vm_prot);
					if (rc)
						return rc;
					continue;	/* pin the copy */
				}
				page_get(page);
				if (pin)
					atomic_fetch_add_explicit(&page->pincount, 1,
								  memory_order_relaxed);
				pte_table_unlock(leaf);
				*out = page;
				*pte_out = pte;
				return 0;
			}
			pte_table_unlock(leaf);
		}
		rc = mm_handle_fault(mm, v, addr, access, fl->vma_locked);
		if (rc)
			return rc;
	}
}

/*
 * page_at() under @fl, which it first makes cover @addr, retrying under
 * the mmap lock where the VMA lock is not enough and, with @grow, growing
 * a stack mapping as a user fault does (not for pins: get_user_pages does
 * not grow stacks).  0, a SEGV_* code, or -errno (then @fl may hold less).
 */
static int page_at_locked(struct mm_struct *mm, struct fault_lock *fl, uint64_t addr,
			  int access, bool pin, bool grow, struct page **out, pte_t *pte_out)
{
	for (;;) {
		int rc = fault_lock_cover(mm, fl, addr);

		if (rc)
			return rc;	/* the lock was refused */
		rc = page_at(mm, fl, addr, access, pin, out, pte_out);
		if (rc == MM_FAULT_RETRY)
			rc = fault_lock_upgrade(mm, fl);
		else if (rc == SEGV_MAPERR && grow)
			rc = fault_lock_grow(mm, fl, addr);
		else
			return rc;
		if (rc)
			return rc;
	}
}

/*
 * One page of a walk: a killed task stops it first (MM_GUEST_KILLABLE,
 * checked before each page, as get_user_pages checks for a fatal signal);
 * then page_at_locked(), growing a stack only for an access, never for a
 * pin.  A fault's address goes to *@fault_addr.
 */
static int walk_page(struct mm_struct *mm, struct fault_lock *fl, unsigned int flags,
		     uint64_t addr, int access, bool pin, struct page **page, pte_t *pte,
		     uint64_t *fault_addr)
{
	int rc;

	if ((flags & MM_GUEST_KILLABLE) && task_is_killed(task_current()))
		return -EINTR;
	rc = page_at_locked(mm, fl, addr, access, pin, !pin, page, pte);
	if (rc > 0)
		*fault_addr = addr;
	return rc;
}

/*
 * Copy @n bytes between guest memory and a caller's buffer as a CPU would:
 * each naturally aligned 8-byte word of the guest's page is read or written
 * whole (single-copy atomic, relaxed), so another thread reading a word
 * that this call writes sees its old or its new value, never a mix, as a
 * guest's own aligned store and load guarantee.  memcpy() promises no such
 * thing (glibc's arm64 memcpy under qemu tore words bytewise).  The bytes
 * outside whole words go one at a time; the buffer's alignment is free.
 */
static void guest_copy(uint8_t *guest, uint8_t *buf, size_t n, int write)
{
	while (n && ((uintptr_t)guest & 7)) {
		if (write)
			__atomic_store_n(guest, *buf, __ATOMIC_RELAXED);
		else
			*buf = __atomic_load_n(guest, __ATOMIC_RELAXED);
		guest++, buf++, n--;
	}
	for (; n >= 8; guest += 8, buf += 8, n -= 8) {
		uint64_t w;

		if (write) {
			memcpy(&w, buf, 8);
			__atomic_store_n((uint64_t *)(void *)guest, w, __ATOMIC_RELAXED);
		} else {
			w = __atomic_load_n((uint64_t *)(void *)guest, __ATOMIC_RELAXED);
			memcpy(buf, &w, 8);
		}
	}
	for (; n; guest++, buf++, n--) {
		if (write)
			__atomic_store_n(guest, *buf, __ATOMIC_RELAXED);
		else
			*buf = __atomic_load_n(guest, __ATOMIC_RELAXED);
	}
}

/* Where the calling thread's last mm_access() faulted. */
static _Thread_local uint64_t last_fault_addr;

uint64_t mm_access_fault_addr(void)
{
	return last_fault_addr;
}

int mm_guest_access(struct mm_struct *mm, uint64_t addr, void *buf, size_t n, int write,
		    unsigned int flags, uint64_t *fault_addr)
{
	MM_OP(MM_OP_ACCESS);
	int access = write ? MM_ACCESS_WRITE : MM_ACCESS_READ;
	struct fault_lock fl;
	uint8_t *p = buf;
	int rc = guest_call_ok(mm, access, flags);

	if (rc)
		return rc;
	if (!fault_addr)
		fault_addr = &last_fault_addr;
	if (addr + n < addr) {
		*fault_addr = addr;
		return SEGV_MAPERR;
	}
	fault_lock_init(&fl, flags);
	while (n) {
		size_t off = addr & (MLN_PAGE_SIZE - 1);
		size_t chunk = MLN_PAGE_SIZE - off < n ? MLN_PAGE_SIZE - off : n;
		struct page *page;
		pte_t pte;

		rc = walk_page(mm, &fl, flags, addr, access, false, &page, &pte, fault_addr);
		if (rc)
			break;		/* a fault, or the lock refused: nothing more copied */
		guest_copy(page->data + off, p, chunk, write);
		page_put(page);
		addr += chunk;
		p += chunk;
		n -= chunk;
	}
	fault_lock_release(mm, &fl);
	return rc;
}

int mm_access(struct mm_struct *mm, uint64_t addr, void *buf, size_t n, int write,
	      uint64_t *fault_addr)
{
	return mm_guest_access(mm, addr, buf, n, write, 0, fault_addr);
}

/* The guest's protection through a page mapped by @pte in @vma. */
static uint32_t pte_prot(const struct vm_area_struct *vma, pte_t pte)
{
	return pte & PTE_WRITE ? vma->vm_prot : vma->vm_prot & ~(uint32_t)PROT_WRITE;
}

int mm_pin_pages(struct mm_struct *mm, uint64_t addr, size_t npages, int access,
		 unsigned int flags, struct mm_pin *out, uint64_t *fault_addr)
{
	MM_OP(MM_OP_PIN);
	struct fault_lock fl;
	size_t i;
	int rc = guest_call_ok(mm, access, flags);

	if (rc)
		return rc;
	if (addr & (MLN_PAGE_SIZE - 1))
		return -EINVAL;
	if (npages && (addr >= MM_TASK_SIZE || npages > (MM_TASK_SIZE - addr) >> MLN_PAGE_SHIFT))
		return -EFAULT;		/* past the top of user space, as pin_user_pages() */
	/* pin_user_pages_fast(): under per_vma, the VMA's lock (the kernel's GUP-fast walks none). */
	fault_lock_init(&fl, flags);
	for (i = 0; i < npages; i++) {
		uint64_t a = addr + i * MLN_PAGE_SIZE;
		struct page *page;
		pte_t pte;

		rc = walk_page(mm, &fl, flags, a, access, true, &page, &pte, fault_addr);
		if (rc)
			break;
		out[i] = (struct mm_pin){ .page = page, .host = (uint64_t)(uintptr_t)page->data,
					  .addr = a, .prot = pte_prot(fl.vma, pte) };
	}
	fault_lock_release(mm, &fl);
	if (rc) {
		while (i--) {
			mm_unpin_page(out[i].page);
			out[i].page = NULL;
		}
	}
	return rc;
}

size_t mm_unpin_pins(struct mm_pin *pins, size_t n)
{
	size_t done = 0;

	for (size_t i = 0; i < n; i++) {
		if (pins[i].page) {
			mm_unpin_page(pins[i].page);
			pins[i].page = NULL;
			done++;
		}
	}
	return done;
}

int mm_host_range(struct mm_struct *mm, uint64_t addr, int access, unsigned int flags,
		  struct mm_host_range *out)
{
	MM_OP(MM_OP_PIN);
	struct fault_lock fl;
	struct page *page;
	pte_t pte;
	int rc = guest_call_ok(mm, access, flags);

	if (rc)
		return rc;
	fault_lock_init(&fl, flags);
	rc = page_at_locked(mm, &fl, addr, access, false, true, &page, &pte);
	if (rc == 0) {
		/*
		 * The page; with host backing, the run of its window around it
		 * (docs/mm.md).  The reference goes now; the memory stays until
		 * an invalidation covering it has started (docs/embedding.md).
		 */
		*out = (struct mm_host_range){ .host = (uint64_t)(uintptr_t)page->data,
					       .start = addr & MLN_PAGE_MASK,
					       .end = (addr & MLN_PAGE_MASK) + MLN_PAGE_SIZE,
					       .prot = pte_prot(fl.vma, pte) };
		if (vma_host_backed(mm, fl.vma))
			backing_host_range(mm, fl.vma, addr, out);
		page_put(page);
	}
	fault_lock_release(mm, &fl);
	return rc;
}

int mm_get_user_pages(struct mm_struct *mm, uint64_t addr, size_t npages, int write,
		      struct page **pages, uint64_t *fault_addr)
{
	MM_OP(MM_OP_PIN);
	struct fault_lock fl;
	size_t i;
	int rc = 0;

	rc = mm_refused(mm);
	if (rc)
		return rc;
	if (addr & (MLN_PAGE_SIZE - 1))
		return -EINVAL;
	/* As the kernel's get_user_pages(): under the mmap read lock, whatever the design. */
	fault_lock_init(&fl, 0);
	rc = fault_lock_mmap(mm, &fl);
	if (rc)
		return rc;
	for (i = 0; i < npages; i++) {
		uint64_t a = addr + i * MLN_PAGE_SIZE;
		pte_t pte;

		rc = page_at(mm, &fl, a, write ? MM_ACCESS_WRITE : MM_ACCESS_READ, true, &pages[i],
			     &pte);
		if (rc) {
			*fault_addr = a;
			break;
		}
	}
	fault_lock_release(mm, &fl);
	if (rc)
		while (i--)
			mm_unpin_page(pages[i]);
	return rc;
}

void mm_unpin_page(struct page *page)
{
	atomic_fetch_sub_explicit(&page->pincount, 1, memory_order_relaxed);
	page_put(page);
}

const uint8_t *mm_page_data(const struct page *page)
{
	return page->data;
}

int mm_populate_locked(struct mm_struct *mm, uint64_t start, uint64_t end,
		       enum mm_populate_mode mode)
{
	uint64_t addr = start;
	bool hole = false;

	while (addr < end) {
		struct vm_area_struct *v = vma_find(&mm->mm_vmas, addr);
		uint64_t stop;
		int access;

		if (!v || v->vm_start >= end) {
			hole = true;
			break;
		}
		if (addr < v->vm_start) {
			hole = true;
			addr = v->vm_start;
		}
		stop = v->vm_end < end ? v->vm_end : end;
		if (mode == MM_POPULATE_MAP) {
			/*
			 * populate_vma_page_range(): a private writable mapping is
			 * written (it gets its own pages), others read; PROT_NONE is
			 * skipped.
			 */
			access = (v->vm_prot & PROT_WRITE) && !(v->vm_flags & VM_SHARED)
					 ? MM_ACCESS_WRITE : MM_ACCESS_READ;
			if (v->vm_prot == PROT_NONE)
				addr = stop;
		} else {
			/*
			 * Linux 5.14's faultin_vma_page_range(): gup's
			 * check_vma_flags() refuses a read of a VMA without
			 * PROT_READ and a write of one without PROT_WRITE (no
			 * FOLL_FORCE), and madvise_populate() makes that EINVAL.
			 */
			access = mode == MM_POPULATE_WRITE ? MM_ACCESS_WRITE : MM_ACCESS_READ;
			if (!(v->vm_prot & (mode == MM_POPULATE_WRITE ? PROT_WRITE : PROT_READ)))
				return -EINVAL;
		}
		for (; addr < stop; addr += MLN_PAGE_SIZE) {
			int rc;

			/* gup's fatal_signal_pending(): a killed task stops here, EINTR. */
			if (task_is_killed(task_current()))
				return -EINTR;
			rc = mm_handle_fault(mm, v, addr, access, false);
			if (rc < 0)
				return rc;	/* out of memory (MAP_POPULATE: faults later) */
		}
	}
	return hole ? -ENOMEM : 0;
}

void mm_populate(struct mm_struct *mm, uint64_t start, uint64_t len)
{
	MM_OP(MM_OP_POPULATE);

	/* A refusal or an interrupted wait leaves the pages to later faults. */
	if (mm_lock(mm, false))
		return;
	if (!mm->mm_closed)
		(void)mm_populate_locked(mm, start, start + len, MM_POPULATE_MAP);
	mmap_read_unlock(mm);
}

uint64_t mm_vma_seq(struct mm_struct *mm)
{
	/* Acquire: pairs with mm_layout_changed()'s release. */
	return atomic_load_explicit(&mm->vma_seq, memory_order_acquire);
}

int mm_read_lock(struct mm_struct *mm)
{
	MM_OP(MM_OP_READ_LOCKED);
	int rc = mm_refused(mm);

	return rc ? rc : mm_lock(mm, false);
}

int mm_read_unlock(struct mm_struct *mm)
{
	MM_OP(MM_OP_READ_LOCKED);
	int rc = mm_refused(mm);	/* EDEADLK: the lock an operation in progress holds */

	return rc ? rc : mmap_read_unlock(mm);
}
