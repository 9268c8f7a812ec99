"""The workload runner and ``python -m mmap_lock_native bench``: the runner's
accounting, the CLI's JSON, its errors, and a short run of the default suite.

Throughput is never asserted here (benchmarks measure it); only that the
counts are right and the output is complete."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from mmap_lock_native import bench

SHORT = dict(duration=0.2, warmup=0.05)


def _run(workload: str, threads: int = 2, **kw: Any) -> Dict[str, Any]:
    kw = {**SHORT, **kw}
    r = bench.run_one(workload, threads, **kw)
    assert r["errors"] == 0, r
    assert r["ops_all"] >= r["ops_total"] > 0, r
    return r


def test_page_fault1_counts_one_op_per_page_written():
    """Each op is one guest write, so one read-lock acquisition."""
    r = _run("page_fault1", region_bytes=1 << 20)
    assert r["read_acquisitions"] == r["ops_all"]
    # Each mapping takes the write lock twice (mmap, munmap), and mapping
    # stops only between pages: at most one unfinished mapping per thread.
    mappings = r["write_acquisitions"] // 2
    assert r["write_acquisitions"] % 2 == 0
    assert (mappings - 2) * 256 <= r["ops_all"] <= mappings * 256


def test_mmap1_counts_one_op_per_map_unmap_pair():
    """Each op is an mmap and a munmap: two write-lock acquisitions."""
    r = _run("mmap1", region_bytes=1 << 20)
    assert r["write_acquisitions"] == 2 * r["ops_all"]
    assert r["read_acquisitions"] == 0


def test_fault_mix_counts_faults_and_remaps():
    """Ops are faults (read lock) or re-maps (munmap + mmap: two write locks);
    the set-up maps each VMA once and the clean-up unmaps them together."""
    vmas = 8
    r = _run("fault_mix", mix_vmas=vmas, mix_pages=16, remap_share=0.01)
    remaps, rest = divmod(r["write_acquisitions"] - vmas - 1, 2)
    assert rest == 0
    assert r["read_acquisitions"] + remaps == r["ops_all"]
    assert remaps > 0


def test_maps_reader_counts_the_reader_apart():
    """The extra thread's maps reads are counted apart from the faults."""
    r = _run("maps_reader", region_bytes=1 << 20)
    assert r["maps_reads"] > 0
    assert r["read_acquisitions"] == r["ops_all"] + r["maps_reads"]


@pytest.mark.parametrize("kw,msg", [
    (dict(workload="nope", threads=1), "unknown workload"),
    (dict(workload="mmap1", threads=0), "threads must be"),
    (dict(workload="mmap1", threads=1, lock="nope"), "unknown lock"),
])
def test_run_one_rejects_bad_arguments(kw, msg):
    """Bad arguments are refused with a message naming the problem."""
    with pytest.raises(ValueError, match=msg):
        bench.run_one(**kw)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmap_lock_native", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_cli_json_has_the_machine_and_every_figure(tmp_path):
    """--json writes {"machine": {...}, "results": [...]} with each run's figures."""
    out = tmp_path / "bench.json"
    p = _cli("bench", "--workload", "mmap1", "--workload", "fault_mix", "--threads", "1,2",
             "--lock", "rwsem", "--duration", "0.2", "--warmup", "0.05", "--region-mib", "1",
             "--json", str(out))
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert {"cpus", "cpu_model", "platform", "python", "load_average"} <= set(data["machine"])
    results: List[Dict[str, Any]] = data["results"]
    assert [(r["workload"], r["threads"]) for r in results] == [
        ("mmap1", 1), ("mmap1", 2), ("fault_mix", 1), ("fault_mix", 2)]
    for r in results:
        assert r["lock"] == "rwsem"
        assert r["ops_per_sec"] > 0 and r["errors"] == 0
        for key in ("scaling", "wait_p50_ns", "wait_p99_ns", "wait_max_ns",
                    "samples_ops_per_sec", "acquisitions", "contended"):
            assert key in r, key
    assert [r["scaling"] for r in results if r["threads"] == 1] == [1.0, 1.0]
    # The table went to stdout, progress to stderr.
    assert "workload" in p.stdout and "mmap1" in p.stdout
    assert "[1/4]" in p.stderr


@pytest.mark.parametrize("args,msg", [
    (["bench", "--threads", "0"], "--threads"),
    (["bench", "--threads", "a,b"], "--threads"),
    (["bench", "--workload", "nope"], "invalid choice"),
    (["bench", "--lock", "nope"], "invalid choice"),
    (["bench", "--duration", "-1"], "must be > 0"),
    (["bench", "--region-mib", "0.0001"], "smaller than a page"),
    (["frobnicate"], "unknown command"),
])
def test_cli_bad_arguments_exit_2_with_a_message(args, msg):
    """Bad arguments: exit status 2 and a message saying what is wrong."""
    p = _cli(*args)
    assert p.returncode == 2
    assert msg in p.stderr


def test_cli_plot_without_matplotlib_says_what_to_install(tmp_path):
    """--plot draws with matplotlib, or says clearly how to get it."""
    try:
        import matplotlib  # noqa: F401
        have = True
    except ImportError:
        have = False
    png = tmp_path / "p.png"
    p = _cli("bench", "--workload", "mmap1", "--threads", "1", "--duration", "0.1",
             "--warmup", "0.05", "--region-mib", "1", "--plot", str(png))
    if have:
        assert p.returncode == 0 and png.stat().st_size > 0
    else:
        assert p.returncode != 0
        assert "matplotlib" in p.stderr and "pip install" in p.stderr


def test_default_suite_smoke():
    """The default suite (every workload on every lock, 1 and 2 threads) runs end to end."""
    p = _cli("bench", "--duration", "0.2", "--warmup", "0.05", "--region-mib", "2")
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.splitlines()[2:] if line and line[0] != "("]
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (w, lk, t) for w in bench.WORKLOADS for lk in bench.LOCKS for t in ("1", "2")}
