"""A Caliper-style benchmark of a real local MedLedger consortium (issue 9, DESIGN §10).

    python -m perf.suite.run --config perf/suite/short.toml [--save]

Rounds (workload x submit mode x rate controller) are described in a TOML file
(`config.py`); the runner (`run.py`) starts the consortium with `node.localnet.up`,
drives pre-signed transactions through the public gRPC API from client processes
(`worker.py`), and reports throughput, submit-to-commit latency and node costs
(`stats.py`, `report.py`, `chart.py`).
"""
