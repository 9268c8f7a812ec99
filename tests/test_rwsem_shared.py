"""Process-shared semaphores: shared=True across fork, and one placed in a
SharedMemory buffer and attached from a spawned process."""
from __future__ import annotations

import gc
import mmap
import multiprocessing as mp
import os
import signal
import struct
import time
from multiprocessing import shared_memory

import pytest

import mmap_lock_native as mln
from conftest import assert_free, join_processes, reap_child, wait_child, wait_queued

CHILD_TIMEOUT = 60.0


def _join_all(procs, timeout=CHILD_TIMEOUT):
    return join_processes(procs, timeout)


# -- shared=True, across fork --------------------------------------------------------

PAIR = struct.Struct("qq")


def _fork_worker(sem, area, iterations, wid):
    """Under the write lock: a non-atomic read-modify-write of two counters,
    with a yield in between; under the read lock: the two must agree."""
    for i in range(iterations):
        if i % 4 == 3:
            with sem.read():
                a, b = PAIR.unpack_from(area, 0)
                if a != b:
                    os._exit(3)  # a reader saw a writer's half-done update
        else:
            sem.down_write()
            a, b = PAIR.unpack_from(area, 0)
            PAIR.pack_into(area, 0, a + 1, b)
            if i % 8 == 0:
                os.sched_yield()
            PAIR.pack_into(area, 0, a + 1, b + 1)
            sem.up_write()


def test_fork_workers_exclude_each_other():
    ctx = mp.get_context("fork")
    sem = mln.RWSemaphore(shared=True, name="forked")
    assert sem.shared
    area = mmap.mmap(-1, mmap.PAGESIZE)  # MAP_SHARED: the children's writes come back
    nprocs, iterations = 4, 4000
    procs = [ctx.Process(target=_fork_worker, args=(sem, area, iterations, i), name=f"child{i}")
             for i in range(nprocs)]
    for p in procs:
        p.start()
    assert _join_all(procs) == [0] * nprocs
    writes = sum(1 for i in range(iterations) if i % 4 != 3)
    assert PAIR.unpack_from(area, 0) == (nprocs * writes, nprocs * writes)
    assert_free(sem)


def test_forked_child_waits_for_parent_and_is_woken():
    """The parent holds the write lock; a forked child blocks in down_write
    (the parent sees it queued), and is woken across processes by up_write."""
    sem = mln.RWSemaphore(shared=True, name="cross")
    area = mmap.mmap(-1, mmap.PAGESIZE)
    sem.down_write()
    parent_task = mln.current_task()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            if sem.down_write_trylock() or sem.down_read_trylock():
                code = 2
            elif sem.owner != parent_task:
                code = 4
            elif sem.acquire_read(timeout=0.05):
                code = 5
            else:
                sem.down_write()
                area[0] = 1
                area[1] = int(sem.owner == mln.current_task() != parent_task)
                sem.up_write()
                code = 0
        finally:
            os._exit(code)
    try:
        wait_queued(sem, 0, 1, timeout=CHILD_TIMEOUT)
        assert sem.is_contended()
        assert area[0] == 0
        sem.up_write()
        status = wait_child(pid, CHILD_TIMEOUT)
    finally:
        reap_child(pid)
    assert os.waitstatus_to_exitcode(status) == 0
    assert area[0] == 1 and area[1] == 1
    assert_free(sem)


def test_parent_cannot_release_childs_write_hold():
    """Ownership is per task across processes too: the parent is not the
    owner of a write hold taken by its child."""
    sem = mln.RWSemaphore(shared=True, name="owned")
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            sem.down_write()
            os.write(w, b"x")
            os.read(go_r, 1)
            sem.up_write()
            code = 0
        finally:
            os._exit(code)
    try:
        os.close(w)
        assert _read_with_timeout(r, CHILD_TIMEOUT) == b"x"
        assert sem.is_write_locked()
        assert sem.owner == pid  # the child's main thread id is its pid
        with pytest.raises(mln.LockError, match="up_write"):
            sem.up_write()
        assert sem.down_read_trylock() is False
        os.write(go_w, b"g")
        status = wait_child(pid, CHILD_TIMEOUT)
    finally:
        reap_child(pid)
        for fd in (r, go_r, go_w):
            os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert_free(sem)


def _read_with_timeout(fd, timeout):
    import select
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        pytest.fail(f"no word from the child within {timeout} s")
    return os.read(fd, 1)


# -- a caller's SharedMemory buffer, attached from a spawned process ----------------------

OFFSET = 64          # where the semaphore lives in the buffer (aligned)
COUNTER_AT = 0       # a counter, outside the semaphore's bytes
ROUNDS = 2000


def _spawned_child(shm_name, offset, rounds, queue):
    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        sem = mln.RWSemaphore(buffer=shm.buf, offset=offset, attach=True, name="attached")
        report = {
            "write_locked": sem.is_write_locked(),
            "write_trylock": sem.down_write_trylock(),
            "read_trylock": sem.down_read_trylock(),
            "timed_write": sem.acquire_write(timeout=0.05),
        }
        queue.put(report)
        sem.down_write()  # blocks until the parent releases
        report_owner = sem.owner == mln.current_task()
        sem.up_write()
        for _ in range(rounds):
            with sem.write():
                (v,) = struct.unpack_from("q", shm.buf, COUNTER_AT)
                struct.pack_into("q", shm.buf, COUNTER_AT, v + 1)
        queue.put({"owner_was_me": report_owner})
        del sem
    finally:
        gc.collect()  # see test_dropping_the_semaphore_releases_the_buffer
        shm.close()


@pytest.fixture
def shm():
    mem = shared_memory.SharedMemory(create=True, size=mmap.PAGESIZE)
    try:
        yield mem
    finally:
        gc.collect()  # semaphores left in reference cycles still export the buffer
        mem.close()
        mem.unlink()


def test_semaphore_in_shared_memory_excludes_a_spawned_process(shm):
    sem = mln.RWSemaphore(buffer=shm.buf, offset=OFFSET, name="placed")
    assert sem.shared
    struct.pack_into("q", shm.buf, COUNTER_AT, 0)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    sem.down_write()
    child = ctx.Process(target=_spawned_child, args=(shm.name, OFFSET, ROUNDS, queue),
                        name="spawned")
    child.start()
    try:
        first = queue.get(timeout=CHILD_TIMEOUT)
        assert first == {"write_locked": True, "write_trylock": False, "read_trylock": False,
                         "timed_write": False}
        wait_queued(sem, 0, 1, timeout=CHILD_TIMEOUT)
        sem.up_write()
        for _ in range(ROUNDS):
            with sem.write():
                (v,) = struct.unpack_from("q", shm.buf, COUNTER_AT)
                struct.pack_into("q", shm.buf, COUNTER_AT, v + 1)
        second = queue.get(timeout=CHILD_TIMEOUT)
    finally:
        codes = _join_all([child])
    assert codes == [0]
    assert second == {"owner_was_me": True}
    assert struct.unpack_from("q", shm.buf, COUNTER_AT)[0] == 2 * ROUNDS
    assert_free(sem)
    del sem


def test_attach_keeps_the_state_and_init_resets_it(shm):
    """attach=True adopts the state in the buffer; without it the buffer is
    initialised (an unlocked lock)."""
    a = mln.RWSemaphore(buffer=shm.buf, offset=OFFSET)
    a.down_read()
    b = mln.RWSemaphore(buffer=shm.buf, offset=OFFSET, attach=True)
    assert b.readers == 1
    assert b.down_write_trylock() is False
    b.up_read()
    assert not a.is_locked()
    a.down_write()
    assert b.owner == mln.current_task()
    b.up_write()  # same task, same lock
    assert_free(a)
    del a, b


@pytest.mark.parametrize("offset", [0, 8, 128, mmap.PAGESIZE - mln.RWSemaphore.SIZE])
def test_valid_offsets(shm, offset):
    sem = mln.RWSemaphore(buffer=shm.buf, offset=offset)
    assert_free(sem)
    del sem


def test_dropping_the_semaphore_releases_the_buffer(shm):
    """Once the last reference to a semaphore placed in a SharedMemory buffer
    is dropped, the buffer can be closed (SharedMemory.close() raises
    BufferError while any export of the buffer is alive).  Tested with the
    cyclic garbage collector off, so that only reference counting counts."""
    sem = mln.RWSemaphore(buffer=shm.buf, offset=OFFSET)
    with sem.write():
        pass
    enabled = gc.isenabled()
    gc.disable()
    try:
        del sem
        shm.close()  # BufferError: cannot close exported pointers exist
    finally:
        if enabled:
            gc.enable()


def test_read_only_buffer_is_rejected():
    with pytest.raises(ValueError, match="read-only"):
        mln.RWSemaphore(buffer=bytes(4096))
    with pytest.raises(ValueError, match="read-only"):
        mln.RWSemaphore(buffer=memoryview(bytearray(4096)).toreadonly())


@pytest.mark.parametrize("delta", [1, 2, 4, 7])
def test_misaligned_offset_is_rejected(shm, delta):
    align = mln.RWSemaphore.ALIGNMENT
    if delta % align == 0:
        pytest.skip("aligned")
    with pytest.raises(ValueError, match="aligned"):
        mln.RWSemaphore(buffer=shm.buf, offset=OFFSET + delta)


@pytest.mark.parametrize("offset", [-1, -8, mmap.PAGESIZE - mln.RWSemaphore.SIZE + 8,
                                    mmap.PAGESIZE, 1 << 40])
def test_out_of_range_offset_is_rejected(shm, offset):
    with pytest.raises(ValueError, match="offset"):
        mln.RWSemaphore(buffer=shm.buf, offset=offset)


def test_buffer_too_small_is_rejected():
    with pytest.raises(ValueError):
        mln.RWSemaphore(buffer=bytearray(mln.RWSemaphore.SIZE - 1))


def test_attach_needs_a_buffer():
    with pytest.raises(ValueError, match="buffer"):
        mln.RWSemaphore(attach=True)
