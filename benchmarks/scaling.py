"""Scaling of every lock design, measured in alternated rounds with a control.

    python benchmarks/scaling.py                       # 1,2,4,..,N threads (N = CPUs allowed)
    python benchmarks/scaling.py --threads 1,2 --rounds 9 --json /tmp/scaling.json
    python benchmarks/scaling.py --workload fault_mix --lock rwsem,per_vma,bravo

Each round runs the pure-compute control at every thread count, then every
(workload, lock, threads) once, in an order rotated from round to round, so
drift falls on all contenders alike.  A round counts only if the control got
the cores it asked for (its ops/s at the top thread count, against one
thread, reach --min-control of the thread count, or of the CPUs allowed when
there are fewer): on a shared or noisy machine a round where another process
took a core says nothing about the locks.  Reported, per (workload, lock):
the median over kept rounds of ops/s at each thread count, the median of the
per-round ratio against one thread (the scaling), and the median per-round
ratio of one-thread ops/s against the rwsem design's (the cost of a design on
one thread).  Progress goes to stderr, the table to stdout; it always exits 0
unless the arguments are bad.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from mmap_lock_native import bench


def _list(kind: str, choices: "tuple[str, ...] | List[str]"):
    def parse(text: str) -> List[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        bad = [n for n in names if n not in choices]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"--{kind}: choose from {', '.join(choices)}")
        return names
    return parse


def _threads(text: str) -> List[int]:
    try:
        values = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads: {text!r} is not a list of integers")
    if not values or values[0] < 1 or values[-1] > 256:
        raise argparse.ArgumentTypeError("--threads: each count must be 1..256")
    if values[0] != 1:
        values = [1] + values     # scaling needs the one-thread run
    return values


def default_threads() -> List[int]:
    """1, 2, 4, ... up to the CPUs this process may use (and that count itself)."""
    n = len(os.sched_getaffinity(0))
    out, t = [], 1
    while t < n:
        out.append(t)
        t *= 2
    return out + [n]


def _median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", type=_list("workload", list(bench.WORKLOADS)),
                    default=["fault_mix", "fault_read", "fault_private", "maps_reader"])
    ap.add_argument("--lock", type=_list("lock", bench.LOCKS), default=list(bench.LOCKS))
    ap.add_argument("--threads", type=_threads, default=None,
                    help="comma-separated thread counts (default 1,2,4,..,CPUs allowed)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    ap.add_argument("--duration", type=float, default=1.0, help="seconds per run (default 1)")
    ap.add_argument("--warmup", type=float, default=0.3, help="seconds (default 0.3)")
    ap.add_argument("--min-control", type=float, default=0.95,
                    help="keep a round if the control scaled to this share of the cores "
                    "it asked for (default 0.95)")
    ap.add_argument("--json", metavar="PATH", help="every round's figures, and the summary")
    args = ap.parse_args(argv)
    threads = args.threads or default_threads()
    cpus = len(os.sched_getaffinity(0))
    top = threads[-1]
    want = min(top, cpus) * args.min_control
    combos: List[Tuple[str, str, int]] = [(w, lk, t) for w in args.workload for lk in args.lock
                                          for t in threads]
    per_round = len(threads) * 0.6 + len(combos) * (args.warmup + args.duration)
    print(f"{args.rounds} rounds of {len(combos)} runs and {len(threads)} controls, "
          f"about {per_round * args.rounds / 60:.1f} min", file=sys.stderr)

    rounds: List[Dict[str, Any]] = []
    t_start = time.monotonic()
    for r in range(args.rounds):
        controls = {t: bench.run_control(t)["ops_per_sec"] for t in threads}
        control_scaling = controls[top] / controls[1]
        order = combos[r % len(combos):] + combos[:r % len(combos)]
        runs = {}
        for w, lk, t in order:
            res = bench.run_one(w, t, lock=lk, duration=args.duration, warmup=args.warmup)
            runs[f"{w}|{lk}|{t}"] = res["ops_per_sec"]
        kept = control_scaling >= want
        rounds.append({"round": r, "control": controls, "control_scaling": control_scaling,
                       "kept": kept, "ops_per_sec": runs})
        done = time.monotonic() - t_start
        print(f"round {r + 1}/{args.rounds}: control {control_scaling:.2f}x at {top} threads "
              f"({'kept' if kept else 'dropped: a core was busy elsewhere'}); "
              f"{done / (r + 1) * (args.rounds - r - 1) / 60:.1f} min left",
              file=sys.stderr, flush=True)

    kept = [rd for rd in rounds if rd["kept"]]
    summary = []
    for w in args.workload:
        for lk in args.lock:
            row: Dict[str, Any] = {"workload": w, "lock": lk, "rounds_kept": len(kept)}
            for t in threads:
                row[f"ops_{t}"] = _median([rd["ops_per_sec"][f"{w}|{lk}|{t}"] for rd in kept])
                row[f"scaling_{t}"] = _median([rd["ops_per_sec"][f"{w}|{lk}|{t}"]
                                               / rd["ops_per_sec"][f"{w}|{lk}|1"] for rd in kept])
            if "rwsem" in args.lock:
                row["cost_vs_rwsem_1"] = _median([rd["ops_per_sec"][f"{w}|rwsem|1"]
                                                  / rd["ops_per_sec"][f"{w}|{lk}|1"]
                                                  for rd in kept])
            summary.append(row)

    print(f"kept {len(kept)} of {len(rounds)} rounds (control at {top} threads >= {want:.2f}x; "
          f"control medians: " + ", ".join(
              f"{t} thr {_median([rd['control'][t] / rd['control'][1] for rd in kept]) or 0:.2f}x"
              for t in threads) + ")")
    head = f"{'workload':<14} {'lock':<22} " + " ".join(f"{f'{t} thr M/s':>10} {'x1':>6}"
                                                       for t in threads)
    head += f" {'1-thr cost':>10}"
    print(head)
    print("-" * len(head))
    for row in summary:
        cells = []
        for t in threads:
            ops, sc = row[f"ops_{t}"], row[f"scaling_{t}"]
            cells.append(f"{ops / 1e6 if ops else 0:>10.2f} "
                         f"{'' if sc is None else f'{sc:.2f}x':>6}")
        cost = row.get("cost_vs_rwsem_1")
        print(f"{row['workload']:<14} {row['lock']:<22} " + " ".join(cells)
              + f" {'' if cost is None else f'{cost:.2f}x':>10}")
    print("(x1: median per-round ratio to 1 thread; 1-thr cost: rwsem's 1-thread ops/s over "
          "the design's, per round, median; above 1 is slower than rwsem)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"threads": threads, "cpus_allowed": cpus, "rounds": rounds,
                       "summary": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
