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

from mmap_lock_native import bench, bench_cli

SHORT = dict(duration=0.2, warmup=0.05)


def reads(r: Dict[str, Any]) -> int:
    """Read-side acquisitions: of the mmap lock, and (per_vma) faults done
    under a VMA lock alone; every other per-VMA outcome fell back to the
    mmap lock and is counted there."""
    return r["read_acquisitions"] + r["vma_lock_success"]


def _run(workload: str, threads: int = 2, **kw: Any) -> Dict[str, Any]:
    kw = {**SHORT, **kw}
    r = bench.run_one(workload, threads, **kw)
    assert r["errors"] == 0, r
    assert r["ops_all"] >= r["ops_total"] > 0, r
    return r


@pytest.fixture(params=bench.LOCKS)
def lock(request):
    return request.param


def test_page_fault1_counts_one_op_per_page_written(lock):
    """Each op is one guest write, so one read-side acquisition."""
    r = _run("page_fault1", region_bytes=1 << 20, lock=lock)
    assert reads(r) == r["ops_all"]
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


@pytest.mark.parametrize("workload,vmas", [("fault_mix", 8), ("fault_private", 2 * 8)])
def test_fault_workloads_count_faults_and_remaps(lock, workload, vmas):
    """Ops are faults (read side) or re-maps (munmap + mmap: two write locks);
    the set-up maps each VMA once (fault_private: 8 per thread) and the
    clean-up unmaps them together."""
    r = _run(workload, mix_vmas=8, mix_pages=16, remap_share=0.01, lock=lock)
    remaps, rest = divmod(r["write_acquisitions"] - vmas - 1, 2)
    assert rest == 0
    assert reads(r) + remaps == r["ops_all"]
    assert remaps > 0
    if workload == "fault_private":
        assert r["segv"] == 0          # nobody re-maps another thread's VMAs


def test_fault_read_never_remaps(lock):
    """fault_read takes the write lock only to set up and to clean up."""
    r = _run("fault_read", mix_vmas=8, mix_pages=16, remap_share=0.5, lock=lock)
    assert r["write_acquisitions"] == 8 + 1
    assert reads(r) == r["ops_all"]
    assert r["segv"] == 0


def test_design_figures_say_what_the_design_did():
    """per_vma reports its fallbacks, bravo its fast reads and revocations."""
    r = _run("fault_mix", mix_vmas=8, mix_pages=16, remap_share=0.01, lock="per_vma")
    assert r["vma_lock_success"] > 0 and 0 <= r["vma_lock_fallback_share"] < 1
    r = _run("fault_mix", mix_vmas=8, mix_pages=16, remap_share=0.01, lock="bravo")
    assert r["bravo_fast_reads"] > 0 and r["bravo_revocations"] > 0
    assert 0 < r["bravo_fast_share"] <= 1
    r = _run("fault_mix", mix_vmas=8, mix_pages=16, remap_share=0.01, lock="rwsem")
    assert r["vma_lock_fallback_share"] is None and r["bravo_fast_share"] is None


def test_context_switches_and_cpu_count_every_thread():
    """getrusage(RUSAGE_SELF) covers all the runner's threads: two busy
    threads use more than one CPU's worth only if both are counted (the
    main thread, asleep meanwhile, adds almost nothing)."""
    r = _run("fault_read", threads=2, mix_vmas=8, mix_pages=16)
    assert r["cpu_percent"] is not None and r["cpu_percent"] > 20
    assert r["ctx_switches"] >= 0 and r["ctx_switches_per_kop"] is not None


def test_the_control_computes_without_a_lock():
    """The pure-compute control counts ops and takes no lock."""
    c = bench.run_control(2, duration=0.3, warmup=0.05)
    assert c["workload"] == bench.CONTROL and c["lock"] is None
    # Counted over the whole run: on a loaded machine one sample window may be starved.
    assert c["ops_all"] > 0 and c["errors"] == 0


def test_maps_reader_counts_the_reader_apart(lock):
    """The extra thread's maps reads are counted apart from the faults."""
    r = _run("maps_reader", region_bytes=1 << 20, lock=lock)
    assert r["maps_reads"] > 0 and r["extra_threads"] == 1
    assert reads(r) == r["ops_all"] + r["maps_reads"]


@pytest.mark.parametrize("kw,msg", [
    (dict(workload="nope", threads=1), "unknown workload"),
    (dict(workload="mmap1", threads=0), "threads must be"),
    (dict(workload="mmap1", threads=1, lock="nope"), "unknown lock"),
    (dict(workload="mmap1", threads=1, duration=0), "duration"),
    (dict(workload="fault_mix", threads=1, remap_share=2), "remap_share"),
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
             "--no-control", "--json", str(out))
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


def test_cli_takes_comma_lists_and_runs_the_control(tmp_path):
    """--workload and --lock take comma lists (as --threads does); the compute
    control runs at each thread count and is reported above the table."""
    out = tmp_path / "b.json"
    p = _cli("bench", "--workload", "fault_read,mmap1", "--lock", "per_vma,bravo",
             "--threads", "2,1", "--duration", "0.2", "--warmup", "0.05", "--region-mib", "1",
             "--json", str(out))
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert [(c["threads"], c["workload"]) for c in data["controls"]] == [(1, "compute"),
                                                                          (2, "compute")]
    assert {(r["workload"], r["lock"], r["threads"]) for r in data["results"]} == {
        (w, lk, t) for w in ("fault_read", "mmap1") for lk in ("per_vma", "bravo")
        for t in (1, 2)}
    assert "control (pure compute" in p.stdout


def test_cli_scaling_is_null_without_a_one_thread_run(tmp_path):
    """Without 1 in --threads there is nothing to scale against: null, and said."""
    out = tmp_path / "b.json"
    p = _cli("bench", "--workload", "mmap1", "--lock", "rwsem", "--threads", "2",
             "--duration", "0.2", "--warmup", "0.05", "--region-mib", "1", "--no-control",
             "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())["results"][0]["scaling"] is None
    assert "add 1 to --threads" in p.stdout


def test_cli_maps_reader_row_names_its_extra_thread():
    """maps_reader's row shows the counted threads and the reader: 1+1."""
    p = _cli("bench", "--workload", "maps_reader", "--lock", "rwsem", "--threads", "1",
             "--duration", "0.2", "--warmup", "0.05", "--region-mib", "1", "--no-control")
    assert p.returncode == 0, p.stderr
    assert " 1+1 " in p.stdout


def test_a_run_with_failed_operations_says_so_and_exits_1(monkeypatch, capsys):
    """Failed operations are never throughput: the errors column shows them and
    the command exits 1 with a message."""
    real = bench.run_one

    def failing(*a: Any, **kw: Any) -> Dict[str, Any]:
        r = real(*a, **kw)
        r["errors"] = 7
        return r

    monkeypatch.setattr(bench, "run_one", failing)
    rc = bench_cli.main(["--workload", "mmap1", "--lock", "rwsem", "--threads", "1",
                         "--duration", "0.1", "--warmup", "0.05", "--region-mib", "1",
                         "--no-control"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "failed operations" in err
    row = [line for line in out.splitlines() if line.startswith("mmap1")][0]
    assert " 7 " in row


def test_runner_counts_no_failed_operation_as_throughput():
    """Under an address-space limit page_fault1's faults fail (ENOMEM): no
    failed op is counted as throughput, and every failure is counted."""
    script = (
        "import json, resource\n"
        "from mmap_lock_native import bench\n"
        "size = [int(line.split()[1]) for line in open('/proc/self/status')\n"
        "        if line.startswith('VmSize:')][0] * 1024\n"
        "room = size + (64 << 20)          # room for 16k pages, and the runner's threads\n"
        "resource.setrlimit(resource.RLIMIT_AS, (room, room))\n"
        "r = bench.run_one('page_fault1', 1, duration=0.3, warmup=0.05, region_bytes=1 << 30)\n"
        "print(json.dumps([r['errors'], r['ops_all']]))\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    errors, ops = json.loads(p.stdout.strip().splitlines()[-1])
    assert errors > 0
    # Only the pages that fitted (some tens of MiB; a counted failure would
    # make this the whole 1 GiB mapping's 262144 pages, and more).
    assert ops < (256 << 20) // 4096


def test_cli_embed_writes_each_guest_workload_with_its_ratio(tmp_path):
    """--embed runs the three guest workloads on the adapter and on plain
    Unicorn; the JSON rows carry both throughputs and ratio_vs_plain."""
    try:
        import unicorn  # noqa: F401
    except Exception as exc:  # noqa: B902 - missing, or a wheel whose library will not load
        pytest.skip(f"bench --embed needs the unicorn package (pip install "
                    f"'mmap-lock-native[unicorn]'): {type(exc).__name__}: {exc}")
    out = tmp_path / "embed.json"
    p = _cli("bench", "--embed", "--rounds", "1", "--json", str(out))
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())["results"]
    assert [r["workload"] for r in rows] == ["embed_page_fault1", "embed_steady", "embed_mmap1"]
    for r in rows:
        assert r["ops_per_sec"] > 0 and r["plain_ops_per_sec"] > 0
        assert r["ratio_vs_plain"] == pytest.approx(r["ops_per_sec"] / r["plain_ops_per_sec"])
    assert "ratio" in p.stdout


def test_cli_embed_refuses_zero_rounds():
    p = _cli("bench", "--embed", "--rounds", "0")
    assert p.returncode == 2 and ("--rounds" in p.stderr or "unicorn" in p.stderr)
