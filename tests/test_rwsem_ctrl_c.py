"""A real Ctrl-C: SIGINT sent to a Python process whose main thread is blocked
on the lock ends it with a KeyboardInterrupt traceback, the lock's queue
intact."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import TIMEOUT

CHILD = textwrap.dedent("""
    import sys, threading, time
    import mmap_lock_native as mln

    sem = mln.RWSemaphore(name="ctrl-c")
    held = threading.Event()
    main_tid = threading.get_native_id()
    holder_task = []

    def blocked_main_thread_sleeps():
        try:
            with open(f"/proc/self/task/{main_tid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "S"
        except OSError:
            time.sleep(0.1)
            return True

    def holder():
        sem.down_write()
        holder_task.append(mln.current_task())
        held.set()
        deadline = time.monotonic() + 30
        while not (sem.queue() == EXPECT and blocked_main_thread_sleeps()):
            if time.monotonic() > deadline:
                print("never queued", flush=True)
                return
            time.sleep(0.001)
        print("queued", flush=True)
        threading.Event().wait()  # hold it until the process ends

    threading.Thread(target=holder, daemon=True).start()
    held.wait()
    try:
        CALL
    except KeyboardInterrupt:
        print(f"after: queue={sem.queue()} owner_is_holder={sem.owner == holder_task[0]} "
              f"write_locked={sem.is_write_locked()}", file=sys.stderr, flush=True)
        raise
    print("acquired", flush=True)
""")

CALLS = {
    "down_write": ("sem.down_write()", (0, 1)),
    "down_read": ("sem.down_read()", (1, 0)),
    "down_write_killable": ("sem.down_write_killable()", (0, 1)),
    "acquire_read": ("sem.acquire_read(timeout=None)", (1, 0)),
    "write_context_manager": ("with sem.write(): pass", (0, 1)),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_sigint_interrupts_a_blocked_main_thread(call):
    code, expect = CALLS[call]
    script = CHILD.replace("CALL", code).replace("EXPECT", repr(expect))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    try:
        ready, _, _ = select.select([child.stdout], [], [], TIMEOUT)
        if not ready:
            pytest.fail(f"child did not block on the lock within {TIMEOUT} s")
        line = child.stdout.readline()
        assert line == b"queued\n", (line, child.stderr.read() if child.poll() is not None
                                     else b"")
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        try:
            out, err = child.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"child still running {TIMEOUT} s after SIGINT")
        elapsed = time.monotonic() - t0
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    err = err.decode()
    assert b"acquired" not in out
    assert "Traceback (most recent call last)" in err, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    assert "after: queue=(0, 0) owner_is_holder=True write_locked=True" in err, err
    # An unhandled KeyboardInterrupt ends the process by SIGINT (or exit 1 / 130).
    assert child.returncode in (-signal.SIGINT, 1, 130), child.returncode
    assert elapsed < TIMEOUT
