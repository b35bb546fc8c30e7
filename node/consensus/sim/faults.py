"""The fault schedule of a simulation run: chaos phases with injected faults, calm
phases with a liveness requirement, and leadership transfers in between.

Faults (counted by kind in the report): partition, isolate_leader, crash,
crash_leader, pause_leader (stopped past its election timeout, its inbox held back, so
it comes back as a stale leader), lossy (drops, duplicates and delays that reorder),
crash_new_leader (a leader crashes within a few ticks of winning, before its no-op
has spread: the schedule that makes Figure 8 histories possible).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.consensus.sim.run import SimMember, Simulation

from node.consensus.errors import RaftError


class FaultInjector:
    def __init__(self, sim: Simulation) -> None:
        from node.consensus.sim.run import ELECTION_TICK, LIVENESS_TICKS

        self.sim = sim
        self.rng = sim.rng
        self.election_tick = ELECTION_TICK
        self.liveness_ticks = LIVENESS_TICKS
        self.calm = True
        self.calm_start = 0
        self.calm_commits = 0
        self.calm_ok = False
        self.phase_end = 0
        self.next_event = 0
        self.lossy_until = 0
        self.restarts: list[tuple[int, SimMember]] = []
        self.transfer_target: str | None = None
        self.transfer_deadline = 0

    def allow_membership_change(self) -> bool:
        return True

    def on_new_leader(self, m: SimMember) -> None:
        if not self.calm and self.rng.random() < 0.3:
            m.crash_before_send = self.sim.now + max(0, self.rng.randrange(-8, 8))

    def crash_after_commit(self) -> bool:
        return not self.calm and self.rng.random() < 0.25

    def crashed(self, m: SimMember, kind: str) -> None:
        self.sim.result.faults[kind] += 1
        self.restarts.append((self.sim.now + self.rng.randrange(3, 40), m))

    # ---- per tick ------------------------------------------------------------------

    def on_tick(self) -> None:
        sim, now = self.sim, self.sim.now
        if self.restarts:
            keep = []
            for at, m in self.restarts:
                if at <= now:
                    sim.restart(m)
                else:
                    keep.append((at, m))
            self.restarts = keep
        if self.transfer_target is not None:
            lead = sim.leader()
            if lead is not None and lead.id == self.transfer_target:
                sim.result.transfers += 1
                self.transfer_target = None
            elif now > self.transfer_deadline:
                self.transfer_target = None
        if self.calm:
            self._calm_tick(now)
        else:
            self._chaos_tick(now)

    def _calm_tick(self, now: int) -> None:
        sim = self.sim
        if not self.calm_ok:
            if sim.leader() is not None and sim.check.normal_commits > self.calm_commits:
                self.calm_ok = True
                took = now - self.calm_start
                sim.result.max_recovery_ticks = max(sim.result.max_recovery_ticks, took)
                self.phase_end = now + self.rng.randrange(5, 25)
            elif now - self.calm_start > self.liveness_ticks:
                sim.check.fail(
                    now,
                    f"liveness: no leader with a new commit {self.liveness_ticks} ticks "
                    f"after the network healed",
                )
            return
        if self.transfer_target is None and self.rng.random() < 0.03:
            self._transfer()
        if now >= self.phase_end:
            self.calm = False
            self.phase_end = now + self.rng.randrange(40, 100)
            self.next_event = now + self.rng.randrange(1, 6)

    def _chaos_tick(self, now: int) -> None:
        if self.lossy_until and now >= self.lossy_until:
            self.sim.net.reliable()
            self.lossy_until = 0
        if now >= self.phase_end:
            self._start_calm(now)
            return
        if now >= self.next_event:
            self.next_event = now + self.rng.randrange(2, 7)
            self._inject()

    def _start_calm(self, now: int) -> None:
        sim = self.sim
        sim.net.heal()
        sim.net.reliable()
        self.lossy_until = 0
        for _at, m in self.restarts:
            sim.restart(m)
        self.restarts = []
        for m in sim.members.values():
            m.paused_until = min(m.paused_until, now)
            sim.restart(m)
        self.calm = True
        self.calm_ok = False
        self.calm_start = now
        self.calm_commits = sim.check.normal_commits

    # ---- faults --------------------------------------------------------------------

    def _inject(self) -> None:
        sim, rng, now = self.sim, self.rng, self.sim.now
        running = sim.running()
        lead = sim.leader()
        kinds = ["partition", "crash", "lossy", "heal"]
        if lead is not None:
            kinds += ["isolate_leader", "crash_leader", "pause_leader", "transfer"]
        kind = rng.choice(kinds)
        if kind == "heal":
            sim.net.heal()
            return
        if kind == "transfer":
            self._transfer()
            return
        if kind == "partition":
            ids = sorted(m.id for m in sim.members.values() if not m.removed)
            sim.net.group = {i: rng.randrange(2) for i in ids}
        elif kind == "isolate_leader":
            assert lead is not None
            sim.net.group = {m: 0 for m in sim.members}
            sim.net.group[lead.id] = 1
        elif kind in ("crash", "crash_leader"):
            victim = lead if kind == "crash_leader" else (rng.choice(running) if running else None)
            if victim is None or victim.core is None:
                return
            sim.crash(victim)
            self.restarts.append((now + rng.randrange(3, 40), victim))
        elif kind == "pause_leader":
            assert lead is not None
            lead.paused_until = now + rng.randrange(2 * self.election_tick, 5 * self.election_tick)
        elif kind == "lossy":
            net = sim.net
            net.loss = rng.choice((0.05, 0.1, 0.2, 0.3))
            net.dup = rng.choice((0.0, 0.05, 0.2))
            net.jitter = rng.randrange(1, 6)
            self.lossy_until = now + rng.randrange(10, 40)
        sim.result.faults[kind] += 1

    def _transfer(self) -> None:
        sim = self.sim
        lead = sim.leader()
        if lead is None or lead.core is None or lead.raft is None:
            return
        others = sorted(v for v in lead.raft.membership.voters if v != lead.id)
        if not others:
            return
        target = self.rng.choice(others)
        try:
            lead.core.transfer_leader(target)
        except RaftError:
            return
        self.transfer_target = target
        self.transfer_deadline = sim.now + 3 * self.election_tick
