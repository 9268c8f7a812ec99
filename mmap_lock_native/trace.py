"""Tracepoints and the event recorder.

The C core fires three tracepoints where the kernel fires them:
``start_locking(mm, write)``, ``acquire_returned(mm, write, success)`` and
``released(mm, write)``.  :func:`set_hooks` sends them to Python callables;
:func:`record` captures them for one mm into a bounded buffer that can be
exported as a Chrome trace (Perfetto, chrome://tracing).
"""
from __future__ import annotations

import errno
import os
import struct
import sys
import threading
from types import TracebackType
from typing import Any, Callable, List, Optional, Type, Union

from ._args import int_in
from ._ffi import ffi, lib
from .chrome_trace import Annotation, TraceEvent, write_chrome_trace
from .mm import MM, mm_from_address
from .vm import os_error

__all__ = ["Annotation", "MM_OPS", "Recorder", "TraceEvent", "clear_hooks", "hooks", "record",
           "set_hooks"]

EVENT_NAMES = ("start_locking", "acquire_returned", "released")

#: The mm operations' tags (C: ``MM_OP_*``) by number: ``"fault"``, ``"munmap"``, ...
MM_OPS = {getattr(lib, name): name[len("MM_OP_"):].lower() for name in dir(lib)
          if name.startswith("MM_OP_") and name != "MM_OP_NR"}

#: What a hook receives as its first argument: the MM, or the C address of an
#: mm that has no Python object.
MMRef = Union[MM, int]

_hooks: "dict[str, Optional[Callable[..., Any]]]" = {
    "start_locking": None, "acquire_returned": None, "released": None}
_set_lock = threading.Lock()


def _mm_of(ptr: Any) -> MMRef:
    address = int(ffi.cast("uintptr_t", ptr))
    return mm_from_address(address) or address


def _report_hook_error(exc_type: Any, exc: Any, tb: Any) -> None:
    """A hook that raises cannot stop the lock call: report it as unraisable."""
    print(f"mmap_lock_native.trace: exception in a trace hook: {exc_type.__name__}: {exc}",
          file=sys.stderr)


# The tracepoint whose Python hook this thread is running, if any.
_running = threading.local()


def _run_hook(event: str, fn: Callable[..., Any], *args: Any) -> None:
    outer = getattr(_running, "event", None)  # a hook may lock another mm: nested hooks
    _running.event = event
    try:
        fn(*args)
    finally:
        _running.event = outer


def _refuse_inside_a_hook(op: str) -> None:
    """Changing the hooks waits until no thread runs an old hook: from inside
    one, that is waiting for itself."""
    event = getattr(_running, "event", None)
    if event is not None:
        raise RuntimeError(f"{op} called from inside the {event} trace hook: it waits until "
                           f"no hook is running, this one included; change the hooks from "
                           f"outside them")


@ffi.def_extern(onerror=_report_hook_error)
def _mln_hook_start_locking(mm, write, arg):  # type: ignore[no-untyped-def]
    fn = _hooks["start_locking"]
    if fn is not None:
        _run_hook("start_locking", fn, _mm_of(mm), bool(write))


@ffi.def_extern(onerror=_report_hook_error)
def _mln_hook_acquire_returned(mm, write, success, arg):  # type: ignore[no-untyped-def]
    fn = _hooks["acquire_returned"]
    if fn is not None:
        _run_hook("acquire_returned", fn, _mm_of(mm), bool(write), bool(success))


@ffi.def_extern(onerror=_report_hook_error)
def _mln_hook_released(mm, write, arg):  # type: ignore[no-untyped-def]
    fn = _hooks["released"]
    if fn is not None:
        _run_hook("released", fn, _mm_of(mm), bool(write))


def set_hooks(*, start_locking: Optional[Callable[[MMRef, bool], Any]] = None,
              acquire_returned: Optional[Callable[[MMRef, bool, bool], Any]] = None,
              released: Optional[Callable[[MMRef, bool], Any]] = None) -> None:
    """Install Python tracepoint hooks for every mm; hooks not named are removed.

    Hooks run on the thread making the lock call, with the GIL taken again
    for them; ``acquire_returned`` and ``start_locking`` of a write run while
    the caller holds (or is about to wait for) the lock, so a hook must not
    lock the same mm.  An exception in a hook is printed, not raised (the
    lock call cannot fail because of it).  Returns once no thread runs a
    previous hook; called from inside a hook, which it would wait for, it
    raises RuntimeError instead.
    """
    for name, fn in (("start_locking", start_locking), ("acquire_returned", acquire_returned),
                     ("released", released)):
        if fn is not None and not callable(fn):
            raise TypeError(f"set_hooks: {name} must be callable or None, not {fn!r}")
    _refuse_inside_a_hook("set_hooks")
    with _set_lock:
        c = ffi.new("struct mmap_lock_trace_hooks *")
        if start_locking is not None:
            c.start_locking = lib._mln_hook_start_locking
        if acquire_returned is not None:
            c.acquire_returned = lib._mln_hook_acquire_returned
        if released is not None:
            c.released = lib._mln_hook_released
        # Python callables first, so that a C call seeing the new set finds them.
        _hooks.update(start_locking=start_locking, acquire_returned=acquire_returned,
                      released=released)
        rc = lib.mmap_lock_set_trace_hooks(c)
        if rc:
            raise RuntimeError("set_hooks: the C core was built without tracepoints "
                               "(MMAP_LOCK_NO_TRACE)")


def clear_hooks() -> None:
    """Remove every Python tracepoint hook; returns once none is running.
    RuntimeError from inside a hook (it would wait for that hook)."""
    _refuse_inside_a_hook("clear_hooks")
    with _set_lock:
        lib.mmap_lock_set_trace_hooks(ffi.NULL)
        _hooks.update(start_locking=None, acquire_returned=None, released=None)


def hooks() -> "dict[str, Optional[Callable[..., Any]]]":
    """The hooks installed now, by tracepoint name."""
    return dict(_hooks)


_EVENT = struct.Struct("=QQQBBBBHH")
assert _EVENT.size == ffi.sizeof("struct mmap_lock_event")


class Recorder:
    """Records one mm's lock events while active (``with record(mm) as rec:``).

    ``capacity`` bounds the buffer; events past it are counted in
    :attr:`dropped`, never silently lost.  After the ``with`` block,
    :attr:`events` lists them in the order they were recorded.
    """

    def __init__(self, mm: MM, capacity: int = 1 << 16) -> None:
        if not isinstance(mm, MM):
            raise TypeError(f"record: mm must be an MM, not {type(mm).__name__}")
        # The C core allocates the buffer (ENOMEM: MemoryError); a size_t holds the count.
        capacity = int_in(capacity, "capacity", f"record({mm._label()})", 1, (1 << 64) - 1)
        self.mm = mm
        self.capacity = capacity
        #: The recorded events (filled when recording stops).
        self.events: List[TraceEvent] = []
        #: Events lost because the buffer was full.
        self.dropped = 0
        #: The embedder's own events (:meth:`annotate`), in the order made.
        self.annotations: List[Annotation] = []
        self.start_ns = 0
        self.stop_ns = 0
        self._active = False

    def __enter__(self) -> "Recorder":
        rc = lib.mmap_lock_record_start(self.mm._mm, self.capacity)
        if rc:
            if rc == -errno.EBUSY:
                raise RuntimeError(f"record: {self.mm._label()} is already being recorded")
            if rc == -errno.EINVAL:
                raise ValueError(f"record({self.mm._label()}): capacity {self.capacity} events "
                                 f"do not fit in the address space")
            if rc == -errno.ENOMEM:
                raise MemoryError(f"record({self.mm._label()}): cannot allocate "
                                  f"capacity={self.capacity} events")
            raise os_error(rc, f"record({self.mm._label()})")
        self._active = True
        self.start_ns = lib.rwsem_now_ns()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop recording and collect the events (the ``with`` block does it)."""
        if not self._active:
            return
        self._active = False
        rec = lib.mmap_lock_record_stop(self.mm._mm)
        self.stop_ns = lib.rwsem_now_ns()
        if rec == ffi.NULL:
            return
        try:
            n = lib.mmap_lock_recorder_count(rec)
            raw = ffi.buffer(lib.mmap_lock_recorder_events(rec), n * _EVENT.size)
            self.events = [TraceEvent(ts, task, mm, EVENT_NAMES[ev], bool(w), bool(ok), op,
                                      MM_OPS.get(caller, str(caller) if caller else ""))
                           for ts, task, mm, ev, w, ok, op, caller, _ in
                           _EVENT.iter_unpack(raw)]
            self.dropped = lib.mmap_lock_recorder_dropped(rec)
        finally:
            lib.mmap_lock_recorder_free(rec)

    def annotate(self, name: str, **args: Any) -> None:
        """Record an event of the embedder's own (a guest syscall, a signal
        delivered) on the calling task's track, beside its lock spans:
        ``rec.annotate("syscall", nr=9)``.  RuntimeError unless recording."""
        if not isinstance(name, str):
            raise TypeError(f"annotate on {self!r}: name must be a str, not "
                            f"{type(name).__name__}")
        if not self._active:
            raise RuntimeError(f"annotate({name!r}) on {self!r}: not recording")
        self.annotations.append(Annotation(lib.rwsem_now_ns(), lib.task_current(), name, args))

    def to_chrome_trace(self, path: "str | os.PathLike[str]") -> None:
        """Write the events as Chrome trace-event JSON: one track per task,
        waits and holds as spans (``mm_op`` in their args names the mm
        operation), annotations as instants; a span still open at the end is
        closed there."""
        write_chrome_trace(path, self.events, pid=os.getpid(), end_ns=self.stop_ns or None,
                           dropped=self.dropped, label=self.mm._label(),
                           annotations=self.annotations)

    def __repr__(self) -> str:
        state = "recording" if self._active else f"{len(self.events)} events"
        return f"<Recorder of {self.mm._label()}: {state}, {self.dropped} dropped>"


def record(mm: MM, capacity: int = 1 << 16) -> Recorder:
    """``with record(mm) as rec:`` records mm's lock events into ``rec``."""
    return Recorder(mm, capacity)
