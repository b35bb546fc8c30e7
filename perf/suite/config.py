"""The suite's configuration: a TOML file of rounds, checked before anything starts.

    [suite]                       # defaults for every round
    hospitals = 1                 # nodes; the first `consenters` of them order
    consenters = 1
    clients = 2                   # client processes, spread over the nodes
    drain_s = 10                  # after sending, wait this long for commits

    [[round]]
    name = "kv-stream"
    workload = "kv"               # kv | query | referral
    submit = "stream"             # unary | batch | stream
    duration_s = 30
    rate = { controller = "fixed", tps = 1200 }
    # step: { controller = "step", start = 500, step = 500, steps = 6 }  duration per step
    # max:  { controller = "max", in_flight = 4000, cap_tps = 6000 }

Rates are totals over all client processes.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

WORKLOADS = ("kv", "query", "referral")
SUBMIT_MODES = ("unary", "batch", "stream")
CONTROLLERS = ("fixed", "step", "max")


# Every transaction of a round is signed before its window, valid for at most the genesis
# max_tx_ttl (10 min; 9 used): duration_s + 2 * drain_s + SIGNING_ALLOWANCE_S must fit.
MAX_TTL_MS = 9 * 60 * 1000
SIGNING_ALLOWANCE_S = 120


class ConfigError(Exception):
    """The configuration file is wrong; the message names the key and what to change."""


@dataclass(frozen=True)
class Rate:
    controller: str  # fixed | step | max
    tps: float = 0.0  # fixed: the target; step: the first step; max: unused
    step: float = 0.0  # step: added per step
    steps: int = 1  # step: how many steps
    in_flight: int = 4000  # max: admitted but not yet committed, per run (all clients)
    cap_tps: float = 6000.0  # max: how many transactions to pre-sign per second of round


@dataclass(frozen=True)
class Round:
    name: str
    workload: str
    submit: str
    duration_s: float
    rate: Rate
    hospitals: int
    consenters: int
    clients: int
    drain_s: float
    batch_max: int = 500  # batch/stream: at most this many transactions per message
    tick_ms: float = 10.0  # batch/stream: coalesce transactions due within one tick
    query_mix: dict[str, float] = field(
        default_factory=lambda: {"get": 0.8, "list_keys": 0.1, "put": 0.1}
    )
    preload_keys: int = 2000  # query: keys written before the timed window
    soak: bool = False  # keep the RSS series of this round in the report
    step_index: int = 0  # set on the rounds a step controller expands into

    @property
    def label(self) -> str:
        return self.name if not self.step_index else f"{self.name}#{self.step_index}"

    def target_tps(self) -> float:
        if self.rate.controller == "max":
            return self.rate.cap_tps
        return self.rate.tps


@dataclass(frozen=True)
class Suite:
    name: str
    rounds: list[Round]
    sample_s: float = 0.5


_SUITE_KEYS = {"name", "hospitals", "consenters", "clients", "drain_s", "sample_s"}
_ROUND_KEYS = {
    "name",
    "workload",
    "submit",
    "duration_s",
    "rate",
    "hospitals",
    "consenters",
    "clients",
    "drain_s",
    "batch_max",
    "tick_ms",
    "query_mix",
    "preload_keys",
    "soak",
}


def _unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _rate(raw: Any, where: str) -> Rate:  # raw: parsed TOML
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.rate must be a table such as {{ controller = 'fixed' }}")
    controller = raw.get("controller")
    if controller not in CONTROLLERS:
        raise ConfigError(f"{where}.rate.controller must be one of {CONTROLLERS}")
    _unknown(raw, {"controller", "tps", "start", "step", "steps", "in_flight", "cap_tps"}, where)
    rate = Rate(
        controller=controller,
        tps=float(raw.get("tps", raw.get("start")) or 0.0),
        step=float(raw.get("step", 0.0)),
        steps=int(raw.get("steps", 1)),
        in_flight=int(raw.get("in_flight", 4000)),
        cap_tps=float(raw.get("cap_tps", 6000.0)),
    )
    if controller in ("fixed", "step") and rate.tps <= 0:
        raise ConfigError(f"{where}.rate needs a positive tps (fixed) or start (step)")
    if controller == "step" and (rate.steps < 1 or rate.step <= 0):
        raise ConfigError(f"{where}.rate needs steps >= 1 and a positive step")
    return rate


def parse_round(raw: dict[str, Any], defaults: dict[str, Any], index: int) -> Round:
    where = f"round {index + 1} ({raw.get('name', '?')})"
    _unknown(raw, _ROUND_KEYS, where)
    merged = {"hospitals": 1, "consenters": 1, "clients": 2, "drain_s": 10.0, **defaults, **raw}
    merged.pop("name", None)
    merged.pop("sample_s", None)
    workload = merged.pop("workload", "kv")
    submit = merged.pop("submit", "stream")
    if workload not in WORKLOADS:
        raise ConfigError(f"{where}: workload must be one of {WORKLOADS}")
    if submit not in SUBMIT_MODES:
        raise ConfigError(f"{where}: submit must be one of {SUBMIT_MODES}")
    if workload == "query" and submit != "unary":
        raise ConfigError(f"{where}: the query workload uses unary calls; set submit = 'unary'")
    if "duration_s" not in merged or float(merged["duration_s"]) <= 0:
        raise ConfigError(f"{where}: needs a positive duration_s")
    rate = _rate(merged.pop("rate", None), where)
    rnd = Round(
        name=str(raw.get("name", f"round{index + 1}")),
        workload=workload,
        submit=submit,
        duration_s=float(merged.pop("duration_s")),
        rate=rate,
        hospitals=int(merged.pop("hospitals")),
        consenters=int(merged.pop("consenters")),
        clients=int(merged.pop("clients")),
        drain_s=float(merged.pop("drain_s")),
        **merged,
    )
    if not 1 <= rnd.consenters <= rnd.hospitals:
        raise ConfigError(f"{where}: need 1 <= consenters <= hospitals")
    if rnd.clients < 1:
        raise ConfigError(f"{where}: clients must be at least 1")
    _check_window(rnd, where)
    return rnd


def _check_window(rnd: Round, where: str) -> None:
    longest = MAX_TTL_MS / 1000 - SIGNING_ALLOWANCE_S
    if rnd.duration_s + 2 * rnd.drain_s > longest:
        raise ConfigError(
            f"{where}: duration_s + 2 * drain_s must be at most {longest:g} s: its "
            "transactions are signed before the round and expire after the chain's "
            "max_tx_ttl (a longer soak would send expired transactions)"
        )


def load(path: Path, overrides: dict[str, Any] | None = None) -> Suite:
    """Read and check a suite file; `overrides` (from the command line) replace suite
    defaults and every round's values for the same keys."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    suite = dict(data.get("suite", {}))
    _unknown(suite, _SUITE_KEYS, "[suite]")
    rounds_raw = data.get("round", [])
    if not rounds_raw:
        raise ConfigError(f"{path} has no [[round]] tables")
    overrides = overrides or {}
    defaults = {k: v for k, v in suite.items() if k != "name"}
    rounds = []
    for i, raw in enumerate(rounds_raw):
        rnd = parse_round(dict(raw), defaults, i)
        if overrides:
            rnd = replace(rnd, **overrides)
            if not 1 <= rnd.consenters <= rnd.hospitals:
                raise ConfigError("command line: need 1 <= consenters <= hospitals")
            _check_window(rnd, f"command line, round {rnd.name}")
        rounds.append(rnd)
    return Suite(
        name=str(suite.get("name", path.stem)),
        rounds=rounds,
        sample_s=float(suite.get("sample_s", 0.5)),
    )


def expand_steps(rnd: Round) -> list[Round]:
    """A step-rate round becomes one fixed-rate round per step, run back to back on the
    same network, each drained before the next so that its costs are its own."""
    if rnd.rate.controller != "step":
        return [rnd]
    return [
        replace(
            rnd,
            rate=replace(rnd.rate, tps=rnd.rate.tps + i * rnd.rate.step, steps=1),
            step_index=i + 1,
        )
        for i in range(rnd.rate.steps)
    ]
