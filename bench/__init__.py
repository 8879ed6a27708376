"""The hotmesh_django benchmark suite: W1–W3, timers, claim cost, memory, peers.

Run it with `python manage.py hotmesh_bench` (see bench/README.md). The modules:
`defs` holds the benchmark's activities and workflows (imported by the workers),
`workloads` runs our workloads against a fresh database, `peers` runs the pgbench
limit and the peer harness, and `report` turns the results into tables.
"""

from __future__ import annotations
