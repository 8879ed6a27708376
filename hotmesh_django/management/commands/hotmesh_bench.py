"""`manage.py hotmesh_bench`: measure hotmesh_django beside its peers (see bench/)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


def _int_list(value: str) -> list[int]:
    try:
        items = [int(v.replace("_", "")) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a comma-separated list of integers"
        ) from None
    if not items or min(items) < 1:
        raise argparse.ArgumentTypeError("give positive integers, e.g. 1000,1000000")
    return items


def _positive(value: str) -> int:
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _names(allowed: tuple[str, ...]) -> Any:
    def parse(value: str) -> list[str]:
        names = [v.strip() for v in value.split(",") if v.strip()]
        unknown = sorted(set(names) - set(allowed))
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(unknown) or '(none given)'}; choose from {','.join(allowed)}"
            )
        return names

    return parse


def _command_line() -> str:
    """Return the command as typed, with DATABASE_URL (password masked) if set."""
    argv = list(sys.argv)
    if argv and argv[0].endswith("manage.py"):
        argv = ["python", *argv]
    line = shlex.join(argv)
    url = os.environ.get("DATABASE_URL")
    if url:
        masked = re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", url)
        line = f"DATABASE_URL={masked} {line}"
    return line


class Command(BaseCommand):
    help = (
        "Benchmark hotmesh_django (W1 queue throughput, W2 workflows, W3 pickup latency, "
        "timers, claim cost, worker memory) on a fresh database, optionally beside the "
        "pgbench limit and the peer systems."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        try:
            from bench.peers import PEER_SYSTEMS
            from bench.workloads import WORKLOADS
        except ImportError:
            return  # installed without the repository's bench/: handle() says so

        parser.add_argument(
            "--workloads",
            type=_names(WORKLOADS),
            default=list(WORKLOADS),
            help=f"Comma-separated, from {','.join(WORKLOADS)} (default all).",
        )
        parser.add_argument("--n-w1", type=_positive, default=10_000, help="W1 jobs (10000).")
        parser.add_argument("--n-w2", type=_positive, default=1_000, help="W2 workflows (1000).")
        parser.add_argument("--n-w3", type=_positive, default=50, help="W3 jobs (50).")
        parser.add_argument(
            "--n-timers", type=_positive, default=50, help="Timer workflows per run (50)."
        )
        parser.add_argument(
            "--runs",
            type=_positive,
            default=3,
            help="Runs per workload; the table shows median (min-max). (3)",
        )
        parser.add_argument(
            "--processes",
            type=_positive,
            default=2,
            help="Worker processes for W1, W2 and RSS (2).",
        )
        parser.add_argument(
            "--concurrency",
            type=_positive,
            default=8,
            help="Runner threads per worker process (8).",
        )
        parser.add_argument(
            "--claim-backlogs",
            type=_int_list,
            default=[1_000, 1_000_000],
            help="Ready backlogs for the claim-cost test (1000,1000000).",
        )
        parser.add_argument(
            "--claim-calls",
            type=_positive,
            default=200,
            help="Timed one-row claims per backlog (200).",
        )
        parser.add_argument(
            "--database",
            default="hotmesh_bench",
            help="Database created for the benchmark (hotmesh_bench).",
        )
        parser.add_argument(
            "--drop-database", action="store_true", help="Drop the benchmark database afterwards."
        )
        parser.add_argument(
            "--pglimit",
            action="store_true",
            help=(
                "Measure the pgbench insert1/claim1/claim100 limit on the same server, and"
                " (with w1) the engine100/contract100/stream100 bound of our data model."
            ),
        )
        parser.add_argument("--pglimit-clients", type=_int_list, default=[1, 2, 4, 8])
        parser.add_argument(
            "--pglimit-duration", type=_positive, default=5, help="Seconds per pgbench run (5)."
        )
        parser.add_argument(
            "--peers",
            action="store_true",
            help="Run the peer harness (../shared/peer-bench) on the same server.",
        )
        parser.add_argument(
            "--peer-systems",
            type=_names(PEER_SYSTEMS),
            default=["procrastinate", "djtasks", "dbos"],
        )
        parser.add_argument(
            "--peer-runs",
            type=_positive,
            default=None,
            help="Runs per peer workload (default: --runs).",
        )
        parser.add_argument(
            "--json",
            type=Path,
            default=None,
            metavar="FILE",
            help="Append every run's record to this JSON-lines file.",
        )
        parser.add_argument(
            "--markdown",
            action="store_true",
            help="Also print a markdown table with machine and versions.",
        )
        parser.add_argument(
            "--report-from",
            type=Path,
            action="append",
            default=[],
            metavar="FILE",
            help="Run nothing: print the table from saved JSON lines (ours, pgbench, peers).",
        )
        parser.add_argument(
            "--out-dir",
            type=Path,
            default=None,
            help="Worker logs and scratch files (bench/results).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            from bench import bound, peers, pickup, report, workloads
        except ImportError:
            raise CommandError(
                "hotmesh_bench runs from a checkout of the hotmesh_django repository: "
                "its bench/ package is not installed with the app. Run `make bench` "
                "there (see bench/README.md)."
            ) from None

        command = _command_line()
        if options["report_from"]:
            self._report_from(options["report_from"], options["markdown"], command)
            return
        config = workloads.BenchConfig(
            workloads=options["workloads"],
            n_w1=options["n_w1"],
            n_w2=options["n_w2"],
            n_w3=options["n_w3"],
            n_timers=options["n_timers"],
            runs=options["runs"],
            processes=options["processes"],
            concurrency=options["concurrency"],
            database=options["database"],
            claim_backlogs=options["claim_backlogs"],
            claim_calls=options["claim_calls"],
            json_path=options["json"],
        )
        if options["out_dir"] is not None:
            config.out_dir = options["out_dir"]

        def log(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        def keep(rec: dict[str, Any]) -> None:
            if config.json_path is not None:
                import json

                config.json_path.parent.mkdir(parents=True, exist_ok=True)
                with config.json_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")

        started = time.time()
        pglimit: list[dict[str, Any]] = []
        try:
            if options["pglimit"]:
                log("pgbench limit: insert1, claim1, claim100")
                pglimit = peers.run_pglimit(
                    runs=config.runs,
                    clients=options["pglimit_clients"],
                    duration=options["pglimit_duration"],
                    log=log,
                    on_record=keep,
                )
                if "w3" in config.workloads:
                    log("pickup floor: a bare LISTEN/NOTIFY queue, W3's method")
                    floor = pickup.run_pickup_floor(
                        runs=config.runs, n=config.n_w3, out_dir=config.out_dir, log=log
                    )
                    for rec in floor:
                        keep(rec)
                    pglimit += floor
            with workloads.bench_database(config, log, drop=options["drop_database"]):
                server = workloads.server_version()
                ours = workloads.Runner(config, log).run()
                if options["pglimit"] and "w1" in config.workloads:
                    log("data-model bound: W1's lifecycle as the engine's SQL, no Python")
                    pglimit += bound.run_model_bound(
                        database=config.database,
                        runs=config.runs,
                        clients=options["pglimit_clients"],
                        duration=options["pglimit_duration"],
                        log=log,
                        on_record=keep,
                    )
        except workloads.BenchError as exc:
            raise CommandError(str(exc)) from exc
        outcome = peers.PeerOutcome([], error=None)
        if options["peers"]:
            outcome = peers.run_peers(
                systems=options["peer_systems"],
                n_w1=config.n_w1,
                n_w2=config.n_w2,
                n_w3=config.n_w3,
                runs=options["peer_runs"] or config.runs,
                log=log,
            )
            if outcome.error:
                log(f"peers: {outcome.error}")
        built = report.build(ours, outcome.rows, pglimit, outcome.error)
        elapsed = time.time() - started
        report.print_rich(
            built,
            f"hotmesh_django benchmark: median (min-max) of "
            f"{config.runs} run(s), PostgreSQL {server}, "
            f"{elapsed / 60:.1f} min",
        )
        if options["markdown"]:
            info = report.machine_info(server, outcome.versions)
            info["hotmesh_django source sha256"] = workloads.engine_digest()
            self.stdout.write("\n" + report.markdown(built, info, command) + "\n")

    def _report_from(self, paths: list[Path], markdown: bool, command: str) -> None:
        import json

        from bench import report, workloads

        rows: list[dict[str, Any]] = []
        for path in paths:
            if not path.exists():
                raise CommandError(f"{path} does not exist")
            rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ours = [r for r in rows if r.get("system") == workloads.SYSTEM]
        pglimit = [r for r in rows if r.get("bench") == "pglimit"]
        peer_rows = [
            r
            for r in rows
            if r.get("bench") == "peer" and "error" not in r and r.get("setting") != "smoke"
        ]
        versions = {r["server_version"] for r in pglimit if r.get("server_version")}
        server = ", ".join(sorted(versions)) or "?"
        runs = max((r.get("run", 0) for r in ours), default=0) + 1
        built = report.build(ours, peer_rows, pglimit)
        report.print_rich(built, f"hotmesh_django benchmark: median (min-max) of {runs} run(s)")
        if markdown:
            info = report.machine_info(server, {})
            engines = sorted({r["engine"] for r in ours if r.get("engine")})
            info["hotmesh_django source sha256"] = ", ".join(engines) or "?"
            self.stdout.write("\n" + report.markdown(built, info, command) + "\n")
