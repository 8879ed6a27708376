"""Turn per-run records into the comparison table: median (min-max) and ratios."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

Record = dict[str, Any]
OURS = "hotmesh_django"
PEER_ORDER = ("procrastinate", "django-tasks-db", "dbos", "absurd")


@dataclasses.dataclass(frozen=True)
class Stat:
    median: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        def fmt(x: float) -> str:
            a = abs(self.median)
            if a >= 100:
                return f"{x:,.0f}"
            if a >= 10:
                return f"{x:,.1f}"
            return f"{x:,.2f}"

        if self.n == 1:
            return fmt(self.median)
        return f"{fmt(self.median)} ({fmt(self.low)}-{fmt(self.high)})"


def stat(values: Iterable[Any]) -> Stat | None:
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    return Stat(statistics.median(xs), min(xs), max(xs), len(xs))


@dataclasses.dataclass(frozen=True)
class Metric:
    label: str
    workload: str
    field: str
    higher_is_better: bool
    # Only the records of this claim backlog; None keeps every record of the workload.
    backlog: int | None = None
    peers: bool = True  # whether peers report this figure


def _metrics(ours: Sequence[Record]) -> list[Metric]:
    metrics = [
        Metric("W1 enqueue, jobs/s (1 call per tx)", "W1", "enqueue_jobs_per_s", True),
        Metric("W1 drain, jobs/s", "W1", "drain_jobs_per_s", True),
        Metric("W2 workflows/s (3 steps)", "W2", "workflows_per_s", True),
        Metric("W2 steps/s", "W2", "steps_per_s", True),
        Metric("W2 latency p50, ms", "W2", "p50_ms", False),
        Metric("W2 latency p95, ms", "W2", "p95_ms", False),
        Metric("W3 idle pickup p50, ms", "W3", "p50_ms", False),
        Metric("W3 idle pickup p95, ms", "W3", "p95_ms", False),
        Metric("Timer lateness p50, ms (next step starts)", "TIMERS", "p50_ms", False, peers=False),
        Metric("Timer lateness p95, ms (next step starts)", "TIMERS", "p95_ms", False, peers=False),
        Metric(
            "Timer fire lateness p95, ms (timer turn)", "TIMERS", "fire_p95_ms", False, peers=False
        ),
    ]
    backlogs = sorted({r["backlog"] for r in ours if r["workload"] == "CLAIM"})
    for b in backlogs:
        metrics.append(
            Metric(
                f"Claim 1 row p50, ms, backlog {b:,}",
                "CLAIM",
                "claim1_p50_ms",
                False,
                backlog=b,
                peers=False,
            )
        )
    for b in backlogs:
        metrics.append(
            Metric(
                f"Claim EXPLAIN ANALYZE, ms, backlog {b:,}",
                "CLAIM",
                "explain_exec_ms",
                False,
                backlog=b,
                peers=False,
            )
        )
    metrics += [
        Metric("Worker RSS idle, MB", "RSS", "idle_mb", False, peers=False),
        Metric("Worker RSS after W1, MB", "RSS", "after_w1_mb", False, peers=False),
        Metric("Worker RSS after W2, MB", "RSS", "after_w2_mb", False, peers=False),
        Metric(
            "Worker RSS growth, 2nd W1+W2 round, MB",
            "RSS",
            "growth_second_round_mb",
            False,
            peers=False,
        ),
    ]
    return metrics


def _select(records: Sequence[Record], metric: Metric) -> list[Record]:
    return [
        r
        for r in records
        if r.get("workload") == metric.workload
        and (metric.backlog is None or r.get("backlog") == metric.backlog)
    ]


def peer_best(peer_rows: Sequence[Record], metric: Metric) -> dict[str, tuple[Stat, str]]:
    """For each peer system: its best setting's median for `metric`, and that setting."""
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in peer_rows:
        if r.get("workload") == metric.workload and r.get(metric.field) is not None:
            groups[(r["system"], r.get("setting", ""))].append(r[metric.field])
    best: dict[str, tuple[Stat, str]] = {}
    for (system, setting), values in groups.items():
        s = stat(values)
        if s is None:
            continue
        cur = best.get(system)
        better = cur is None or (
            s.median > cur[0].median if metric.higher_is_better else s.median < cur[0].median
        )
        if better:
            best[system] = (s, setting)
    return best


def pglimit_table(records: Sequence[Record]) -> dict[tuple[str, int], Stat]:
    groups: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for r in records:
        if r.get("bench") == "pglimit" and "error" not in r and "rows_per_s" in r:
            groups[(r["workload"], r["clients"])].append(r["rows_per_s"])
    return {k: s for k, v in sorted(groups.items()) if (s := stat(v)) is not None}


def pglimit_best(limits: dict[tuple[str, int], Stat], workload: str) -> tuple[Stat, int] | None:
    found = [(s, c) for (w, c), s in limits.items() if w == workload]
    return max(found, key=lambda x: x[0].median) if found else None


@dataclasses.dataclass
class Row:
    label: str
    ours: Stat | None
    peers: dict[str, tuple[Stat, str]]
    best_peer: tuple[str, Stat] | None
    vs_best: str
    limit: str
    vs_limit: str
    target: str


def _ratio(a: float, b: float) -> str:
    if not b:
        return "-"
    r = a / b
    return f"{r:.3f}x" if r < 0.1 else f"{r:.2f}x"


def _target(metric: Metric, ours: Stat | None, row: Row, extra: dict[str, Any]) -> str:
    if ours is None:
        return ""
    m = ours.median

    def mark(ok: bool, text: str) -> str:
        return f"{'PASS' if ok else 'MISS'} {text}"

    if metric.field == "drain_jobs_per_s":
        parts = []
        if row.best_peer:
            parts.append(mark(m >= 2 * row.best_peer[1].median, ">=2x best peer"))
        batch = extra.get("claim100")
        if batch:
            parts.append(mark(m >= 0.5 * batch[0].median, ">=0.5x claim100 limit"))
        return "; ".join(parts) or ">=2x best peer, >=0.5x claim100 limit"
    if metric.field == "workflows_per_s":
        dbos = row.peers.get("dbos")
        return mark(m >= 2 * dbos[0].median, ">=2x DBOS") if dbos else ">=2x DBOS (no peer run)"
    if metric.workload == "W3" and metric.field == "p50_ms":
        return mark(m < 3, "< 3 ms")
    if metric.workload == "W3" and metric.field == "p95_ms":
        return mark(m < 10, "< 10 ms")
    if metric.workload == "TIMERS" and metric.field == "p95_ms":
        return mark(m < 50, "< 50 ms")
    if metric.field == "idle_mb":
        return mark(m < 80, "< 80 MB")
    if metric.field == "growth_second_round_mb":
        return mark(m <= 5, "no growth (<= 5 MB)")
    return ""


@dataclasses.dataclass
class Report:
    rows: list[Row]
    limits: dict[tuple[str, int], Stat]
    peer_systems: list[str]
    notes: list[str]


def build(
    ours: Sequence[Record],
    peer_rows: Sequence[Record],
    pglimit: Sequence[Record],
    peer_error: str | None = None,
) -> Report:
    limits = pglimit_table(pglimit)
    insert1 = limits.get(("insert1", 1))
    floor = [r for r in pglimit if r.get("workload") == "pickup" and "error" not in r]
    # W3's method on a bare LISTEN/NOTIFY queue (bench/pickup.py).
    pickup = {field: stat(r.get(field) for r in floor) for field in ("p50_ms", "p95_ms")}
    extra = {
        "claim100": pglimit_best(limits, "claim100"),
        "claim1": pglimit_best(limits, "claim1"),
        # Our own data model's bound (bench/bound.py).
        "engine100": pglimit_best(limits, "engine100"),
        "contract100": pglimit_best(limits, "contract100"),
        "stream100": pglimit_best(limits, "stream100"),
        # Enqueueing is one caller in a loop: compare it with one pgbench client.
        "insert1": (insert1, 1) if insert1 is not None else None,
    }
    systems = [s for s in PEER_ORDER if any(r.get("system") == s for r in peer_rows)]
    systems += sorted({r["system"] for r in peer_rows} - set(systems))
    rows = []
    notes: list[str] = []
    for metric in _metrics(ours):
        selected = _select(ours, metric)
        ours_stat = stat(r.get(metric.field) for r in selected)
        if ours_stat is None:
            continue
        peers = peer_best(peer_rows, metric) if metric.peers else {}
        best_peer = None
        if peers:
            name, (s, _setting) = (max if metric.higher_is_better else min)(
                peers.items(), key=lambda kv: kv[1][0].median
            )
            best_peer = (name, s)
        vs_best = _ratio(ours_stat.median, best_peer[1].median) if best_peer else "-"
        limit = vs_limit = "-"
        if metric.field == "drain_jobs_per_s" and extra["claim100"]:
            s, clients = extra["claim100"]
            limit = f"{s.median:,.0f} rows/s (claim100, {clients} clients)"
            vs_limit = _ratio(ours_stat.median, s.median)
            if extra["claim1"]:
                s1, c1 = extra["claim1"]
                limit += f"; {s1.median:,.0f} (claim1, {c1})"
                vs_limit += f"; {_ratio(ours_stat.median, s1.median)}"
            if extra["engine100"]:
                se, ce = extra["engine100"]
                limit += f"; {se.median:,.0f} (engine100: our SQL, no Python, {ce})"
                vs_limit += f"; {_ratio(ours_stat.median, se.median)}"
        elif metric.field == "enqueue_jobs_per_s" and extra["insert1"]:
            s, clients = extra["insert1"]
            limit = f"{s.median:,.0f} tx/s (insert1, 1 client)"
            vs_limit = _ratio(ours_stat.median, s.median)
        elif metric.workload == "W3" and (floor_stat := pickup.get(metric.field)):
            limit = f"{floor_stat} ms (bare LISTEN queue, 1 client)"
            vs_limit = _ratio(ours_stat.median, floor_stat.median)
        row = Row(metric.label, ours_stat, peers, best_peer, vs_best, limit, vs_limit, "")
        row.target = _target(metric, ours_stat, row, extra)
        rows.append(row)
    claim_rows = [r for r in ours if r.get("workload") == "CLAIM"]
    if claim_rows:
        backlogs = sorted({r["backlog"] for r in claim_rows})
        lo = stat(r["claim1_p50_ms"] for r in claim_rows if r["backlog"] == backlogs[0])
        hi = stat(r["claim1_p50_ms"] for r in claim_rows if r["backlog"] == backlogs[-1])
        # Only the big backlog matters: a tiny table may rightly be seq-scanned.
        big = [r for r in claim_rows if r["backlog"] == backlogs[-1]]
        seq = any(r.get("seq_scan_on_stream") for r in big)
        indexes = sorted({i for r in big for i in r.get("indexes", [])})
        if lo and hi:
            flat = hi.median <= 1.5 * lo.median and not seq
            rows.append(
                Row(
                    f"Claim cost {backlogs[-1]:,} / {backlogs[0]:,} backlog",
                    None,
                    {},
                    None,
                    "-",
                    "-",
                    "-",
                    f"{'PASS' if flat else 'MISS'} flat ({hi.median / lo.median:.2f}x; "
                    f"indexes {', '.join(indexes) or 'none'}{'; SEQ SCAN' if seq else ''})",
                )
            )
    if extra["claim100"]:
        claim100 = extra["claim100"][0].median
        for key, what in (
            ("contract100", "the least DESIGN.md's data model writes per job"),
            ("stream100", "the Stream table alone, before any Job, Activity or Journal row"),
        ):
            found = extra[key]
            if found is not None:
                st, cs = found
                notes.append(
                    f"Data model ({key}, {what}; bench/bound.py): {st.median:,.0f} jobs/s "
                    f"with {cs} clients, {_ratio(st.median, claim100)} of claim100."
                )
    engines = sorted({r["engine"] for r in ours if r.get("engine")})
    if len(engines) > 1:
        notes.append(
            f"The engine's source changed during this benchmark ({', '.join(engines)}):"
            " figures mix code versions."
        )
    noisy = [r for r in ours if (r.get("foreign_cpu_pct_before") or 0) > 25]
    if noisy:
        worst = max(r["foreign_cpu_pct_before"] for r in noisy)
        notes.append(
            f"Noise: {len(noisy)} of {len(ours)} runs started while other processes kept the "
            f"CPUs busy (up to {worst:.0f}% in the second before the run); those figures "
            "may be pessimistic."
        )
    for system in systems:
        used = sorted(
            {
                f"{r.get('workload')}: {r.get('setting')}"
                for r in peer_rows
                if r.get("system") == system
            }
        )
        notes.append(f"{system} settings measured (best shown): " + "; ".join(used))
    if peer_error:
        notes.append(f"Peers: {peer_error}")
    return Report(rows, limits, systems, notes)


def _peer_cell(row: Row, system: str) -> str:
    got = row.peers.get(system)
    return str(got[0]) if got else "-"


def _columns(report: Report) -> list[str]:
    return [
        "metric",
        OURS,
        *report.peer_systems,
        "best peer",
        "ours / best",
        "pgbench limit",
        "ours / limit",
        "target",
    ]


def _cells(report: Report, row: Row) -> list[str]:
    ours = str(row.ours) if row.ours is not None else ""
    best = f"{row.best_peer[0]} {row.best_peer[1].median:,.1f}" if row.best_peer else "-"
    return [
        row.label,
        ours,
        *[_peer_cell(row, s) for s in report.peer_systems],
        best,
        row.vs_best,
        row.limit,
        row.vs_limit,
        row.target,
    ]


def print_rich(report: Report, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width))
    table = Table(title=title, show_lines=False)
    for i, col in enumerate(_columns(report)):
        table.add_column(col, justify="left" if i in (0, len(_columns(report)) - 1) else "right")
    for row in report.rows:
        table.add_row(*_cells(report, row))
    console.print(table)
    if report.limits:
        lim = Table(title="pgbench limit, synchronous_commit=on: rows/s, median (min-max)")
        lim.add_column("script")
        clients = sorted({c for _, c in report.limits})
        for c in clients:
            lim.add_column(f"{c} clients", justify="right")
        for workload in sorted({w for w, _ in report.limits}):
            lim.add_row(workload, *[str(report.limits.get((workload, c), "-")) for c in clients])
        console.print(lim)
    for note in report.notes:
        console.print(f"[dim]{note}[/dim]")


def machine_info(server_version: str, peer_versions: dict[str, str]) -> dict[str, str]:
    import django
    import psycopg

    ram_gb = "?"
    model = platform.processor() or "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram_gb = f"{int(line.split()[1]) / 1024 / 1024:.1f} GB"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "CPU": f"{os.cpu_count()} x {model}",
        "RAM": ram_gb,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "Django": django.get_version(),
        "psycopg": psycopg.__version__,
        "PostgreSQL": server_version,
    }
    if peer_versions:
        info["Peers"] = ", ".join(f"{k} {v}" for k, v in sorted(peer_versions.items()))
    return info


def markdown(report: Report, info: dict[str, str], command: str) -> str:
    cols = _columns(report)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += [
        "| " + " | ".join(c.replace("|", "/") for c in _cells(report, r)) + " |"
        for r in report.rows
    ]
    out = [
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()),
        "",
        f"Command: `{command}`",
        "",
        *lines,
    ]
    if report.limits:
        clients = sorted({c for _, c in report.limits})
        out += [
            "",
            "pgbench limit (synchronous_commit on), rows/s, median (min-max):",
            "",
            "| script | " + " | ".join(f"{c} clients" for c in clients) + " |",
            "|---|" + "---|" * len(clients),
        ]
        for workload in sorted({w for w, _ in report.limits}):
            cells = [str(report.limits.get((workload, c), "-")) for c in clients]
            out.append(f"| {workload} | " + " | ".join(cells) + " |")
    if report.notes:
        out += [""] + [f"- {n}" for n in report.notes]
    return "\n".join(out)
