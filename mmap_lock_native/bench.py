"""Fault-like workloads on the emulated mm, run by native threads (no GIL while
measuring) in the manner of will-it-scale: :func:`run_one` runs one workload
on one lock design and returns its figures.  ``python -m mmap_lock_native
bench`` (:mod:`mmap_lock_native.bench_cli`) runs them side by side.

Each run uses a fresh MM shared by all its threads, samples the threads'
counters once per interval after a warm-up, and reports the median sample.
Lock waits come from the mm's lock statistics; context switches and CPU time
from ``getrusage(RUSAGE_SELF)`` around the run, so they cover every thread.
"""
from __future__ import annotations

import os
import statistics
from typing import Any, Dict, Optional, Sequence

from ._ffi import ffi, lib
from .mm import LOCK_BACKENDS, MM
from .stats import HIST_BUCKETS, LockStats

__all__ = ["WORKLOADS", "LOCKS", "CONTROL", "run_one", "run_control"]

#: Workload name -> C constant (csrc/workload/workload.h explains each).
WORKLOADS: Dict[str, int] = {
    "page_fault1": lib.WL_PAGE_FAULT1,
    "mmap1": lib.WL_MMAP1,
    "fault_mix": lib.WL_FAULT_MIX,
    "fault_private": lib.WL_FAULT_PRIVATE,
    "fault_read": lib.WL_FAULT_READ,
    "maps_reader": lib.WL_MAPS_READER,
}
#: The pure-compute control: how many cores the threads really got.
CONTROL = "compute"
#: The lock designs the workloads run on (``MM(lock=...)``).
LOCKS = tuple(LOCK_BACKENDS)
#: Threads a workload runs beside the counted ones (maps_reader's reader).
EXTRA_THREADS = {"maps_reader": 1}

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


def _lock_figures(st: LockStats) -> Dict[str, Any]:
    hist = [r + w for r, w in zip(st.wait_histogram["read"], st.wait_histogram["write"])]
    acquisitions = st.read_acquisitions + st.write_acquisitions
    contended = st.read_contended + st.write_contended
    vma_tries = st.vma_lock_success + st.vma_lock_abort + st.vma_lock_retry + st.vma_lock_miss
    return {"read_acquisitions": st.read_acquisitions,
            "write_acquisitions": st.write_acquisitions,
            "acquisitions": acquisitions, "contended": contended,
            "contended_share": contended / acquisitions if acquisitions else 0.0,
            "wait_p50_ns": _percentile_ns(hist, acquisitions - contended, 0.50),
            "wait_p99_ns": _percentile_ns(hist, acquisitions - contended, 0.99),
            "wait_max_ns": st.max_wait_ns,
            # per_vma: faults under the VMA lock alone, and those that fell back.
            "vma_lock_success": st.vma_lock_success, "vma_lock_abort": st.vma_lock_abort,
            "vma_lock_retry": st.vma_lock_retry, "vma_lock_miss": st.vma_lock_miss,
            "vma_lock_fallback_share": (vma_tries - st.vma_lock_success) / vma_tries
            if vma_tries else None,
            # bravo: reads on the biased path, revocations, time inhibited.
            "bravo_fast_reads": st.bravo_fast_reads,
            "bravo_revocations": st.bravo_revocations,
            "bravo_inhibit_ns": st.bravo_inhibit_ns,
            "bravo_fast_share": st.bravo_fast_reads / st.read_acquisitions
            if st.read_acquisitions and st.bravo_fast_reads else None}


def _check_threads(threads: int) -> None:
    if not isinstance(threads, int) or isinstance(threads, bool):
        raise TypeError(f"threads must be an int, not {type(threads).__name__}")
    if threads < 1 or threads > lib.WL_MAX_THREADS:
        raise ValueError(f"threads must be 1..{lib.WL_MAX_THREADS}, not {threads}")


def _sampling(duration: float) -> "tuple[int, float]":
    """Samples and their interval for a run of ``duration`` seconds (about one a
    second, at most the runner's WL_MAX_SAMPLES)."""
    if not duration > 0:
        raise ValueError(f"duration must be > 0 seconds, not {duration!r}")
    samples = min(max(1, int(round(duration))), lib.WL_MAX_SAMPLES)
    return samples, duration / samples


def _run(mm: Optional[MM], workload_id: int, threads: int, *, duration: float, warmup: float,
         region_bytes: int = 0, mix_vmas: int = 1, mix_pages: int = 1,
         remap_share: float = 0.0, write_share: float = 0.0, seed: int = 1,
         label: str) -> Dict[str, Any]:
    """Run the C runner once; the figures every workload has."""
    if not warmup >= 0:
        raise ValueError(f"warmup must be >= 0 seconds, not {warmup!r}")
    samples, interval = _sampling(duration)
    cfg = ffi.new("struct wl_config *", {
        "workload": workload_id, "threads": threads, "region_bytes": region_bytes,
        "mix_vmas": mix_vmas, "mix_pages": mix_pages,
        "mix_remap_per_million": int(round(remap_share * 1_000_000)),
        "mix_write_percent": int(round(write_share * 100)),
        "warmup_ns": int(warmup * _NS), "interval_ns": max(1, int(interval * _NS)),
        "samples": samples, "seed": seed})
    out = ffi.new("struct wl_result *")
    if mm is None:
        # The control needs no mm; the runner still wants one to hand threads.
        mm = MM(name="control", stats=False)
    rc = lib.wl_run(mm._mm, cfg, out)
    if rc:
        raise OSError(-rc, f"bench {label} with {threads} thread{'s' if threads > 1 else ''}: "
                      f"{os.strerror(-rc)}")
    rates = [out.sample_ops[i] * _NS / out.sample_ns[i] for i in range(out.samples)]
    wall = out.wall_ns / _NS
    return {"threads": threads, "ops_per_sec": statistics.median(rates),
            "samples_ops_per_sec": rates, "ops_total": out.ops_total, "ops_all": out.ops_all,
            "maps_reads": out.side_ops_total, "segv": out.segv, "errors": out.errors,
            "wall_s": wall,
            "ctx_switches": out.ctx_switches,
            "ctx_switches_per_kop": out.ctx_switches * 1000 / out.ops_all
            if out.ops_all else None,
            "cpu_percent": 100 * out.cpu_ns / out.wall_ns if out.wall_ns else None}


def run_one(workload: str, threads: int, *, lock: str = "rwsem", duration: float = 3.0,
            warmup: float = 0.5, region_bytes: int = 128 << 20, mix_vmas: int = 64,
            mix_pages: int = 64, remap_share: float = 0.001, write_share: float = 0.1,
            seed: int = 1) -> Dict[str, Any]:
    """Run ``workload`` with ``threads`` counted threads on lock design ``lock``
    and return its figures (``ops_per_sec`` is the median sample, all
    threads together; ``errors`` counts operations that failed).

    ``fault_mix``, ``fault_private`` and ``fault_read`` fault on ``mix_vmas``
    VMAs (per thread for fault_private) of ``mix_pages`` pages, a
    ``write_share`` of them writes, re-mapping one VMA on a ``remap_share``
    of the operations (not fault_read).  ``page_fault1``, ``mmap1`` and
    ``maps_reader`` map ``region_bytes`` at a time."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    if lock not in LOCKS:
        raise ValueError(f"unknown lock {lock!r}; this build has {', '.join(LOCKS)}")
    _check_threads(threads)
    if not 0 <= remap_share <= 1 or not 0 <= write_share <= 1:
        raise ValueError(f"remap_share and write_share are fractions in [0, 1], not "
                         f"{remap_share!r} and {write_share!r}")
    mm = MM(name=f"{workload}-{threads}", lock=lock)
    try:
        result = _run(mm, WORKLOADS[workload], threads, duration=duration, warmup=warmup,
                      region_bytes=region_bytes, mix_vmas=mix_vmas, mix_pages=mix_pages,
                      remap_share=remap_share, write_share=write_share, seed=seed,
                      label=workload)
        result.update(_lock_figures(mm.lock_stats()))
        if lock == "bravo" and result["bravo_fast_share"] is None and result["read_acquisitions"]:
            result["bravo_fast_share"] = 0.0    # reads, none of them fast
    finally:
        mm.close()
    result.update({"workload": workload, "lock": lock,
                   "extra_threads": EXTRA_THREADS.get(workload, 0)})
    return result


def run_control(threads: int, *, duration: float = 0.5, warmup: float = 0.1) -> Dict[str, Any]:
    """The pure-compute control: ``threads`` threads computing without sharing
    anything.  Its ops/s against one thread's is how many cores they got."""
    _check_threads(threads)
    result = _run(None, lib.WL_COMPUTE, threads, duration=duration, warmup=warmup,
                  label=CONTROL)
    result.update({"workload": CONTROL, "lock": None, "extra_threads": 0})
    return result
