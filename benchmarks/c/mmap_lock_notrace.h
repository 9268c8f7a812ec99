/* SPDX-License-Identifier: MIT */
/*
 * mmap_lock_notrace.h - a second copy of mmap_lock.c compiled with
 * MMAP_LOCK_NO_TRACE (the hooked path compiled out), its external names
 * prefixed with notrace_, so that one benchmark binary can alternate the
 * two builds round by round.  Include it in exactly one .c file.
 */
#ifndef MLN_MMAP_LOCK_NOTRACE_H
#define MLN_MMAP_LOCK_NOTRACE_H

#define MMAP_LOCK_NO_TRACE 1
#define mmap_lock_speculate_try_begin notrace_mmap_lock_speculate_try_begin
#define mmap_lock_speculate_retry notrace_mmap_lock_speculate_retry
#define mmap_write_lock notrace_mmap_write_lock
#define mmap_write_lock_nested notrace_mmap_write_lock_nested
#define mmap_write_lock_killable notrace_mmap_write_lock_killable
#define mmap_write_trylock notrace_mmap_write_trylock
#define mmap_write_unlock notrace_mmap_write_unlock
#define mmap_write_downgrade notrace_mmap_write_downgrade
#define mmap_read_lock notrace_mmap_read_lock
#define mmap_read_lock_killable notrace_mmap_read_lock_killable
#define mmap_read_trylock notrace_mmap_read_trylock
#define mmap_read_unlock notrace_mmap_read_unlock
#define mmap_read_trylock_non_owner notrace_mmap_read_trylock_non_owner
#define mmap_read_unlock_non_owner notrace_mmap_read_unlock_non_owner
#define mmap_lock_begin notrace_mmap_lock_begin
#define mmap_read_lock_begin notrace_mmap_read_lock_begin
#define mmap_write_lock_begin notrace_mmap_write_lock_begin
#define mmap_lock_wait notrace_mmap_lock_wait
#define mmap_lock_cancel notrace_mmap_lock_cancel
#define mmap_lock_check_held notrace_mmap_lock_check_held
#define mmap_assert_locked notrace_mmap_assert_locked
#define mmap_assert_write_locked notrace_mmap_assert_write_locked
#define mmap_lock_is_contended notrace_mmap_lock_is_contended
#define mmap_lock_init notrace_mmap_lock_init
#define mmap_init_lock notrace_mmap_init_lock
#define mmap_lock_destroy notrace_mmap_lock_destroy
#define mmap_lock_set_class notrace_mmap_lock_set_class
#define mmap_lock_is_debug notrace_mmap_lock_is_debug
#define mmap_lock_init_backend notrace_mmap_lock_init_backend
#define mmap_lock_backend_id notrace_mmap_lock_backend_id
#define mmap_lock_holders notrace_mmap_lock_holders
#define mmap_lock_is_busy notrace_mmap_lock_is_busy
#define mmap_lock_fast_readers notrace_mmap_lock_fast_readers

#include "mmap_lock.c"

#undef MMAP_LOCK_NO_TRACE
#undef mmap_lock_speculate_try_begin
#undef mmap_lock_speculate_retry
#undef mmap_write_lock
#undef mmap_write_lock_nested
#undef mmap_write_lock_killable
#undef mmap_write_trylock
#undef mmap_write_unlock
#undef mmap_write_downgrade
#undef mmap_read_lock
#undef mmap_read_lock_killable
#undef mmap_read_trylock
#undef mmap_read_unlock
#undef mmap_read_trylock_non_owner
#undef mmap_read_unlock_non_owner
#undef mmap_lock_begin
#undef mmap_read_lock_begin
#undef mmap_write_lock_begin
#undef mmap_lock_wait
#undef mmap_lock_cancel
#undef mmap_lock_check_held
#undef mmap_assert_locked
#undef mmap_assert_write_locked
#undef mmap_lock_is_contended
#undef mmap_lock_init
#undef mmap_init_lock
#undef mmap_lock_destroy
#undef mmap_lock_set_class
#undef mmap_lock_is_debug
#undef mmap_lock_init_backend
#undef mmap_lock_backend_id
#undef mmap_lock_holders
#undef mmap_lock_is_busy
#undef mmap_lock_fast_readers

int notrace_mmap_read_lock(struct mm_struct *mm);
int notrace_mmap_read_unlock(struct mm_struct *mm);
int notrace_mmap_write_lock(struct mm_struct *mm);
int notrace_mmap_write_unlock(struct mm_struct *mm);

#endif /* MLN_MMAP_LOCK_NOTRACE_H */
