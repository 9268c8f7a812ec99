"""attach=True to memory that holds no semaphore (issue 10, B9): refused with a
ValueError before anything waits on it; and no call waits without bound on the
semaphore's internal wait lock, repr() and timed calls included."""
from __future__ import annotations

import os
import struct
import threading
from typing import Any, Callable, List

import pytest

import mmap_lock_native as mln
from mmap_lock_native._ffi import lib

OFFSET = 64
SIZE = mln.RWSemaphore.SIZE
#: Bound of every wait here.
TIMEOUT = 10.0
#: The wait-lock is the structure's second 32-bit word (csrc/core/rwsem.h).
#: A shared one's holder writes its pid, and the low 9 bits of its start
#: time at bit 22 (wait_lock.h): a word without a pid is nobody's.
WAIT_LOCK_AT = 4
WAIT_LOCK_NO_PID = 0x1FF << 22


def _own_wait_lock_id() -> int:
    """This process's id in a shared wait-lock word: a holder that is alive."""
    with open("/proc/self/stat", encoding="ascii", errors="replace") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22
    return os.getpid() | (start & 0x1FF) << 22


def _buffer(fill: int) -> bytearray:
    return bytearray([fill]) * (OFFSET + SIZE + 64)


@pytest.mark.parametrize("fill", [0x00, 0xA5, 0xFF])
def test_attach_to_bytes_that_hold_no_semaphore_is_refused(fill: int) -> None:
    buf = _buffer(fill)
    with pytest.raises(ValueError, match=rf"attach=True\) at byte offset {OFFSET} .*"
                                         rf"hold no semaphore .*magic word 0x{fill:02x}"):
        mln.RWSemaphore(buffer=buf, offset=OFFSET, attach=True, name="nothing")
    assert buf == _buffer(fill), "a refused attach wrote into the buffer"


def test_attach_at_a_wrong_offset_is_refused() -> None:
    buf = _buffer(0)
    sem = mln.RWSemaphore(buffer=buf, offset=OFFSET)
    sem.down_write()
    for offset in (OFFSET - 8, OFFSET + 8):
        with pytest.raises(ValueError, match="hold no semaphore"):
            mln.RWSemaphore(buffer=buf, offset=offset, attach=True)
    sem.up_write()
    assert mln.RWSemaphore(buffer=buf, offset=OFFSET, attach=True).state() == "unlocked"


def test_attach_to_another_layout_version_is_refused() -> None:
    buf = _buffer(0)
    mln.RWSemaphore(buffer=buf, offset=OFFSET)
    magic = struct.pack("<I", lib.RWSEM_MAGIC ^ 0x7F)  # same base, another version
    at = bytes(buf).index(struct.pack("<I", lib.RWSEM_MAGIC), OFFSET)
    buf[at:at + 4] = magic
    with pytest.raises(ValueError, match="another layout version"):
        mln.RWSemaphore(buffer=buf, offset=OFFSET, attach=True)


def test_attach_to_a_corrupted_wait_lock_is_refused() -> None:
    buf = _buffer(0)
    mln.RWSemaphore(buffer=buf, offset=OFFSET)
    buf[OFFSET + WAIT_LOCK_AT:OFFSET + WAIT_LOCK_AT + 4] = struct.pack("<I", WAIT_LOCK_NO_PID)
    with pytest.raises(ValueError, match="corrupted"):
        mln.RWSemaphore(buffer=buf, offset=OFFSET, attach=True)


def _bounded(call: Callable[[], Any], what: str) -> Any:
    """Run ``call`` in a thread and return its result (or raise what it
    raised); fail if it is still running after TIMEOUT (the thread is a
    daemon: a hang cannot stall the interpreter's exit)."""
    out: List[Any] = []

    def run() -> None:
        try:
            out.append((call(), None))
        except BaseException as exc:  # handed to the test's thread
            out.append((None, exc))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(TIMEOUT)
    if t.is_alive():
        pytest.fail(f"{what} still running after {TIMEOUT} s")
    result, exc = out[0]
    if exc is not None:
        raise exc
    return result


def test_calls_are_bounded_while_the_wait_lock_stays_held() -> None:
    """The wait lock held and never released (as by a process stopped inside
    it; here, a word naming this live process): timed calls return by their
    deadline, and repr() says the queue is unknown instead of hanging."""
    buf = _buffer(0)
    sem = mln.RWSemaphore(buffer=buf, offset=OFFSET, name="stuck")
    sem.down_write()
    buf[OFFSET + WAIT_LOCK_AT:OFFSET + WAIT_LOCK_AT + 4] = struct.pack("<I", _own_wait_lock_id())
    assert _bounded(lambda: sem.acquire_read(timeout=0.05), "acquire_read") is False
    assert _bounded(lambda: sem.acquire_write(timeout=0.05), "acquire_write") is False
    text = _bounded(lambda: repr(sem), "repr")
    assert "queue unknown (wait lock: ETIMEDOUT" in text, text
    with pytest.raises(mln.LockError, match="queue on RWSemaphore 'stuck'.*wait lock stayed busy"):
        _bounded(sem.queue, "queue")
    buf[OFFSET + WAIT_LOCK_AT:OFFSET + WAIT_LOCK_AT + 4] = bytes(4)
    sem.up_write()
    assert sem.state() == "unlocked"
