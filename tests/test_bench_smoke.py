"""The benchmark command runs end to end at a tiny size, and its report maths holds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from bench import report

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.process
@pytest.mark.django_db
@pytest.mark.timeout(600)
def test_bench_runs_every_workload_at_tiny_n(tmp_path: Path) -> None:
    out = tmp_path / "bench.jsonl"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }
    env.pop("HOTMESH_DATABASE_NAME", None)
    cmd = [
        sys.executable,
        str(ROOT / "manage.py"),
        "hotmesh_bench",
        "--n-w1",
        "40",
        "--n-w2",
        "8",
        "--n-w3",
        "3",
        "--n-timers",
        "3",
        "--runs",
        "1",
        "--processes",
        "2",
        "--concurrency",
        "2",
        "--claim-backlogs",
        "100,1000",
        "--claim-calls",
        "10",
        "--pglimit",
        "--pglimit-clients",
        "1",
        "--pglimit-duration",
        "1",
        "--database",
        f"hotmesh_bench_smoke_{os.getpid()}",
        "--drop-database",
        "--json",
        str(out),
        "--out-dir",
        str(tmp_path),
        "--markdown",
    ]
    proc = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=540, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    records = [json.loads(line) for line in out.read_text().splitlines()]
    ours = {r["workload"]: r for r in records if r.get("system") == "hotmesh_django"}
    assert set(ours) == {"W1", "W2", "W3", "TIMERS", "CLAIM", "RSS"}
    assert ours["W1"]["n"] == 40
    assert ours["W1"]["enqueue_jobs_per_s"] > 0 and ours["W1"]["drain_jobs_per_s"] > 0
    assert ours["W2"]["workflows_per_s"] > 0
    assert ours["W2"]["steps_per_s"] == pytest.approx(3 * ours["W2"]["workflows_per_s"], rel=0.01)
    assert 0 < ours["W2"]["p50_ms"] <= ours["W2"]["p95_ms"]
    assert ours["W3"]["samples"] == 3 and ours["W3"]["p50_ms"] > 0
    # A timer cannot fire before it is due.
    assert ours["TIMERS"]["samples"] == 3 and ours["TIMERS"]["fire_p50_ms"] >= 0
    claims = [r for r in records if r.get("workload") == "CLAIM"]
    assert sorted(r["backlog"] for r in claims) == [100, 1000]
    big = max(claims, key=lambda r: r["backlog"])  # a tiny table may rightly be seq-scanned
    assert not big["seq_scan_on_stream"] and "hotmesh_stream_ready_idx" in big["indexes"], big
    assert 0 < ours["RSS"]["idle_mb"] < 500
    limits = [r for r in records if r.get("bench") == "pglimit" and r["workload"] != "pickup"]
    assert {r["workload"] for r in limits} == {
        "insert1",
        "claim1",
        "claim100",
        "engine100",
        "contract100",
        "stream100",
    }
    assert all(r.get("rows_per_s", 0) > 0 for r in limits), limits
    floor = [r for r in records if r.get("workload") == "pickup"]
    assert len(floor) == 1 and floor[0]["samples"] == 3, floor
    assert 0 < floor[0]["p50_ms"] <= floor[0]["p95_ms"]

    # The claim backlog's planner statistics stay out of the workloads' database: the
    # claim test fills a database of its own, and --drop-database drops both.
    name = f"hotmesh_bench_smoke_{os.getpid()}"
    assert f"database {name}_claim: migrating" in proc.stdout + proc.stderr
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{name}%"])
        assert cursor.fetchall() == []

    assert "W1 drain, jobs/s" in proc.stdout
    assert "| metric | hotmesh_django |" in proc.stdout  # the markdown table
    # With DATABASE_URL set the command line shows it first (password masked).
    assert re.search(r"Command: `(DATABASE_URL=\S+ )?python ", proc.stdout), proc.stdout[-500:]


def test_report_takes_each_peers_best_setting_and_the_ratios() -> None:
    ours = [
        {
            "system": "hotmesh_django",
            "workload": "W1",
            "run": i,
            "enqueue_jobs_per_s": 1000.0,
            "drain_jobs_per_s": v,
        }
        for i, v in enumerate([3000.0, 2400.0, 2600.0])
    ]
    ours += [{"system": "hotmesh_django", "workload": "W3", "run": 0, "p50_ms": 2.0, "p95_ms": 4.0}]
    peers = [
        {"system": "dbos", "workload": "W1", "setting": "default", "drain_jobs_per_s": 900.0},
        {"system": "dbos", "workload": "W1", "setting": "tuned", "drain_jobs_per_s": 1200.0},
        {
            "system": "procrastinate",
            "workload": "W1",
            "setting": "default",
            "drain_jobs_per_s": 400.0,
        },
        {
            "system": "procrastinate",
            "workload": "W3",
            "setting": "default",
            "p50_ms": 6.0,
            "p95_ms": 9.0,
        },
    ]
    pglimit = [
        {"bench": "pglimit", "workload": "claim100", "clients": c, "rows_per_s": v}
        for c, v in [(1, 4000.0), (2, 5200.0), (2, 5000.0)]
    ]
    pglimit += [
        {"bench": "pglimit", "workload": "pickup", "clients": 1, "p50_ms": v, "p95_ms": 2 * v}
        for v in (1.0, 1.6, 1.2)
    ]
    pglimit += [
        {"bench": "pglimit", "workload": w, "clients": 2, "rows_per_s": v}
        for w, v in [("engine100", 3250.0), ("stream100", 2550.0)]
    ]
    built = report.build(ours, peers, pglimit)
    rows = {r.label: r for r in built.rows}

    drain = rows["W1 drain, jobs/s"]
    assert drain.ours is not None and drain.ours.median == 2600.0
    assert (drain.ours.low, drain.ours.high) == (2400.0, 3000.0)
    assert drain.peers["dbos"][1] == "tuned"  # the best of its settings
    assert drain.best_peer is not None and drain.best_peer[0] == "dbos"
    assert drain.vs_best == "2.17x"
    # 2600 / median of the 2-client claim100 runs (5100), then / engine100 (3250).
    assert drain.vs_limit == "0.51x; 0.80x"
    assert "3,250 (engine100: our SQL, no Python, 2)" in drain.limit
    assert any(
        n.startswith("Data model (stream100") and "2,550 jobs/s with 2 clients, 0.50x" in n
        for n in built.notes
    ), built.notes
    assert drain.target.startswith("PASS >=2x best peer")

    pickup = rows["W3 idle pickup p50, ms"]
    assert pickup.best_peer is not None and pickup.best_peer[0] == "procrastinate"
    assert pickup.vs_best == "0.33x"
    assert pickup.target == "PASS < 3 ms"
    assert pickup.vs_limit == "1.67x"  # 2.0 / the floor's median p50 (1.2)
    assert rows["W3 idle pickup p95, ms"].vs_limit == "1.67x"  # 4.0 / 2.4
    assert built.peer_systems == ["procrastinate", "dbos"]


def test_outside_the_repository_the_command_says_what_it_needs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Installed from a wheel there is no bench/ package: help still works, and
    running it is a CommandError that says why, not a ModuleNotFoundError."""
    from django.core.management import CommandError, ManagementUtility, call_command

    for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "bench", None)  # import bench -> ImportError
    ManagementUtility(["manage.py", "help", "hotmesh_bench"]).execute()
    assert "usage: manage.py hotmesh_bench" in capsys.readouterr().out
    with pytest.raises(CommandError, match="checkout of the hotmesh_django repository"):
        call_command("hotmesh_bench")
