import threading, signal, time
import pytest
import mmap_lock_native as mln
import conftest
import test_rwsem_giveup as g

@pytest.mark.parametrize("i", range(60))
def test_rep(i):
    scene = g.Scene("read", "read")
    signum, handler, expected, ran = g._signal_setup("handler_returns")
    orig = g.pytest.fail
    try:
        g._run_main_victim(scene, "down", signum, handler, None, n_signals=3, handler_ran=ran)
    except BaseException as e:
        raise
    scene.drain()
