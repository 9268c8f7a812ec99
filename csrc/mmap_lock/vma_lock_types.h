/* SPDX-License-Identifier: MIT */
/*
 * vma_lock_types.h - the per-VMA lock word alone, for struct
 * vm_area_struct (vma.h) to embed; the functions and the word's layout are
 * in vma_lock.h.
 */
#ifndef MLN_VMA_LOCK_TYPES_H
#define MLN_VMA_LOCK_TYPES_H

#include <stdatomic.h>
#include <stdint.h>

struct vma_lock {
	_Atomic uint64_t state;		/* DETACHED bit and write-section stamp */
};

#endif /* MLN_VMA_LOCK_TYPES_H */
