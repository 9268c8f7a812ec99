"""mmap_lock_native.chrome_trace: recorder events to Chrome trace-event JSON.

The module is pure Python; it is loaded straight from its file so that these
tests run even while the C extension is being rebuilt (run them with
``--noconftest`` if the package itself cannot be imported).

:func:`check_trace` is the structural checker: every "B" has its "E" on the
same pid/tid in stack order, timestamps never go back on a track, async
"b"/"e" pair by id.  The scenario test checks names and args of a realistic
stream; the property tests feed it random streams.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def _load() -> ModuleType:
    name = "_chrome_trace_under_test"
    path = Path(__file__).resolve().parent.parent / "mmap_lock_native" / "chrome_trace.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import mmap_lock_native.chrome_trace as ct
    from mmap_lock_native.chrome_trace import TraceEvent
else:
    ct = _load()
    TraceEvent = ct.TraceEvent
W, K, T, NO, NE = (ct.MMAP_OP_WRITE, ct.MMAP_OP_KILLABLE, ct.MMAP_OP_TRY, ct.MMAP_OP_NON_OWNER,
                   ct.MMAP_OP_NESTED)
PID = 4242


# ---------------------------------------------------------------- checker

class Span(NamedTuple):
    name: str
    tid: int        # the B's tid (for async spans: the b's)
    end_tid: int    # the E's tid (for async spans: the e's)
    start: float
    end: float
    args: Dict[str, Any]
    is_async: bool
    depth: int      # B/E nesting depth on its track when it began


class Checked(NamedTuple):
    spans: List[Span]
    instants: List[Dict[str, Any]]
    meta: List[Dict[str, Any]]


def check_trace(trace: Dict[str, Any]) -> Checked:
    """Assert the trace is well formed; return its spans, instants, metadata."""
    trace = json.loads(json.dumps(trace))           # must survive a round trip
    assert set(trace) >= {"traceEvents", "displayTimeUnit", "otherData"}
    assert trace["displayTimeUnit"] == "ns"
    stacks: Dict[Tuple[int, int], List[Dict[str, Any]]] = {}
    last_ts: Dict[Tuple[int, int], float] = {}
    open_async: Dict[Tuple[str, str], Dict[str, Any]] = {}
    spans: List[Span] = []
    instants: List[Dict[str, Any]] = []
    meta: List[Dict[str, Any]] = []
    for ev in trace["traceEvents"]:
        ph = ev["ph"]
        assert isinstance(ev["pid"], int) and isinstance(ev["tid"], int), ev
        if ph == "M":
            meta.append(ev)
            continue
        assert isinstance(ev["ts"], float), ev
        track = (ev["pid"], ev["tid"])
        assert ev["ts"] >= last_ts.get(track, float("-inf")), f"ts goes back on {track}: {ev}"
        last_ts[track] = ev["ts"]
        stack = stacks.setdefault(track, [])
        if ph == "B":
            ev["_depth"] = len(stack)
            stack.append(ev)
        elif ph == "E":
            assert stack, f"E without B on {track}: {ev}"
            b = stack.pop()
            assert ev.get("name", b["name"]) == b["name"], (b, ev)
            spans.append(Span(b["name"], track[1], track[1], b["ts"], ev["ts"],
                              b.get("args", {}), False, b["_depth"]))
        elif ph == "b":
            key = (ev["cat"], ev["id"])
            assert key not in open_async, f"async id reused while open: {ev}"
            open_async[key] = ev
        elif ph == "e":
            key = (ev["cat"], ev["id"])
            assert key in open_async, f"e without b: {ev}"
            b = open_async.pop(key)
            assert b["name"] == ev["name"], (b, ev)
            assert ev["ts"] >= b["ts"], (b, ev)
            spans.append(Span(b["name"], b["tid"], ev["tid"], b["ts"], ev["ts"],
                              b.get("args", {}), True, -1))
        elif ph == "i":
            instants.append(ev)
        else:
            raise AssertionError(f"unexpected phase {ph!r}: {ev}")
    for track, stack in stacks.items():
        assert not stack, f"unclosed B on {track}: {stack}"
    assert not open_async, f"unclosed b: {open_async}"
    return Checked(spans, instants, meta)


def _raw(*events: Dict[str, Any]) -> Dict[str, Any]:
    base = {"pid": 1, "tid": 1, "cat": "mmap_lock"}
    return {"traceEvents": [dict(base, **e) for e in events], "displayTimeUnit": "ns",
            "otherData": {}}


@pytest.mark.parametrize("bad", [
    [{"ph": "B", "name": "x", "ts": 1.0}],                                   # no E
    [{"ph": "E", "name": "x", "ts": 1.0}],                                   # no B
    [{"ph": "B", "name": "x", "ts": 1.0}, {"ph": "B", "name": "y", "ts": 2.0},
     {"ph": "E", "name": "x", "ts": 3.0}, {"ph": "E", "name": "y", "ts": 4.0}],  # crossed
    [{"ph": "B", "name": "x", "ts": 1.0}, {"ph": "E", "name": "x", "ts": 1.0, "tid": 2}],
    [{"ph": "B", "name": "x", "ts": 2.0}, {"ph": "E", "name": "x", "ts": 1.0}],  # ts back
    [{"ph": "b", "name": "x", "id": "0x1", "ts": 1.0}],                      # no e
    [{"ph": "b", "name": "x", "id": "0x1", "ts": 1.0},
     {"ph": "e", "name": "x", "id": "0x2", "ts": 2.0}],                      # other id
])
def test_checker_rejects(bad: List[Dict[str, Any]]) -> None:
    with pytest.raises(AssertionError):
        check_trace(_raw(*bad))


# ---------------------------------------------------------------- scenario

M1, M2 = 0x7F00_0000_1000, 0x7F00_0000_2000
T1, T2, T3 = 101, 202, 303


def ev(ts: int, task: int, event: str, write: bool = False, success: bool = False,
       op: int = 0, mm: int = M1) -> TraceEvent:
    return TraceEvent(ts, task, mm, event, write, success, op)


def sl(ts: int, task: int, write: bool = False, op: int = 0, mm: int = M1) -> TraceEvent:
    return ev(ts, task, "start_locking", write, False, op, mm)


def ar(ts: int, task: int, write: bool, success: bool, op: int = 0,
       mm: int = M1) -> TraceEvent:
    return ev(ts, task, "acquire_returned", write, success, op, mm)


def rel(ts: int, task: int, write: bool = False, op: int = 0, mm: int = M1) -> TraceEvent:
    return ev(ts, task, "released", write, False, op, mm)


SCENARIO = [
    # T1: a read hold with a nested read hold inside it.
    sl(1000, T1), ar(1100, T1, False, True),
    sl(1200, T1), ar(1300, T1, False, True),
    # T2: a failed write trylock, then a killable write wait that is killed.
    sl(1400, T2, True, W | T), ar(1450, T2, True, False, W | T),
    sl(1500, T2, True, W | K),
    rel(1600, T1), rel(1700, T1),
    ar(1800, T2, True, False, W | K),
    # T2: write_lock_nested, then a downgrade while T1 waits (killable) for read.
    sl(1900, T2, True, W | NE), ar(2000, T2, True, True, W | NE),
    sl(2100, T1, False, K),
    ar(2200, T2, False, True),
    ar(2300, T1, False, True, K),
    rel(2400, T2), rel(2500, T1),
    # T3 takes a non-owner read that T1 releases.
    sl(2600, T3, False, T | NO), ar(2650, T3, False, True, T | NO),
    rel(2700, T1, False, NO),
    # T3 takes a read that T2, holding nothing, releases.
    sl(2800, T3), ar(2850, T3, False, True),
    rel(2900, T2),
    # T3 holds reads of two mms and releases them out of order.
    sl(3200, T3), ar(3210, T3, False, True),
    sl(3220, T3, mm=M2), ar(3230, T3, False, True, mm=M2),
    rel(3240, T3), rel(3250, T3, mm=M2),
    # Open at the end: T1 waits for write; T2 holds read.
    sl(3000, T1, True, W),
    sl(3100, T2), ar(3150, T2, False, True),
]


def spans_of(checked: Checked, tid: int, name: Optional[str] = None) -> List[Span]:
    return sorted((s for s in checked.spans if s.tid == tid and (name is None or s.name == name)),
                  key=lambda s: (s.start, s.depth))


@pytest.fixture(scope="module")
def scenario() -> Tuple[Dict[str, Any], Checked]:
    trace = ct.chrome_trace(SCENARIO, pid=PID, end_ns=4000, dropped=5, label="test mm")
    return trace, check_trace(trace)


def test_scenario_metadata(scenario: Tuple[Dict[str, Any], Checked]) -> None:
    trace, checked = scenario
    names = {(m["name"], m["tid"]): m["args"]["name"] for m in checked.meta}
    assert names[("process_name", 0)] == "test mm"
    for task in (T1, T2, T3):
        assert names[("thread_name", task)] == f"task {task}"
    assert all(m["pid"] == PID for m in checked.meta)
    assert all(e["pid"] == PID for e in trace["traceEvents"])
    assert trace["otherData"]["dropped"] == 5
    assert trace["otherData"]["label"] == "test mm"


def test_scenario_dropped_instant(scenario: Tuple[Dict[str, Any], Checked]) -> None:
    _, checked = scenario
    [inst] = checked.instants
    assert inst["name"] == "events dropped: 5"
    assert inst["s"] == "g" and inst["ts"] == 4.0


def test_scenario_nested_reads(scenario: Tuple[Dict[str, Any], Checked]) -> None:
    _, checked = scenario
    outer, inner = spans_of(checked, T1, "hold read")[:2]
    assert (outer.start, outer.end, outer.is_async) == (1.1, 1.7, False)
    assert (inner.start, inner.end, inner.is_async) == (1.3, 1.6, False)
    assert inner.depth == outer.depth + 1
    waits = spans_of(checked, T1, "wait read")
    assert [(w.start, w.end, w.args["success"]) for w in waits[:2]] == \
        [(1.0, 1.1, True), (1.2, 1.3, True)]


def test_scenario_failed_acquisitions(scenario: Tuple[Dict[str, Any], Checked]) -> None:
    _, checked = scenario
    waits = spans_of(checked, T2, "wait write")
    assert [(w.start, w.end) for w in waits] == [(1.4, 1.45), (1.5, 1.8), (1.9, 2.0)]
    trylock, killed, nested = (w.args for w in waits)
    assert trylock["success"] is False and "trylock" in trylock["op"]
    assert killed["success"] is False and "killable" in killed["op"]
    assert nested["success"] is True and "nested" in nested["op"]
    # A failed acquisition makes no hold.
    [hold] = spans_of(checked, T2, "hold write")
    assert hold.start == 2.0


def test_scenario_downgrade(scenario: Tuple[Dict[str, Any], Checked]) -> None:
    _, checked = scenario
    [write] = spans_of(checked, T2, "hold write")
    assert (write.start, write.end, write.is_async) == (2.0, 2.2, False)
    reads = spans_of(checked, T2, "hold read")
    down = [r for r in reads if r.args.get("downgrade")]
    assert len(down) == 1 and (down[0].start, down[0].end) == (2.2, 2.4)
    assert not down[0].is_async
    # No wait span for the downgrade itself.
    assert [w.start for w in spans_of(checked, T2, "wait read")] == [3.1]
    # T1's killable read wait spans the downgrade.
    [wait] = [w for w in spans_of(checked, T1, "wait read") if "killable" in w.args["op"]]
    assert (wait.start, wait.end, wait.args["success"]) == (2.1, 2.3, True)


def test_scenario_non_owner(scenario: Tuple[Dict[str, Any], Checked]) -> None:
    _, checked = scenario
    holds = [s for s in checked.spans if s.tid == T3 and s.name == "hold read" and s.is_async]
    by_start = {s.start: s for s in holds}
    # Taken by T3 with the non-owner trylock, released by T1.
    nonowner = by_start[2.65]
    assert (nonowner.end, nonowner.end_tid) == (2.7, T1)
    assert nonowner.args["released_by"] == T1 and "non_owner" in nonowner.args["op"]
    # Released by T2, which held nothing.
    stolen = by_start[2.85]
    assert (stolen.end, stolen.end_tid) == (2.9, T2)
    assert stolen.args["released_by"] == T2
    # T1's release of it and T2's are not B/E spans of theirs.
    assert not [s for s in spans_of(checked, T1, "hold read") if s.end == 2.7]
    assert not [s for s in spans_of(checked, T2, "hold read") if s.end == 2.9]


def test_scenario_out_of_order_release(scenario: Tuple[Dict[str, Any], Checked]) -> None:
    _, checked = scenario
    first = [s for s in checked.spans if s.tid == T3 and s.start == 3.21]
    second = [s for s in checked.spans if s.tid == T3 and s.start == 3.23]
    assert len(first) == 1 and len(second) == 1
    assert (first[0].end, first[0].is_async) == (3.24, False)
    assert (second[0].end, second[0].is_async) == (3.25, True)
    assert second[0].args["overlaps"] is True


def test_scenario_open_at_end(scenario: Tuple[Dict[str, Any], Checked]) -> None:
    _, checked = scenario
    [wait] = [s for s in spans_of(checked, T1, "wait write")]
    assert (wait.start, wait.end, wait.args["open_at_end"]) == (3.0, 4.0, True)
    [hold] = [s for s in spans_of(checked, T2, "hold read") if s.start == 3.15]
    assert hold.end == 4.0 and hold.args["open_at_end"] is True
    closed = [s for s in checked.spans if s.end < 4.0]
    assert not [s for s in closed if s.args.get("open_at_end")]


def test_scenario_every_span_accounted(scenario: Tuple[Dict[str, Any], Checked]) -> None:
    _, checked = scenario
    starts = sum(e.event == "start_locking" for e in SCENARIO)
    acquired = sum(e.event == "acquire_returned" and e.success for e in SCENARIO)
    assert sum(s.name.startswith("wait ") for s in checked.spans) == starts
    assert sum(s.name.startswith("hold ") for s in checked.spans) == acquired
    assert all(s.args["mm"] in (hex(M1), hex(M2)) for s in checked.spans)


# ---------------------------------------------------------------- edge cases

def test_default_end_is_last_event() -> None:
    events = [sl(10_000, T1, True, W), ar(12_000, T1, True, True, W)]
    checked = check_trace(ct.chrome_trace(events, pid=1))
    [hold] = [s for s in checked.spans if s.name == "hold write"]
    assert (hold.start, hold.end, hold.args["open_at_end"]) == (12.0, 12.0, True)
    assert not checked.instants


def test_empty() -> None:
    trace = ct.chrome_trace([], pid=1)
    checked = check_trace(trace)
    assert not checked.spans
    assert [m["name"] for m in checked.meta] == ["process_name"]
    checked = check_trace(ct.chrome_trace([], pid=1, end_ns=5000, dropped=3))
    assert [i["name"] for i in checked.instants] == ["events dropped: 3"]


def test_release_of_hold_taken_before_recording() -> None:
    events = [sl(2000, T1), ar(2100, T1, False, True), rel(2200, T1), rel(2300, T1)]
    checked = check_trace(ct.chrome_trace(events, pid=1))
    holds = spans_of(checked, T1, "hold read")
    assert [(h.start, h.end, h.depth) for h in holds] == [(2.0, 2.3, 0), (2.1, 2.2, 1)]
    assert holds[0].args["open_at_start"] is True


def test_large_task_ids_are_renumbered() -> None:
    big = 2**62 - 1
    events = [sl(1, big), ar(2, big, False, True), rel(3, big), sl(4, T1)]
    checked = check_trace(ct.chrome_trace(events, pid=1))
    names = {m["tid"]: m["args"]["name"] for m in checked.meta if m["name"] == "thread_name"}
    assert names == {1: f"task {big}", 2: f"task {T1}"}


def test_zero_length_spans_and_equal_timestamps() -> None:
    events = [sl(5, T1, True, W | T), ar(5, T1, True, True, W | T), ar(5, T1, False, True),
              rel(5, T1), sl(5, T1), ar(5, T1, False, False, K)]
    checked = check_trace(ct.chrome_trace(events, pid=1))
    assert sorted(s.name for s in checked.spans) == ["hold read", "hold write", "wait read",
                                                     "wait write"]
    assert not [s for s in checked.spans if s.is_async or s.args.get("open_at_end")]


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        ct.chrome_trace([ev(1, T1, "acquired")], pid=1)
    with pytest.raises(ValueError):
        ct.chrome_trace([], pid=1, dropped=-1)


def test_op_names() -> None:
    assert ct.op_names(0) == []
    assert ct.op_names(W | K | T | NO | NE) == ["write", "killable", "trylock", "non_owner",
                                                 "nested"]
    assert ct.op_names(T | 64) == ["trylock", "0x40"]
    assert ct.EVENT_NAMES == ("start_locking", "acquire_returned", "released")


def test_write_chrome_trace(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    ct.write_chrome_trace(path, SCENARIO, pid=PID, end_ns=4000, dropped=5)
    with open(path, encoding="utf-8") as f:
        loaded = json.load(f)
    assert loaded == json.loads(json.dumps(
        ct.chrome_trace(SCENARIO, pid=PID, end_ns=4000, dropped=5)))
    check_trace(loaded)


# ---------------------------------------------------------------- properties

MMS = (M1, M2)
TASKS = (11, 22, 33)


def simulate(steps: List[Tuple[int, int, int, int]]) -> Tuple[List[TraceEvent], int, int]:
    """A well-formed stream from random steps; also (starts, successful acquires).

    Each step is (task, action, a, b).  A task is idle or waiting; idle tasks
    begin an acquisition, release one of their holds in any order, downgrade
    a write hold, or release a non-owner read hold of anyone.
    """
    events: List[TraceEvent] = []
    waiting: Dict[int, Tuple[int, bool, int]] = {}
    holds: Dict[int, List[Tuple[int, bool]]] = {t: [] for t in TASKS}
    pool: List[int] = []                 # mms of open non-owner read holds
    ts = 1_000_000
    starts = acquires = 0
    for task_i, action, a, b in steps:
        task = TASKS[task_i % len(TASKS)]
        ts += b % 4                      # equal timestamps happen
        if task in waiting:
            mm, write, op = waiting.pop(task)
            ok = a % 3 != 0 or not op & (T | K)
            events.append(TraceEvent(ts, task, mm, "acquire_returned", write, ok, op))
            if ok:
                acquires += 1
                if op & NO:
                    pool.append(mm)
                else:
                    holds[task].append((mm, write))
            continue
        kind = action % 5
        mine = holds[task]
        if kind == 1 and mine:           # release any own hold
            mm, write = mine.pop(a % len(mine))
            events.append(TraceEvent(ts, task, mm, "released", write, False, W if write else 0))
        elif kind == 2 and any(w for _, w in mine):
            i = next(i for i, (_, w) in enumerate(mine) if w)
            mm = mine[i][0]
            mine[i] = (mm, False)
            acquires += 1
            events.append(TraceEvent(ts, task, mm, "acquire_returned", False, True, 0))
        elif kind == 3 and pool:
            mm = pool.pop(a % len(pool))
            events.append(TraceEvent(ts, task, mm, "released", False, False, NO))
        else:
            mm = MMS[a % 2]
            if (mm, True) in mine:       # holding it for write: release instead
                mine.remove((mm, True))
                events.append(TraceEvent(ts, task, mm, "released", True, False, W))
                continue
            write = bool(b & 4) and not any(m == mm for m, _ in mine)
            if write:
                op = W | [0, K, T, NE][(a >> 1) % 4]
            else:
                op = [0, K, T, T | NO][(a >> 1) % 4]
            starts += 1
            waiting[task] = (mm, write, op)
            events.append(TraceEvent(ts, task, mm, "start_locking", write, False, op))
    return events, starts, acquires


step = st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 255),
                 st.integers(0, 255))


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=80), st.integers(0, 100), st.integers(0, 50))
def test_property_well_formed_streams(steps: List[Tuple[int, int, int, int]], cut: int,
                                      extra_end: int) -> None:
    events, _, _ = simulate(steps)
    # Whole, then a prefix with the rest counted as dropped.
    for kept in (events, events[:cut]):
        dropped = len(events) - len(kept)
        end = (kept[-1].ts_ns if kept else 0) + extra_end
        checked = check_trace(ct.chrome_trace(kept, pid=7, end_ns=end, dropped=dropped))
        starts = sum(e.event == "start_locking" for e in kept)
        acquired = sum(e.event == "acquire_returned" and e.success for e in kept)
        assert sum(s.name.startswith("wait ") for s in checked.spans) == starts
        assert sum(s.name.startswith("hold ") for s in checked.spans) == acquired
        assert all(s.end <= end / 1000 for s in checked.spans)
        assert len(checked.instants) == (1 if dropped else 0)


event_st = st.builds(TraceEvent, st.integers(0, 50), st.sampled_from(TASKS),
                     st.sampled_from(MMS), st.sampled_from(ct.EVENT_NAMES), st.booleans(),
                     st.booleans(), st.integers(0, 31))


@settings(max_examples=300, deadline=None)
@given(st.lists(event_st, max_size=60))
def test_property_arbitrary_streams_still_pair(events: List[TraceEvent]) -> None:
    """Even nonsense (misuse, lost events, any order) gives a well-formed trace."""
    check_trace(ct.chrome_trace(events, pid=7))
