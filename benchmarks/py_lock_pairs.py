#!/usr/bin/env python3
"""Uncontended lock+unlock pairs from Python: RWSemaphore against its floor,
``threading`` locks and the Python reader-writer lock peers.

    python benchmarks/py_lock_pairs.py [--rounds N] [--pairs N] [--json PATH]

Every contender is timed once per round with ``timeit`` over ``--pairs``
pairs; the contenders are alternated (the starting contender rotates each
round), so slow drift of a noisy machine hits all of them alike.  The table
gives the median ns per pair over the rounds and *paired* ratios: each ratio
is the median, over rounds, of the two contenders' times in the same round.

The contender definitions here are also used by ``test_bench_locks.py``
(pytest-benchmark), so both measure the same statements.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import threading
import time
import timeit
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

# -- contenders -----------------------------------------------------------------

#: Returned by a factory: (objects, setup statement, timed statement).  The
#: objects become timeit's globals under a ``_g_`` prefix, and the setup binds
#: them to plain local names, so every contender pays for local lookups only.
Built = Tuple[Dict[str, Any], str, str]


@dataclass(frozen=True)
class Contender:
    key: str                      # short id: JSON key, pytest id
    label: str                    # what the table prints
    group: str                    # pytest-benchmark group
    factory: Callable[[], Built]
    peer: Optional[str] = None    # importable module of a third-party peer
    ours: bool = False            # measures mmap_lock_native
    extra_groups: Tuple[str, ...] = field(default=())


def _locals(**objects: Any) -> Tuple[Dict[str, Any], str]:
    ns = {f"_g_{name}": obj for name, obj in objects.items()}
    setup = "; ".join(f"{name} = _g_{name}" for name in objects)
    return ns, setup


def _rwsem_read() -> Built:
    from mmap_lock_native import RWSemaphore
    ns, setup = _locals(sem=RWSemaphore(name="bench"))
    return ns, setup, "sem.down_read(); sem.up_read()"


def _rwsem_write() -> Built:
    from mmap_lock_native import RWSemaphore
    ns, setup = _locals(sem=RWSemaphore(name="bench"))
    return ns, setup, "sem.down_write(); sem.up_write()"


def _rwsem_with_read() -> Built:
    from mmap_lock_native import RWSemaphore
    ns, setup = _locals(sem=RWSemaphore(name="bench"))
    return ns, setup, "with sem.read():\n    pass"


def _cffi_floor() -> Built:
    # Two bare cffi calls, each releasing and retaking the GIL: what any
    # cffi-bound lock pays before its Python wrapper adds anything.
    import mmap_lock_native._ffi as _ffi
    from mmap_lock_native import RWSemaphore
    sem = RWSemaphore(name="bench-floor")
    ns, setup = _locals(lib=_ffi.lib, p=sem._sem, keep=sem)
    return ns, setup, "lib.down_read_trylock(p); lib.up_read(p)"


def _mmap_read(stats: bool = True) -> Built:
    import mmap_lock_native as mln
    ns, setup = _locals(mm=mln.MM(name="bench", stats=stats), lock=mln.mmap_read_lock,
                        unlock=mln.mmap_read_unlock)
    return ns, setup, "lock(mm); unlock(mm)"


def _mmap_read_nostats() -> Built:
    return _mmap_read(stats=False)


def _mmap_write() -> Built:
    import mmap_lock_native as mln
    ns, setup = _locals(mm=mln.MM(name="bench"), lock=mln.mmap_write_lock,
                        unlock=mln.mmap_write_unlock)
    return ns, setup, "lock(mm); unlock(mm)"


def _mmap_with_read() -> Built:
    import mmap_lock_native as mln
    ns, setup = _locals(mm=mln.MM(name="bench"), locked=mln.mmap_read_locked)
    return ns, setup, "with locked(mm):\n    pass"


def _mmap_cffi_floor() -> Built:
    # The two C calls mmap_read_lock/mmap_read_unlock make, without the wrapper.
    import mmap_lock_native as mln
    import mmap_lock_native._ffi as _ffi
    mm = mln.MM(name="bench-floor")
    ns, setup = _locals(lib=_ffi.lib, p=mm._mm, keep=mm)
    return ns, setup, "lib.mmap_read_lock_begin(p); lib.mmap_read_unlock(p)"


def _mm_with_page() -> Any:
    import mmap_lock_native as mln
    mm = mln.MM(name="bench-mm")
    addr = mm.mmap(mln.PAGE_SIZE, mln.PROT_READ | mln.PROT_WRITE,
                   mln.MAP_PRIVATE | mln.MAP_ANONYMOUS)
    mm.write(addr, b"\x01" * 8)       # present from here on
    return mm, addr


def _mm_fault() -> Built:
    mm, addr = _mm_with_page()
    ns, setup = _locals(fault=mm.fault, addr=addr, keep=mm)
    return ns, setup, "fault(addr)"


def _mm_read() -> Built:
    mm, addr = _mm_with_page()
    ns, setup = _locals(read=mm.read, addr=addr, keep=mm)
    return ns, setup, "read(addr, 8)"


def _mm_write() -> Built:
    mm, addr = _mm_with_page()
    ns, setup = _locals(write=mm.write, addr=addr, data=b"\x02" * 8, keep=mm)
    return ns, setup, "write(addr, data)"


def _mm_cffi_fault() -> Built:
    # The C call mm.fault makes, bare: what any cffi binding of it pays.
    import mmap_lock_native._ffi as _ffi
    mm, addr = _mm_with_page()
    ns, setup = _locals(lib=_ffi.lib, p=mm._mm, addr=addr, keep=mm)
    return ns, setup, "lib.mm_fault(p, addr, 0)"


def _threading_lock() -> Built:
    ns, setup = _locals(lock=threading.Lock())
    return ns, setup, "lock.acquire(); lock.release()"


def _threading_rlock() -> Built:
    ns, setup = _locals(lock=threading.RLock())
    return ns, setup, "lock.acquire(); lock.release()"


def _prwlock() -> Built:
    from prwlock import RWLock
    ns, setup = _locals(lock=RWLock())
    return ns, setup, "lock.acquire_read(); lock.release()"


def _rwl_write() -> Built:
    from readerwriterlock import rwlock
    ns, setup = _locals(lock=rwlock.RWLockWrite().gen_rlock())
    return ns, setup, "lock.acquire(); lock.release()"


def _rwl_fair() -> Built:
    from readerwriterlock import rwlock
    ns, setup = _locals(lock=rwlock.RWLockFair().gen_rlock())
    return ns, setup, "lock.acquire(); lock.release()"


def _fasteners() -> Built:
    # acquire_read_lock/release_read_lock is fasteners' fastest read pair:
    # the read_lock() context manager adds a contextlib generator (~1.7x slower).
    import fasteners
    ns, setup = _locals(lock=fasteners.ReaderWriterLock())
    return ns, setup, "lock.acquire_read_lock(); lock.release_read_lock()"


BASELINE = "threading-lock"
OURS_READ = "rwsem-read"

CONTENDERS: List[Contender] = [
    Contender("rwsem-read", "RWSemaphore down_read+up_read", "read-pair",
              _rwsem_read, ours=True),
    Contender("rwsem-with-read", "RWSemaphore with sem.read()", "read-pair",
              _rwsem_with_read, ours=True),
    Contender("rwsem-write", "RWSemaphore down_write+up_write", "write-pair",
              _rwsem_write, ours=True),
    Contender("cffi-floor", "cffi floor: down_read_trylock+up_read", "read-pair",
              _cffi_floor, ours=True),
    Contender("mmap-read", "mmap_read_lock+mmap_read_unlock", "read-pair",
              _mmap_read, ours=True),
    Contender("mmap-read-nostats", "mmap_read pair, statistics off", "read-pair",
              _mmap_read_nostats, ours=True),
    Contender("mmap-with-read", "with mmap_read_locked(mm)", "read-pair",
              _mmap_with_read, ours=True),
    Contender("mmap-write", "mmap_write_lock+mmap_write_unlock", "write-pair",
              _mmap_write, ours=True),
    Contender("mmap-cffi-floor", "cffi floor: mmap_read_lock_begin+_unlock",
              "read-pair", _mmap_cffi_floor, ours=True),
    Contender("mm-fault", "mm.fault(addr), present page", "mm-ops", _mm_fault, ours=True),
    Contender("mm-read", "mm.read(addr, 8)", "mm-ops", _mm_read, ours=True),
    Contender("mm-write", "mm.write(addr, 8 bytes)", "mm-ops", _mm_write, ours=True),
    Contender("mm-cffi-fault", "cffi floor: lib.mm_fault(p, addr, 0)", "mm-ops",
              _mm_cffi_fault, ours=True),
    Contender("threading-lock", "threading.Lock acquire+release", "read-pair",
              _threading_lock, extra_groups=("write-pair",)),
    Contender("threading-rlock", "threading.RLock acquire+release", "read-pair",
              _threading_rlock, extra_groups=("write-pair",)),
    Contender("prwlock", "prwlock RWLock acquire_read+release", "read-pair",
              _prwlock, peer="prwlock"),
    Contender("rwlock-write", "readerwriterlock RWLockWrite read pair", "read-pair",
              _rwl_write, peer="readerwriterlock"),
    Contender("rwlock-fair", "readerwriterlock RWLockFair read pair", "read-pair",
              _rwl_fair, peer="readerwriterlock"),
    Contender("fasteners", "fasteners ReaderWriterLock read pair", "read-pair",
              _fasteners, peer="fasteners"),
]

_PEER_DISTS = {"prwlock": "prwlock", "readerwriterlock": "readerwriterlock",
               "fasteners": "fasteners"}


def missing_peer(c: Contender) -> Optional[str]:
    """Why ``c`` cannot run here, or None."""
    if c.peer is None:
        return None
    try:
        importlib.import_module(c.peer)
    except ImportError as exc:
        return (f"peer {c.peer!r} is not installed ({exc}); "
                f"pip install {_PEER_DISTS[c.peer]}  (or: pip install -e '.[bench]')")
    return None


def make_timer(c: Contender) -> Tuple[timeit.Timer, Dict[str, Any]]:
    """A timeit.Timer running one pair per loop; the objects stay alive in ns.

    The statement is run a few times first, and our semaphore must be free
    again afterwards: a pair that leaks a hold would time nonsense."""
    ns, setup, stmt = c.factory()
    timer = timeit.Timer(stmt, setup, globals=ns)
    timer.timeit(1000)
    for obj in ns.values():
        if type(obj).__name__ == "MM":
            obj = obj.mmap_lock
        if type(obj).__name__ == "RWSemaphore" and obj.is_locked():
            raise RuntimeError(f"{c.key}: the pair left the lock held: {obj!r}")
    return timer, ns


# -- the run ----------------------------------------------------------------------

def _versions() -> Dict[str, str]:
    out = {}
    for dist in ("mmap-lock-native", "cffi", "prwlock", "readerwriterlock", "fasteners",
                 "pytest-benchmark"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _q(samples: List[float], frac: float) -> float:
    s = sorted(samples)
    pos = frac * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _paired_ratio(a: List[float], b: List[float]) -> float:
    """Median over rounds of a[i] / b[i]."""
    return statistics.median(x / y for x, y in zip(a, b))


def run(rounds: int, pairs: int, only: Optional[List[str]] = None) -> Dict[str, Any]:
    chosen = [c for c in CONTENDERS if only is None or c.key in only]
    skipped: Dict[str, str] = {}
    timers: Dict[str, timeit.Timer] = {}
    keep: List[Any] = []
    for c in chosen:
        why = missing_peer(c)
        if why:
            skipped[c.key] = why
            print(f"SKIP {c.label}: {why}", file=sys.stderr)
            continue
        timer, ns = make_timer(c)
        timers[c.key] = timer
        keep.append(ns)
    active = [c for c in chosen if c.key in timers]
    samples: Dict[str, List[float]] = {c.key: [] for c in active}

    # Warm-up round (untimed) at a tenth of the size.
    for c in active:
        timers[c.key].timeit(max(1, pairs // 10))

    t_start = time.perf_counter()
    n = len(active)
    for r in range(rounds):
        t_round = time.perf_counter()
        for i in range(n):
            c = active[(r + i) % n]          # rotate the starting contender
            secs = timers[c.key].timeit(pairs)  # timeit disables gc meanwhile
            samples[c.key].append(secs / pairs * 1e9)
        print(f"round {r + 1}/{rounds}: {time.perf_counter() - t_round:.2f} s", file=sys.stderr)
    elapsed = time.perf_counter() - t_start

    results: Dict[str, Any] = {}
    base = samples.get(BASELINE)
    ours = samples.get(OURS_READ)
    for c in active:
        s = samples[c.key]
        entry: Dict[str, Any] = {
            "label": c.label,
            "group": c.group,
            "samples_ns": [round(x, 2) for x in s],
            "median_ns": statistics.median(s),
            "p25_ns": _q(s, 0.25),
            "p75_ns": _q(s, 0.75),
            "min_ns": min(s),
        }
        if base is not None:
            entry["ratio_vs_threading_lock"] = _paired_ratio(s, base)
        if c.peer and ours is not None:
            entry["ours_faster_x"] = _paired_ratio(s, ours)
        results[c.key] = entry

    return {
        "benchmark": "py_lock_pairs",
        "unit": "ns per uncontended lock+unlock pair",
        "rounds": rounds,
        "pairs_per_sample": pairs,
        "ratio_method": "median over rounds of the per-round ratio (paired, same round)",
        "elapsed_s": elapsed,
        "meta": {
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "versions": _versions(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "results": results,
        "skipped": skipped,
    }


# -- report -----------------------------------------------------------------------

def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def report(out: Dict[str, Any]) -> str:
    res = out["results"]
    lines = [
        f"Uncontended lock+unlock pairs, ns/pair: median of {out['rounds']} alternated rounds "
        f"x {out['pairs_per_sample']:,} pairs",
        f"Python {out['meta']['python']} on {out['meta']['platform']}, "
        f"{out['meta']['cpus']} CPUs; ratios are paired per round, then the median.",
        "",
    ]
    head = (f"{'contender':<42} {'median':>8} {'p25-p75':>15} {'vs Lock':>8}  "
            f"{'ours (read pair) is'}")
    lines += [head, "-" * len(head)]
    for key, e in res.items():
        spread = f"{e['p25_ns']:.1f}-{e['p75_ns']:.1f}"
        vs = f"{e['ratio_vs_threading_lock']:.2f}x" if "ratio_vs_threading_lock" in e else "-"
        faster = f"{e['ours_faster_x']:.1f}x faster" if "ours_faster_x" in e else ""
        lines.append(f"{e['label']:<42} {e['median_ns']:>8.1f} {spread:>15} {vs:>8}  {faster}".rstrip())
    for key, why in out["skipped"].items():
        label = next(c.label for c in CONTENDERS if c.key == key)
        lines.append(f"{label:<42} {'skipped':>8}  ({why})")

    lines += ["", "Against the targets of benchmarks/README.md (informational; this script "
                  "always exits 0):"]
    if OURS_READ in res and "ratio_vs_threading_lock" in res[OURS_READ]:
        r = res[OURS_READ]["ratio_vs_threading_lock"]
        lines.append(f"  read pair vs threading.Lock: {r:.2f}x (no target: see the cffi floor)")
    if "cffi-floor" in res and "ratio_vs_threading_lock" in res["cffi-floor"]:
        r = res["cffi-floor"]["ratio_vs_threading_lock"]
        lines.append(f"  cffi floor vs threading.Lock: {r:.2f}x "
                     f"(no target: two cffi calls, each releasing and retaking the GIL)")
        if OURS_READ in res:
            w = _paired_ratio(res[OURS_READ]["samples_ns"], res["cffi-floor"]["samples_ns"])
            lines.append(f"  read pair vs cffi floor (wrapper cost): {w:.2f}x")
    if "mmap-read" in res and "mmap-cffi-floor" in res:
        w = _paired_ratio(res["mmap-read"]["samples_ns"], res["mmap-cffi-floor"]["samples_ns"])
        lines.append(f"  mmap_read_lock pair vs its cffi floor: {w:.2f}x (target <= 1.45x): "
                     f"{_verdict(w <= 1.45)}")
    for key, e in res.items():
        if "ours_faster_x" in e:
            x = e["ours_faster_x"]
            lines.append(f"  vs {e['label']}: ours {x:.1f}x faster (target >= 3.5x): "
                         f"{_verdict(x >= 3.5)}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="alternated rounds (default 15)")
    ap.add_argument("--pairs", type=int, default=100_000,
                    help="pairs timed per contender per round (default 100000)")
    ap.add_argument("--json", metavar="PATH", help="also write the raw samples and results here")
    ap.add_argument("--only", metavar="KEY", action="append",
                    choices=[c.key for c in CONTENDERS],
                    help="run only this contender (repeatable); keys: "
                         + ", ".join(c.key for c in CONTENDERS))
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.pairs < 1:
        ap.error("--rounds and --pairs must be >= 1")

    gc.collect()
    out = run(args.rounds, args.pairs, args.only)
    print(report(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
