"""``LockStats``: a snapshot of one mm's lock statistics.

Kept by the C core per thread (no shared cache line is written on the read
path) and summed when read.  Wait times are those of contended acquisitions;
an uncontended acquisition waited 0 ns.  Hold times are sampled, one
acquisition in ``hold_sampling_period`` per thread (``MM.set_hold_sampling``).
Histograms are log2 buckets of nanoseconds: bucket 0 is [0, 2) ns, bucket k
is [2**k, 2**(k+1)) ns.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List

from ._ffi import ffi, lib

if TYPE_CHECKING:  # pragma: no cover
    from .mm import MM

__all__ = ["LockStats", "HIST_BUCKETS"]

#: Number of log2 buckets in each histogram.
HIST_BUCKETS: int = lib.MMAP_LOCK_HIST_BUCKETS

_MODES = ("read", "write")
_BAR = 40


def _bucket_label(k: int) -> str:
    """'[16ns, 32ns)' style label of log2 bucket k."""
    lo = 0 if k == 0 else 1 << k
    hi = 2 if k == 0 else 1 << (k + 1)
    return f"{_ns(lo)}..{_ns(hi)}"


def _ns(v: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.0f}ns"


class LockStats:
    """Lock statistics of one mm since its last reset (a snapshot).

    Attributes are plain ints; histograms are lists of ``HIST_BUCKETS``
    counts, indexed by mode (``wait_histogram["read"]``).  ``reset()``
    resets the mm's live counters (this snapshot keeps its values).
    """

    __slots__ = ("_mm", "read_acquisitions", "write_acquisitions", "read_contended",
                 "write_contended", "read_trylock_failures", "write_trylock_failures",
                 "read_killable_failures", "write_killable_failures", "read_timeouts",
                 "write_timeouts", "downgrades", "handoffs", "max_wait_ns",
                 "read_wait_ns_total", "write_wait_ns_total", "read_hold_ns_total",
                 "write_hold_ns_total", "read_hold_samples", "write_hold_samples",
                 "wait_histogram", "hold_histogram", "hold_sampling_period", "enabled",
                 "vma_lock_success", "vma_lock_abort", "vma_lock_retry", "vma_lock_miss",
                 "bravo_fast_reads", "bravo_revocations", "bravo_inhibit_ns")

    #: Successful acquisitions, and those of them that had to wait.
    read_acquisitions: int
    write_acquisitions: int
    read_contended: int
    write_contended: int
    #: Failed trylocks; killable waits ended by ``task_kill``; timed waits that expired.
    read_trylock_failures: int
    write_trylock_failures: int
    read_killable_failures: int
    write_killable_failures: int
    read_timeouts: int
    write_timeouts: int
    #: ``mmap_write_downgrade`` calls; locks handed to a starved waiter.
    downgrades: int
    handoffs: int
    #: Longest wait, also of waits that timed out or were killed.
    max_wait_ns: int
    #: Total wait of the contended acquisitions; total and count of the sampled holds.
    read_wait_ns_total: int
    write_wait_ns_total: int
    read_hold_ns_total: int
    write_hold_ns_total: int
    read_hold_samples: int
    write_hold_samples: int
    #: log2 histograms by mode: ``wait_histogram["read"][k]`` counts waits in bucket k.
    wait_histogram: Dict[str, List[int]]
    hold_histogram: Dict[str, List[int]]
    #: One hold in this many acquisitions (per thread) is timed.
    hold_sampling_period: int
    #: Whether the mm keeps statistics now.
    enabled: bool
    #: per_vma: faults handled under the VMA lock alone, and those that fell
    #: back to the mmap lock because the VMA was being changed (abort), the
    #: fault needed more (retry), or no VMA was found without the lock (miss).
    vma_lock_success: int
    vma_lock_abort: int
    vma_lock_retry: int
    vma_lock_miss: int
    #: bravo: reads on the biased fast path (also in ``read_acquisitions``),
    #: writers that revoked the bias, and the time re-biasing was inhibited.
    bravo_fast_reads: int
    bravo_revocations: int
    bravo_inhibit_ns: int

    def __init__(self, mm: "MM") -> None:
        from .mm import MM
        if not isinstance(mm, MM):
            raise TypeError(f"LockStats: mm must be an MM, not {type(mm).__name__}")
        snap = ffi.new("struct mmap_lock_stats_snapshot *")
        rc = lib.mmap_lock_stats_read(mm._mm, snap)
        if rc:  # pragma: no cover - only for a NULL mm
            raise OSError(-rc, f"mmap_lock_stats_read on {mm!r} failed")
        self._mm = mm
        self.read_acquisitions, self.write_acquisitions = snap.acquisitions
        self.read_contended, self.write_contended = snap.contended
        self.read_trylock_failures, self.write_trylock_failures = snap.trylock_failures
        self.read_killable_failures, self.write_killable_failures = snap.killable_failures
        self.read_timeouts, self.write_timeouts = snap.timeouts
        self.read_wait_ns_total, self.write_wait_ns_total = snap.wait_ns_total
        self.read_hold_ns_total, self.write_hold_ns_total = snap.hold_ns_total
        self.read_hold_samples, self.write_hold_samples = snap.hold_samples
        self.downgrades = snap.downgrades
        self.handoffs = snap.handoffs
        self.max_wait_ns = snap.max_wait_ns
        self.wait_histogram = {m: list(snap.wait_hist[i]) for i, m in enumerate(_MODES)}
        self.hold_histogram = {m: list(snap.hold_hist[i]) for i, m in enumerate(_MODES)}
        self.hold_sampling_period = 1 << snap.hold_sampling
        self.enabled = bool(snap.enabled)
        (self.vma_lock_success, self.vma_lock_abort, self.vma_lock_retry,
         self.vma_lock_miss) = (snap.vma_lock[lib.MMAP_VMA_LOCK_SUCCESS],
                                snap.vma_lock[lib.MMAP_VMA_LOCK_ABORT],
                                snap.vma_lock[lib.MMAP_VMA_LOCK_RETRY],
                                snap.vma_lock[lib.MMAP_VMA_LOCK_MISS])
        self.bravo_fast_reads = snap.bravo_fast_reads
        self.bravo_revocations = snap.bravo_revocations
        self.bravo_inhibit_ns = snap.bravo_inhibit_ns

    @property
    def trylock_failures(self) -> int:
        """Failed trylocks, both modes."""
        return self.read_trylock_failures + self.write_trylock_failures

    @property
    def killable_failures(self) -> int:
        """Killable waits ended by ``task_kill``, both modes."""
        return self.read_killable_failures + self.write_killable_failures

    def reset(self) -> None:
        """Zero the mm's counters, histograms and maximum (not this snapshot)."""
        self._mm.reset_lock_stats()

    def as_dict(self) -> Dict[str, object]:
        """Every figure under a flat key; histograms as ``<kind>_hist_<mode>`` lists."""
        out: Dict[str, object] = {name: getattr(self, name) for name in self.__slots__
                                  if name not in ("_mm", "wait_histogram", "hold_histogram")}
        out["trylock_failures"] = self.trylock_failures
        out["killable_failures"] = self.killable_failures
        for mode in _MODES:
            out[f"wait_hist_{mode}"] = list(self.wait_histogram[mode])
            out[f"hold_hist_{mode}"] = list(self.hold_histogram[mode])
        return out

    def _histogram_text(self, title: str, hist: List[int]) -> List[str]:
        used = [k for k, n in enumerate(hist) if n]
        if not used:
            return [f"  {title}: none"]
        lo, hi = used[0], used[-1]
        peak = max(hist)
        lines = [f"  {title}:"]
        for k in range(lo, hi + 1):
            n = hist[k]
            bar = "#" * (round(_BAR * n / peak) if n else 0)
            if n and not bar:
                bar = "."
            lines.append(f"    {_bucket_label(k):>15} {n:>10} {bar}")
        return lines

    def __str__(self) -> str:
        lines = [f"lock statistics of {self._mm!r}"
                 + ("" if self.enabled else " (statistics are off)")]
        for mode in _MODES:
            acq = getattr(self, f"{mode}_acquisitions")
            cont = getattr(self, f"{mode}_contended")
            share = f" ({100.0 * cont / acq:.1f}%)" if acq else ""
            lines.append(
                f" {mode}: {acq} acquired, {cont} contended{share}, "
                f"{getattr(self, f'{mode}_trylock_failures')} trylock failures, "
                f"{getattr(self, f'{mode}_killable_failures')} killed, "
                f"{getattr(self, f'{mode}_timeouts')} timed out")
            lines += self._histogram_text(f"wait, contended only ({acq - cont} uncontended "
                                          f"waited 0)", self.wait_histogram[mode])
            lines += self._histogram_text(
                f"hold, 1 in {self.hold_sampling_period} sampled "
                f"({getattr(self, f'{mode}_hold_samples')} samples)",
                self.hold_histogram[mode])
        lines.append(f" downgrades {self.downgrades}, handoffs {self.handoffs}, "
                     f"max wait {_ns(self.max_wait_ns)}")
        vma = (self.vma_lock_success, self.vma_lock_abort, self.vma_lock_retry,
               self.vma_lock_miss)
        if any(vma):
            lines.append(" per-VMA lock: {} success, {} abort, {} retry, {} miss".format(*vma))
        if self.bravo_fast_reads or self.bravo_revocations:
            lines.append(f" bravo: {self.bravo_fast_reads} fast reads, "
                         f"{self.bravo_revocations} revocations, "
                         f"{_ns(self.bravo_inhibit_ns)} inhibited")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<LockStats read={self.read_acquisitions}/{self.read_contended} "
                f"write={self.write_acquisitions}/{self.write_contended} "
                f"max_wait_ns={self.max_wait_ns}>")
