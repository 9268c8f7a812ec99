"""``python -m mmap_lock_native bench``: every workload on every lock design,
side by side, in a table of throughput, scaling, lock waits, context
switches and what each design did (per-VMA fallbacks, bravo revocations).

A pure-compute control runs first at each thread count, so a reader can see
how many cores the threads really got.  Every run's figures go to ``--json``;
``--plot`` draws ops/s against threads.  A run in which operations failed is
reported and makes the command exit with status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional

from . import bench
from ._ffi import lib

__all__ = ["main", "format_table"]


def _names(kind: str, choices: "tuple[str, ...] | List[str]"):
    """An argparse type: a comma-separated list of names from ``choices``."""
    def parse(text: str) -> List[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        bad = [n for n in names if n not in choices]
        if not names or bad:
            raise argparse.ArgumentTypeError(
                f"--{kind}: {', '.join(map(repr, bad)) or 'nothing given'}: invalid choice; "
                f"choose from {', '.join(choices)}")
        return names
    return parse


def _threads(text: str) -> List[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads: {text!r} is not a comma-separated "
                                         "list of integers")
    if not values or any(v < 1 or v > lib.WL_MAX_THREADS for v in values):
        raise argparse.ArgumentTypeError(f"--threads: each count must be 1..{lib.WL_MAX_THREADS}")
    return sorted(set(values))


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if not v > 0 or v > 3600:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0 and at most 3600 seconds")
    return v


def _machine() -> Dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from . import __version__
    return {"cpus": os.cpu_count(), "cpus_allowed": len(os.sched_getaffinity(0)),
            "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "libc": " ".join(platform.libc_ver()),
            "load_average": os.getloadavg(), "mmap_lock_native": __version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _fmt_ns(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g}{unit}"
    return f"{ns:.0f}ns"


def _fmt_small(v: Optional[float]) -> str:
    """Three significant digits, so that small rates still say something."""
    if v is None:
        return "n/a"
    return "0" if v == 0 else f"{v:.3g}"


def _design_note(r: Dict[str, Any]) -> str:
    """What the design did: per-VMA fallbacks, bravo's fast share and revocations."""
    if r["lock"] == "per_vma" and r.get("vma_lock_fallback_share") is not None:
        return f"vma fallback {100 * r['vma_lock_fallback_share']:.2g}%"
    if r["lock"] == "bravo" and r.get("bravo_fast_share") is not None:
        return (f"fast {100 * r['bravo_fast_share']:.3g}%, "
                f"{r['bravo_revocations']} revoked")
    return ""


def format_table(results: List[Dict[str, Any]]) -> str:
    """The results as an aligned text table."""
    width = max([8] + [len(r["lock"]) for r in results])
    wwidth = max([13] + [len(r["workload"]) for r in results])
    head = (f"{'workload':<{wwidth}} {'lock':<{width}} {'thr':>4} {'ops/s':>12} {'scaling':>8} "
            f"{'cont%':>6} {'max wait':>9} {'cs/kop':>7} {'cpu%':>5} {'errors':>6}  design")
    lines = [head, "-" * len(head)]
    for r in results:
        thr = f"{r['threads']}+{r['extra_threads']}" if r["extra_threads"] else str(r["threads"])
        scaling = "n/a" if r.get("scaling") is None else f"{r['scaling']:.2f}x"
        cpu = r.get("cpu_percent")
        lines.append(
            f"{r['workload']:<{wwidth}} {r['lock']:<{width}} {thr:>4} {r['ops_per_sec']:>12,.0f} "
            f"{scaling:>8} {100 * r['contended_share']:>6.2f} {_fmt_ns(r['wait_max_ns']):>9} "
            f"{_fmt_small(r.get('ctx_switches_per_kop')):>7} "
            f"{'n/a' if cpu is None else f'{cpu:.0f}':>5} {r['errors']:>6}  {_design_note(r)}")
    return "\n".join(lines)


def _add_scaling(results: List[Dict[str, Any]]) -> None:
    """scaling = ops/s against the same workload and lock on one thread (None
    when the run set has no one-thread run to compare with)."""
    base = {(r["workload"], r["lock"]): r["ops_per_sec"] for r in results if r["threads"] == 1}
    for r in results:
        b = base.get((r["workload"], r["lock"]))
        r["scaling"] = r["ops_per_sec"] / b if b else None


def _plot(results: List[Dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    workloads = [w for w in bench.WORKLOADS if any(r["workload"] == w for r in results)]
    cols = min(3, len(workloads))
    rows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, w in zip(axes.flat, workloads):
        for lock in [lk for lk in bench.LOCKS if any(r["lock"] == lk for r in results)]:
            pts = sorted((r["threads"], r["ops_per_sec"]) for r in results
                         if r["workload"] == w and r["lock"] == lock)
            ax.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], marker="o", label=lock)
        ax.set_title(w)
        ax.set_xlabel("threads")
        ax.set_ylabel("M ops/s")
        ax.set_xticks(sorted({r["threads"] for r in results}))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(workloads):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)


def _check_outputs(args: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    """Refuse, before any run, outputs that could only fail at the end."""
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            ap.exit(2, "bench: --plot needs matplotlib: pip install 'mmap-lock-native[plot]'\n")
    for opt, path in (("--json", args.json), ("--plot", args.plot)):
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            ap.exit(2, f"bench: {opt} {path}: folder {folder} does not exist or is not "
                       "writable\n")
        if os.path.isdir(path):
            ap.exit(2, f"bench: {opt} {path}: is a folder\n")


def _progress(i: int, n: int, what: str, left_s: float) -> None:
    print(f"[{i}/{n}] {what} (about {left_s:.0f} s left)", file=sys.stderr, flush=True)


def _embed(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    """``--embed``: the guest workloads on the adapter against plain Unicorn."""
    try:
        from . import bench_embed
        import unicorn  # noqa: F401
    except ImportError:
        ap.exit(2, "bench --embed: needs the unicorn package: "
                   "pip install 'mmap-lock-native[unicorn]'\n")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    _check_outputs(args, ap)
    rows = bench_embed.run_embed(list(bench_embed.WORKLOADS), args.rounds,
                                 progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(bench_embed.format_embed(rows))
    print("(ratio: adapter ops/s over plain uc.mem_map ops/s, medians of alternated rounds; "
          "the adapter's mm has contiguous host backing: a Unicorn region per VMA)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": _machine(), "results": rows}, f, indent=2)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m mmap_lock_native bench``; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m mmap_lock_native bench",
                                 description="Fault-like workloads on the emulated mm, "
                                 "native threads, every lock design side by side.")
    ap.add_argument("--workload", action="append", type=_names("workload", list(bench.WORKLOADS)),
                    help="comma-separated workloads (repeatable; default: all of "
                    f"{', '.join(bench.WORKLOADS)})")
    ap.add_argument("--lock", action="append", type=_names("lock", bench.LOCKS),
                    help=f"comma-separated lock designs (repeatable; default: all of "
                    f"{', '.join(bench.LOCKS)})")
    ap.add_argument("--threads", type=_threads, default=[1, 2],
                    help="comma-separated counted thread counts (default: 1,2); maps_reader "
                    "runs its maps reader beside them (shown as 1+1)")
    ap.add_argument("--duration", type=_seconds, default=1.0,
                    help="seconds sampled per run, after the warm-up (default 1: the "
                    "default suite then takes about two minutes; 3 or more gives steadier "
                    "medians)")
    ap.add_argument("--warmup", type=_seconds, default=0.3, help="seconds (default 0.3)")
    ap.add_argument("--region-mib", type=_seconds, default=128,
                    help="page_fault1/mmap1/maps_reader mapping size in MiB (default 128)")
    ap.add_argument("--no-control", action="store_true",
                    help="skip the pure-compute control run at each thread count")
    ap.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    ap.add_argument("--plot", metavar="PATH.png",
                    help="plot ops/s against threads (needs matplotlib: the 'plot' extra)")
    ap.add_argument("--embed", action="store_true",
                    help="instead: the guest workloads under Unicorn, on the adapter and on "
                    "plain uc.mem_map, alternated (needs the 'unicorn' extra); --json applies")
    ap.add_argument("--rounds", type=int, default=5,
                    help="--embed: alternated rounds per workload (default 5)")
    args = ap.parse_args(argv)
    if args.embed:
        return _embed(args, ap)
    workloads = [w for group in args.workload or [list(bench.WORKLOADS)] for w in group]
    locks = [lk for group in args.lock or [list(bench.LOCKS)] for lk in group]
    workloads = list(dict.fromkeys(workloads))
    locks = list(dict.fromkeys(locks))
    region = int(args.region_mib * (1 << 20)) // lib.MM_PAGE_SIZE * lib.MM_PAGE_SIZE
    if region < lib.MM_PAGE_SIZE:
        ap.error("--region-mib is smaller than a page")
    _check_outputs(args, ap)

    runs = [(w, lk, t) for w in workloads for lk in locks for t in args.threads]
    controls = [] if args.no_control else args.threads
    per_run = args.warmup + args.duration
    n = len(controls) + len(runs)
    controls_out: List[Dict[str, Any]] = []
    for i, t in enumerate(controls, 1):
        _progress(i, n, f"control: compute, {t} thread{'s' if t > 1 else ''}",
                  0.6 * (len(controls) - i + 1) + per_run * len(runs))
        controls_out.append(bench.run_control(t))
    results = []
    for i, (w, lk, t) in enumerate(runs, len(controls) + 1):
        _progress(i, n, f"{w} on {lk}, {t} thread{'s' if t > 1 else ''}",
                  per_run * (n - i + 1))
        results.append(bench.run_one(w, t, lock=lk, duration=args.duration,
                                     warmup=args.warmup, region_bytes=region))
    _add_scaling(results)
    _add_scaling(controls_out)

    if controls_out:
        scalings = [f"{c['threads']} thr {c['scaling']:.2f}x" for c in controls_out
                     if c["scaling"] is not None]
        print("control (pure compute, no lock), ops/s against 1 thread: "
              + (", ".join(scalings) or "n/a (no one-thread control)"))
    print(format_table(results))
    if any(r["scaling"] is None for r in results):
        print("(scaling: n/a without a one-thread run; add 1 to --threads)")
    failed = [r for r in results if r["errors"]]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": _machine(), "controls": controls_out, "results": results},
                      f, indent=2)
    if args.plot:
        _plot(results, args.plot)
    if failed:
        print(f"bench: {len(failed)} run{'s' if len(failed) > 1 else ''} had failed "
              "operations (the errors column); their ops/s count only what ran, and "
              "the failures usually mean the machine ran out of memory", file=sys.stderr)
        return 1
    return 0
