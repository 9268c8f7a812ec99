"""``python -m mmap_lock_native bench``: fault-like workloads on the emulated
mm, run by native threads (no GIL while measuring), in the manner of
will-it-scale; a table of throughput, scaling and lock waits.

Each (workload, lock, threads) run uses a fresh MM shared by all its threads,
samples the threads' counters once a second after a warm-up, and reports the
median sample.  Lock waits come from the mm's lock statistics; context
switches and CPU time from psutil (the ``bench`` extra), when installed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from ._ffi import ffi, lib
from .mm import LOCK_BACKENDS, MM
from .stats import HIST_BUCKETS, LockStats

__all__ = ["WORKLOADS", "LOCKS", "main", "run_one"]

#: Workload name -> C constant.
WORKLOADS = {
    "page_fault1": lib.WL_PAGE_FAULT1,
    "mmap1": lib.WL_MMAP1,
    "fault_mix": lib.WL_FAULT_MIX,
    "maps_reader": lib.WL_MAPS_READER,
}
#: The lock implementations the workloads run on (MM(lock=...)).
LOCKS = tuple(LOCK_BACKENDS)

_NS = 1_000_000_000


def _percentile_ns(hist: Sequence[int], uncontended: int, q: float) -> int:
    """The q-quantile of all acquisitions' waits, as the upper bound of its
    log2 bucket (uncontended acquisitions waited 0 ns)."""
    total = uncontended + sum(hist)
    if not total:
        return 0
    rank = q * (total - 1)
    if rank < uncontended:
        return 0
    seen = uncontended
    for k, n in enumerate(hist):
        seen += n
        if rank < seen:
            return 2 if k == 0 else 1 << (k + 1)
    return 1 << HIST_BUCKETS


def _wait_figures(st: LockStats) -> Dict[str, int]:
    hist = [r + w for r, w in zip(st.wait_histogram["read"], st.wait_histogram["write"])]
    uncontended = (st.read_acquisitions - st.read_contended
                   + st.write_acquisitions - st.write_contended)
    return {"read_acquisitions": st.read_acquisitions,
            "write_acquisitions": st.write_acquisitions,
            "wait_p50_ns": _percentile_ns(hist, uncontended, 0.50),
            "wait_p99_ns": _percentile_ns(hist, uncontended, 0.99),
            "wait_max_ns": st.max_wait_ns,
            "acquisitions": st.read_acquisitions + st.write_acquisitions,
            "contended": st.read_contended + st.write_contended}


def _process_usage() -> Optional[Any]:
    try:
        import psutil
    except ImportError:
        return None
    p = psutil.Process()
    cs = p.num_ctx_switches()
    t = p.cpu_times()
    return (cs.voluntary + cs.involuntary, t.user + t.system)


def run_one(workload: str, threads: int, *, lock: str = "rwsem", duration: float = 3.0,
            warmup: float = 0.5, region_bytes: int = 128 << 20, mix_vmas: int = 64,
            mix_pages: int = 64, remap_share: float = 0.001, write_share: float = 0.1,
            seed: int = 1) -> Dict[str, Any]:
    """Run one workload; return its figures (``ops_per_sec`` is the median
    one-second sample, all threads together)."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    if lock not in LOCKS:
        raise ValueError(f"unknown lock {lock!r}; this build has {', '.join(LOCKS)}")
    if threads < 1 or threads > lib.WL_MAX_THREADS:
        raise ValueError(f"threads must be 1..{lib.WL_MAX_THREADS}, not {threads}")
    samples = max(1, int(round(duration)))
    interval = duration / samples
    mm = MM(name=f"{workload}-{threads}", lock=lock)
    cfg = ffi.new("struct wl_config *", {
        "workload": WORKLOADS[workload], "threads": threads, "region_bytes": region_bytes,
        "mix_vmas": mix_vmas, "mix_pages": mix_pages,
        "mix_remap_per_million": int(remap_share * 1_000_000),
        "mix_write_percent": int(write_share * 100),
        "warmup_ns": int(warmup * _NS), "interval_ns": int(interval * _NS),
        "samples": samples, "seed": seed})
    out = ffi.new("struct wl_result *")
    before = _process_usage()
    rc = lib.wl_run(mm._mm, cfg, out)
    after = _process_usage()
    if rc:
        raise OSError(-rc, f"bench {workload} with {threads} threads: {os.strerror(-rc)}")
    rates = [out.sample_ops[i] * _NS / out.sample_ns[i] for i in range(out.samples)]
    result: Dict[str, Any] = {
        "workload": workload, "lock": lock, "threads": threads,
        "ops_per_sec": statistics.median(rates),
        "samples_ops_per_sec": rates,
        "ops_total": out.ops_total, "ops_all": out.ops_all,
        "maps_reads": out.side_ops_total, "segv": out.segv, "errors": out.errors,
        "wall_s": out.wall_ns / _NS,
    }
    result.update(_wait_figures(mm.lock_stats()))
    if before is not None and after is not None and out.ops_all:
        result["ctx_switches_per_kop"] = (after[0] - before[0]) * 1000 / out.ops_all
        result["cpu_percent"] = 100 * (after[1] - before[1]) / (out.wall_ns / _NS)
    mm.close()
    return result


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
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "libc": " ".join(platform.libc_ver()),
            "load_average": os.getloadavg(), "mmap_lock_native": __version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _fmt_ns(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g}{unit}"
    return f"{ns:.0f}ns"


def format_table(results: List[Dict[str, Any]]) -> str:
    """The results as an aligned text table."""
    width = max([8] + [len(r["lock"]) for r in results])
    head = (f"{'workload':<12} {'lock':<{width}} {'thr':>3} {'ops/s':>12} {'scaling':>8} "
            f"{'wait p50':>9} {'p99':>9} {'max':>9} {'cs/kop':>8} {'cpu%':>6}")
    lines = [head, "-" * len(head)]
    for r in results:
        cs = r.get("ctx_switches_per_kop")
        cpu = r.get("cpu_percent")
        cs_text = "n/a" if cs is None else f"{cs:.2f}"     # psutil missing
        cpu_text = "n/a" if cpu is None else f"{cpu:.0f}"
        lines.append(
            f"{r['workload']:<12} {r['lock']:<{width}} {r['threads']:>3} {r['ops_per_sec']:>12,.0f} "
            f"{r.get('scaling', float('nan')):>7.2f}x {_fmt_ns(r['wait_p50_ns']):>9} "
            f"{_fmt_ns(r['wait_p99_ns']):>9} {_fmt_ns(r['wait_max_ns']):>9} "
            f"{cs_text:>8} {cpu_text:>6}")
    return "\n".join(lines)


def _add_scaling(results: List[Dict[str, Any]]) -> None:
    base = {(r["workload"], r["lock"]): r["ops_per_sec"] for r in results if r["threads"] == 1}
    for r in results:
        b = base.get((r["workload"], r["lock"]))
        r["scaling"] = r["ops_per_sec"] / b if b else float("nan")


def _plot(results: List[Dict[str, Any]], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("bench: --plot needs matplotlib: pip install 'mmap-lock-native[plot]'")
    workloads = sorted({r["workload"] for r in results}, key=list(WORKLOADS).index)
    fig, axes = plt.subplots(1, len(workloads), figsize=(4 * len(workloads), 3.2), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        for lock in sorted({r["lock"] for r in results}):
            pts = sorted((r["threads"], r["ops_per_sec"]) for r in results
                         if r["workload"] == w and r["lock"] == lock)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lock)
        ax.set_title(w)
        ax.set_xlabel("threads")
        ax.set_ylabel("ops/s")
        ax.set_xticks(sorted({r["threads"] for r in results}))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def _threads(text: str) -> List[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads: {text!r} is not a comma-separated "
                                         "list of integers")
    if not values or any(v < 1 or v > lib.WL_MAX_THREADS for v in values):
        raise argparse.ArgumentTypeError(f"--threads: each count must be 1..{lib.WL_MAX_THREADS}")
    return values


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not v > 0 or v > 3600:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0 and at most 3600")
    return v


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m mmap_lock_native bench``; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m mmap_lock_native bench",
                                 description="Fault-like workloads on the emulated mm, "
                                 "native threads, every lock side by side.")
    ap.add_argument("--workload", action="append", choices=list(WORKLOADS),
                    help="workload to run (repeatable; default: all)")
    ap.add_argument("--threads", type=_threads, default=[1, 2],
                    help="comma-separated thread counts (default: 1,2)")
    ap.add_argument("--duration", type=_positive, default=1.0,
                    help="seconds sampled per run, after the warm-up (default 1: the "
                    "default suite of 32 runs then takes about a minute; use 3 or more "
                    "for steadier medians)")
    ap.add_argument("--warmup", type=_positive, default=0.5, help="seconds (default 0.5)")
    ap.add_argument("--lock", action="append", choices=list(LOCKS),
                    help="lock implementation (repeatable; default: all available)")
    ap.add_argument("--region-mib", type=_positive, default=128,
                    help="page_fault1/mmap1 mapping size in MiB (default 128)")
    ap.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    ap.add_argument("--plot", metavar="PATH.png", help="plot ops/s against threads")
    args = ap.parse_args(argv)
    workloads = args.workload or list(WORKLOADS)
    locks = args.lock or list(LOCKS)
    region = int(args.region_mib * (1 << 20)) // lib.MM_PAGE_SIZE * lib.MM_PAGE_SIZE
    if region < lib.MM_PAGE_SIZE:
        ap.error("--region-mib is smaller than a page")
    runs = [(w, lk, t) for w in workloads for lk in locks for t in args.threads]
    results = []
    for i, (w, lk, t) in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {w} on {lk}, {t} thread{'s' if t > 1 else ''} "
              f"({args.warmup + args.duration:.1f} s)...", file=sys.stderr, flush=True)
        results.append(run_one(w, t, lock=lk, duration=args.duration, warmup=args.warmup,
                               region_bytes=region))
    _add_scaling(results)
    print(format_table(results))
    if _process_usage() is None:
        print("(cs/kop and cpu%: install psutil, e.g. pip install 'mmap-lock-native[bench]')")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": _machine(), "results": results}, f, indent=2)
    if args.plot:
        _plot(results, args.plot)
    return 0
