"""Chrome trace-event JSON from mmap_lock recorder events.

The per-mm recorder (``mmap_lock_record_start`` / ``_stop`` in the C core)
captures the three mmap_lock tracepoints of every call: ``start_locking``,
``acquire_returned`` and ``released``.  :func:`chrome_trace` turns such a
stream into the JSON object format of the Chrome trace-event format, which
Perfetto (ui.perfetto.dev) and ``chrome://tracing`` open as a timeline with
one track per task:

* a wait span from ``start_locking`` to its ``acquire_returned``, named
  ``"wait read"`` or ``"wait write"`` (a failed trylock or killable wait makes
  this span only, with ``success: false``);
* a hold span from a successful ``acquire_returned`` to its ``released``,
  named ``"hold read"`` or ``"hold write"``.

Spans are ``"B"``/``"E"`` pairs on the task's track.  A read hold that is
released by another task (a non-owner release), and any span that would not
nest properly on its track (holds of two mms released out of order), is
drawn as an async ``"b"``/``"e"`` pair instead, so that every ``"B"`` still
has its ``"E"``.  A downgrade shows as the write hold ending and a read hold
(``downgrade: true``) beginning at the same instant.  Spans still open when
the recording ended are closed at ``end_ns`` with ``open_at_end: true``;
releases of holds taken before the recording began get a span from the first
event with ``open_at_start: true``.

Timestamps are CLOCK_MONOTONIC nanoseconds in, microseconds (float) out, as
the format requires.  This module is pure Python and does not need the C
extension.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

__all__ = [
    "ACQUIRE_RETURNED",
    "Annotation",
    "CATEGORY",
    "EVENT_NAMES",
    "MMAP_OP_KILLABLE",
    "MMAP_OP_NESTED",
    "MMAP_OP_NON_OWNER",
    "MMAP_OP_TRY",
    "MMAP_OP_WRITE",
    "RELEASED",
    "START_LOCKING",
    "TraceEvent",
    "chrome_trace",
    "op_names",
    "write_chrome_trace",
]

#: The call asks for the lock in write mode.
MMAP_OP_WRITE = 1
#: A killable acquisition (``mmap_*_lock_killable``): may fail with -EINTR.
MMAP_OP_KILLABLE = 2
#: A trylock: never waits, may fail.
MMAP_OP_TRY = 4
#: A non-owner acquisition or release (``mmap_read_*_non_owner``).
MMAP_OP_NON_OWNER = 8
#: A write acquisition with a lockdep subclass (``mmap_write_lock_nested``).
MMAP_OP_NESTED = 16

_OP_BITS: Tuple[Tuple[int, str], ...] = (
    (MMAP_OP_WRITE, "write"),
    (MMAP_OP_KILLABLE, "killable"),
    (MMAP_OP_TRY, "trylock"),
    (MMAP_OP_NON_OWNER, "non_owner"),
    (MMAP_OP_NESTED, "nested"),
)

#: Event names: the tracepoint that fired.
START_LOCKING = "start_locking"
ACQUIRE_RETURNED = "acquire_returned"
RELEASED = "released"
#: Event names indexed by the C core's ``MMAP_LOCK_EV_*`` codes.
EVENT_NAMES: Tuple[str, str, str] = (START_LOCKING, ACQUIRE_RETURNED, RELEASED)

#: The ``cat`` of every span and instant this module emits.
CATEGORY = "mmap_lock"

# Perfetto reads tids as 32-bit integers; larger task ids are renumbered.
_TID_MAX = 2**31 - 1


class TraceEvent(NamedTuple):
    """One recorded tracepoint (``struct mmap_lock_event`` in the C core)."""

    ts_ns: int
    """CLOCK_MONOTONIC timestamp in nanoseconds."""
    task: int
    """The task that fired the tracepoint (``task_current()``)."""
    mm: int
    """Address of the ``struct mm_struct`` whose lock it concerns."""
    event: str
    """``"start_locking"``, ``"acquire_returned"`` or ``"released"``."""
    write: bool
    """Write mode (False: read mode)."""
    success: bool
    """Whether the acquisition succeeded (``acquire_returned`` only)."""
    op: int
    """``MMAP_OP_*`` bits of the call (trylock, killable, ...)."""
    mm_op: str = ""
    """The mm operation that made the call (``"fault"``, ``"munmap"``, ...), or
    ``""`` for a direct lock call."""


class Annotation(NamedTuple):
    """An embedder's own event (``Recorder.annotate``): an instant on the
    task's track, beside its lock spans."""

    ts_ns: int
    """CLOCK_MONOTONIC timestamp in nanoseconds."""
    task: int
    """The task that made it."""
    name: str
    """What happened (``"syscall"``, ``"SIGSEGV"``, ...)."""
    args: Dict[str, Any]
    """Its details, shown with it."""


def _lock_args(ev: "TraceEvent") -> Dict[str, Any]:
    args: Dict[str, Any] = {"op": op_names(ev.op), "mm": hex(ev.mm)}
    if ev.mm_op:
        args["mm_op"] = ev.mm_op
    return args


def op_names(op: int) -> List[str]:
    """Names of the ``MMAP_OP_*`` bits set in ``op``, unknown bits in hex.

    >>> op_names(MMAP_OP_WRITE | MMAP_OP_KILLABLE)
    ['write', 'killable']
    """
    names = [name for bit, name in _OP_BITS if op & bit]
    known = 0
    for bit, _ in _OP_BITS:
        known |= bit
    if op & ~known:
        names.append(hex(op & ~known))
    return names


class _Span:
    """A span being built: one wait or hold of one task."""

    __slots__ = ("task", "mm", "name", "start", "end", "args", "seq", "non_owner",
                 "end_task", "open_at_start")

    def __init__(self, task: int, mm: int, name: str, start: int, args: Dict[str, Any],
                 seq: int) -> None:
        self.task = task
        self.mm = mm
        self.name = name
        self.start = start
        self.end: Optional[int] = None
        self.args = args
        self.seq = seq
        self.non_owner = False          # drawn async; may end on another task
        self.end_task = task            # the task whose event ended it
        self.open_at_start = False


class _Builder:
    """Pass 1: the lock state machine, from events to spans."""

    def __init__(self, first_ns: int) -> None:
        self.first_ns = first_ns
        self.spans: List[_Span] = []
        self.waits: Dict[int, _Span] = {}                    # task -> open wait
        self.holds: Dict[Tuple[int, int], List[_Span]] = {}  # (mm, task) -> open holds
        self.floating: Dict[int, List[_Span]] = {}           # mm -> open non-owner holds

    def _open(self, task: int, mm: int, name: str, start: int,
              args: Dict[str, Any]) -> _Span:
        span = _Span(task, mm, name, start, args, len(self.spans))
        self.spans.append(span)
        return span

    def _hold(self, ev: TraceEvent, write: bool, extra: Dict[str, Any]) -> None:
        args = _lock_args(ev)
        args.update(extra)
        span = self._open(ev.task, ev.mm, "hold write" if write else "hold read", ev.ts_ns,
                          args)
        if not write and ev.op & MMAP_OP_NON_OWNER:
            span.non_owner = True
            self.floating.setdefault(ev.mm, []).append(span)
        else:
            self.holds.setdefault((ev.mm, ev.task), []).append(span)

    def start_locking(self, ev: TraceEvent) -> None:
        stale = self.waits.pop(ev.task, None)
        if stale is not None:       # its acquire_returned is missing
            stale.end = ev.ts_ns
            stale.args["unterminated"] = True
        args = _lock_args(ev)
        self.waits[ev.task] = self._open(ev.task, ev.mm,
                                         "wait write" if ev.write else "wait read",
                                         ev.ts_ns, args)

    def acquire_returned(self, ev: TraceEvent) -> None:
        wait = self.waits.get(ev.task)
        if wait is not None and wait.mm == ev.mm:
            del self.waits[ev.task]
            wait.end = ev.ts_ns
            wait.args["success"] = bool(ev.success)
            if ev.success:
                self._hold(ev, ev.write, {})
            return
        own = self.holds.get((ev.mm, ev.task), [])
        held_write = [s for s in own if s.name == "hold write"]
        if ev.success and not ev.write and held_write:
            # Downgrade: no start_locking, and the task holds it for write.
            span = held_write[-1]
            own.remove(span)
            span.end = ev.ts_ns
            self._hold(ev, False, {"downgrade": True})
            return
        # Its start_locking came before the recording did.
        if ev.success:
            self._hold(ev, ev.write, {"wait_not_recorded": True})
        else:
            wait = self._open(ev.task, ev.mm, "wait write" if ev.write else "wait read",
                              ev.ts_ns, {"op": op_names(ev.op), "mm": hex(ev.mm),
                                         "success": False, "wait_not_recorded": True})
            wait.end = ev.ts_ns

    def released(self, ev: TraceEvent) -> None:
        mode = "hold write" if ev.write else "hold read"
        own = [s for s in self.holds.get((ev.mm, ev.task), []) if s.name == mode]
        floating = self.floating.get(ev.mm, []) if not ev.write else []
        span: Optional[_Span] = None
        if ev.op & MMAP_OP_NON_OWNER and floating:
            span = floating.pop(0)
        elif own:
            span = own[-1]          # the latest: read holds of one mm are alike
            self.holds[(ev.mm, ev.task)].remove(span)
        elif floating:
            span = floating.pop(0)
        else:
            # A hold of another task (released by a non-owner), oldest first.
            others = [s for (mm, task), lst in self.holds.items()
                      if mm == ev.mm and task != ev.task for s in lst if s.name == mode]
            if others:
                span = min(others, key=lambda s: s.seq)
                self.holds[(span.mm, span.task)].remove(span)
                span.non_owner = True
        if span is None:
            # Taken before the recording began.
            span = self._open(ev.task, ev.mm, mode, self.first_ns,
                              {"op": op_names(ev.op), "mm": hex(ev.mm),
                               "open_at_start": True})
            span.open_at_start = True
        span.end = ev.ts_ns
        span.end_task = ev.task
        if span.end_task != span.task:
            span.non_owner = True
            span.args["released_by"] = ev.task

    def finish(self, end_ns: int) -> List[_Span]:
        """Close what is still open at ``end_ns`` and return all spans."""
        for span in self.spans:
            if span.end is None:
                span.end = max(end_ns, span.start)
                span.args["open_at_end"] = True
        return self.spans


def _tid_map(events: Sequence["TraceEvent | Annotation"]) -> Dict[int, int]:
    """Task id -> JSON tid: the id itself, unless some id does not fit."""
    tasks: Dict[int, None] = {}
    for ev in events:
        tasks.setdefault(ev.task, None)
    if all(0 < t <= _TID_MAX for t in tasks):
        return {t: t for t in tasks}
    return {t: i + 1 for i, t in enumerate(tasks)}


def _us(ns: int) -> float:
    return ns / 1000.0


def _nest(spans: List[_Span], pid: int, tid: int,
          async_spans: List[_Span]) -> List[Dict[str, Any]]:
    """One track's spans as B/E events in stack order.

    A span that would end after the span it starts inside is appended to
    ``async_spans`` instead.  The events come out with non-decreasing ``ts``.
    """
    out: List[Dict[str, Any]] = []
    stack: List[_Span] = []

    def close(span: _Span) -> None:
        out.append({"name": span.name, "cat": CATEGORY, "ph": "E", "ts": _us(span.end or 0),
                    "pid": pid, "tid": tid})

    # Equal starts keep stream order; a span reaching back to the first event
    # comes first then (the longest of those outermost).
    spans = sorted(spans, key=lambda s: (s.start, 0, -(s.end or 0)) if s.open_at_start
                   else (s.start, 1, s.seq))
    for span in spans:
        end = span.end or 0
        while stack and (stack[-1].end or 0) <= span.start:
            close(stack.pop())
        if stack and end > (stack[-1].end or 0):
            span.args["overlaps"] = True    # it would outlive its parent
            async_spans.append(span)
            continue
        out.append({"name": span.name, "cat": CATEGORY, "ph": "B", "ts": _us(span.start),
                    "pid": pid, "tid": tid, "args": span.args})
        stack.append(span)
    while stack:
        close(stack.pop())
    return out


def chrome_trace(events: Sequence[TraceEvent], *, pid: int, end_ns: Optional[int] = None,
                 dropped: int = 0, label: str = "mmap_lock",
                 annotations: Sequence[Annotation] = ()) -> Dict[str, Any]:
    """Build a Chrome trace-event JSON object from recorder events.

    Args:
        events: The recorded events, in recording order (they are sorted by
            ``ts_ns``, stably, which keeps each task's order).
        pid: The ``pid`` of every trace event (one process track).
        end_ns: When the recording ended: spans still open are closed here.
            Defaults to the last event's timestamp.
        dropped: Events the recorder had no room for (``dropped`` of the C
            recorder); reported in ``otherData`` and as a global instant.
        label: The process track's name.
        annotations: The embedder's own events: instants on their tasks' tracks.

    Returns:
        ``{"traceEvents": [...], "displayTimeUnit": "ns", "otherData": {...}}``,
        ready for :func:`json.dump`.

    Raises:
        ValueError: an event name is unknown, or ``dropped`` is negative.
    """
    if dropped < 0:
        raise ValueError(f"dropped must be >= 0, not {dropped}")
    for ev in events:
        if ev.event not in EVENT_NAMES:
            raise ValueError(f"unknown event {ev.event!r} (expected one of {EVENT_NAMES})")
    ordered = sorted(events, key=lambda ev: ev.ts_ns)
    first_ns = ordered[0].ts_ns if ordered else 0
    if end_ns is None:
        end_ns = ordered[-1].ts_ns if ordered else 0

    builder = _Builder(first_ns)
    for ev in ordered:
        getattr(builder, ev.event)(ev)
    spans = builder.finish(end_ns)
    tids = _tid_map([*ordered, *annotations])

    timeline: List[Dict[str, Any]] = []
    async_spans: List[_Span] = [s for s in spans if s.non_owner]
    by_task: Dict[int, List[_Span]] = {}
    for span in spans:
        if not span.non_owner:
            by_task.setdefault(span.task, []).append(span)

    # Pass 2: each track's spans as properly nested B/E pairs, or async.
    for task, task_spans in by_task.items():
        timeline.extend(_nest(task_spans, pid, tids[task], async_spans))

    for n, span in enumerate(sorted(async_spans, key=lambda s: s.seq), start=1):
        assert span.end is not None
        ident = hex(n)
        timeline.append({"name": span.name, "cat": CATEGORY, "ph": "b", "id": ident,
                         "ts": _us(span.start), "pid": pid, "tid": tids[span.task],
                         "args": span.args})
        timeline.append({"name": span.name, "cat": CATEGORY, "ph": "e", "id": ident,
                         "ts": _us(span.end), "pid": pid, "tid": tids[span.end_task]})

    for note in annotations:
        timeline.append({"name": note.name, "cat": "annotation", "ph": "i", "s": "t",
                         "ts": _us(note.ts_ns), "pid": pid, "tid": tids[note.task],
                         "args": dict(note.args)})
    if dropped:
        timeline.append({"name": f"events dropped: {dropped}", "cat": CATEGORY, "ph": "i",
                         "s": "g", "ts": _us(end_ns), "pid": pid, "tid": 0,
                         "args": {"dropped": dropped}})
    # Stable: each track's events are already in order, ties included.
    timeline.sort(key=lambda e: e["ts"])

    meta: List[Dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": label}},
    ]
    for task, tid in tids.items():
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                     "args": {"name": f"task {task}"}})
    return {
        "traceEvents": meta + timeline,
        "displayTimeUnit": "ns",
        "otherData": {
            "label": label,
            "clock": "CLOCK_MONOTONIC",
            "events": len(events),
            "dropped": dropped,
            "end_ns": end_ns,
        },
    }


def write_chrome_trace(path: Union[str, "os.PathLike[str]"], events: Sequence[TraceEvent],
                       **kw: Any) -> None:
    """Write :func:`chrome_trace` ``(events, **kw)`` as JSON to ``path``.

    Open the file in ui.perfetto.dev or ``chrome://tracing``.
    """
    trace = chrome_trace(events, **kw)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(trace, f)
