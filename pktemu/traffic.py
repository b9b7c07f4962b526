"""A scenario's traffic on the virtual clock: each client app started at its time (or a scenario's
steps one after another), and the run stopped `settle` after the last client is done, and not
before `settle` after its timeline's last action: an action the file accepted always runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pktemu import topo
from pktemu.network import Network


def schedule_traffic(net: Network, sc: topo.Scenario) -> list[Any]:
    """Start the scenario's clients at their times (and its steps one after another); the run stops
    `settle` after the last client is done (and its last timeline action). Returns their run
    records, in `all_traffic` order."""
    if sc.steps:
        return _schedule_steps(net, sc)
    runs: list[Any] = []
    remaining = [len(sc.traffic)]

    def one_done() -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            net.sim.schedule(_settled(net, sc.timeline, 0, sc.settle), _stop, net)

    for tr in sc.traffic:
        node = net.nodes[tr.node]
        slot: dict[str, Any] = {}
        runs.append(Pending(slot))
        net.sim.at(tr.at, _start, net, node, tr.app, one_done, slot)
    return runs


@dataclass
class StepRun:
    """When a step ran (virtual ns) and why it ended: its clients done, or its duration over."""
    step: topo.Step
    start: int | None = None
    end: int | None = None
    ended_by: str = ""


def _schedule_steps(net: Network, sc: topo.Scenario) -> list[Any]:
    """Each step starts when the one before it has ended (clients done and settled, or its duration
    over), in the same namespaces; the last one stops the run."""
    runs: list[Any] = []
    slots: list[list[Pending]] = []
    for st in sc.steps:
        mine = [Pending({}) for _ in st.traffic]
        slots.append(mine)
        runs += mine
    net.steps = [StepRun(st) for st in sc.steps]

    def begin(k: int) -> None:
        record = net.steps[k]
        st = record.step
        record.start = net.sim.now
        net.schedule_timeline(st.timeline)
        remaining = [len(st.traffic)]
        over = [False]

        def finish(why: str) -> None:
            if over[0]:
                return
            over[0] = True
            record.end, record.ended_by = net.sim.now, why
            if k + 1 < len(sc.steps):
                begin(k + 1)
            elif (wait := _settled(net, sc.timeline, 0, 0, st.settle)) > 0:
                net.sim.schedule(wait, _stop, net)          # the scenario's own timeline is not done
            else:
                _stop(net)

        def one_done() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                net.sim.schedule(_settled(net, st.timeline, record.start or 0, st.settle), finish,
                                 "clients done")

        for tr, pending in zip(st.traffic, slots[k], strict=True):
            net.sim.schedule(tr.at, _start, net, net.nodes[tr.node], tr.app, one_done, pending.slot)
        deadline = max((tr.at for tr in st.traffic), default=0) + st.duration
        net.sim.schedule(deadline + (st.settle if not st.traffic else 0), finish, "duration")

    net.sim.schedule(0, begin, 0)
    return runs


def _settled(net: Network, timeline: list[topo.TimelineEntry], start: int, settle: int,
             after: int | None = None) -> int:
    """How long from now until the end: `settle`, or longer so that the last action of `timeline`
    (which started at `start`) runs and `after` (default `settle`) passes behind it. A step whose
    clients are done early does not leave its actions to fire in the next step, nor a run stop
    before an action the file accepted."""
    last = max((e.at for e in timeline), default=None)
    if last is None:
        return settle
    return max(settle, start + last + (settle if after is None else after) - net.sim.now)


def unfinished(sc: topo.Scenario, runs: list[Any]) -> list[str]:
    """The scenario's traffic items (`traffic[0]`, `steps[1].traffic[0]`) whose client had not
    finished, in `all_traffic` order: cut off by the end of the run, their results are partial."""
    names = [f"traffic[{i}]" for i in range(len(sc.traffic))]
    names += [f"steps[{k}].traffic[{i}]" for k, st in enumerate(sc.steps) for i in range(len(st.traffic))]
    return [n for n, r in zip(names, runs, strict=True)
            if isinstance(r, Pending) and getattr(r.slot.get("run"), "done_at", None) is None]


class Pending:
    """The run record of a traffic app, filled in when its start time comes."""

    def __init__(self, slot: dict[str, Any]) -> None:
        self.slot = slot

    @property
    def result(self) -> dict[str, Any]:
        run = self.slot.get("run")
        return run.result if run is not None else {}


def _start(net: Network, node: Any, app: topo.App, done: Callable[[], None], slot: dict[str, Any]) -> None:
    slot["run"] = net.start_app(node, app, done)


def _stop(net: Network) -> None:
    net.sim.stopped = True
