/* SPDX-License-Identifier: MIT */
/*
 * mm.h - allocating and freeing an emulated mm_struct.
 */
#ifndef MLN_MM_H
#define MLN_MM_H

#include "mm_types.h"

/* cffi:begin */
/* A new mm, its lock initialised with mmap_lock_init(@lock_flags); NULL on
 * ENOMEM or bad flags. */
struct mm_struct *mm_alloc(unsigned int lock_flags);
/* Free @mm: 0, or -EBUSY (and nothing freed) while its lock is held or awaited. */
int mm_free(struct mm_struct *mm);
/* cffi:end */

#endif /* MLN_MM_H */
