"""Registry models in a deterministic replay: the slot's routing and the automatic rollout
(rollback, canary ramp) on the simulated clock, against a copy of the registry.

A replay whose signals stage names ``model_slot`` runs on **its own registry**, ``out/models``:
the models of the source registry (``model_registry``, default ``$BOT4_DATA_DIR/models``)
and the slot's assignment as it is when the replay starts are copied there, so what the
replay decides never touches the registry live trading reads, and concurrent changes to
that one do not reach the replay. The signals stage watches the copy's generation word
(``model_watch`` forced true) exactly as live: a decision is an ordinary registry change
(:func:`bot4.models.registry.rollback`, ``advance_ramp``) that the stage picks up at its
next batch. Events are stamped with the simulated clock and ``who = bot4-replay``;
``out/models/events.jsonl`` is the replay's model journal (the slot's history, then the
replay's decisions with their reasons).

The monitor (:class:`bot4.models.rollout.RolloutMonitor`) sees the records as the rings
carry them: the risk stage's ORDERs to the OMS (the model of each order) and the OMS's
reports to risk (fills, closed orders). At the start of every step, before any stage runs,
it takes the looks the challenger's marked trades have reached; a rollback then

* writes an ``ACTION_CANCEL`` ORDER for each of the challenger's orders that may still rest
  into the risk -> OMS ring, so the OMS cancels them in this same step (as a risk stage's
  cancel would be), journalled like every venue message;
* hands the challenger's virtual sub-positions to the champion at the replay's current
  mids (:class:`bot4.models.rollout.SubPositions`): the champion takes its inventory;
* rolls the slot back: from the stage's next batch only the champion decides.

A **shadow** challenger is evaluated on its would-be trades: each would-be intent of the
stage's shadow pass that crosses the touch it was decided on is a would-be fill at that
touch, marked like a real fill (its instrument's real fill ``horizon`` fills later; it is
never a mark itself); one that would rest is counted, not filled (would-be orders have no
queue model). A look that fails takes the shadow out (a rollback of the slot: nothing to
cancel, nothing held); a shadow that passes stays a shadow — putting it in front of flow
is an operator's decision (``bot4 models canary``).

Without ``model_slot`` nothing here runs and a replay is what it was, byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from bot4.records import ACTION_CANCEL, ORDER
from bot4.records.errors import Bot4Error, Code

ACTOR = "bot4-replay"


def local_registry(params: dict, out_dir: Path) -> dict:
    """The replay's own registry for a signals stage's params (module doc): copy the
    source registry's models and the slot's assignment under ``out_dir/models``; the
    params pointed at it with ``model_watch`` on."""
    from bot4.models.artifact import ModelError
    from bot4.models.registry import Registry

    src = Registry(params.get("model_registry"))
    slot = params["model_slot"]
    dst_root = out_dir / "models"
    if dst_root.exists() and any(dst_root.iterdir()):
        raise Bot4Error(
            f"{dst_root}: not empty; a replay with model_slot writes a fresh registry copy "
            "(choose --out)",
            Code.CONFIG_INVALID,
        )
    try:
        a = src.assignment(slot)
        if not a.champion:
            raise ModelError(
                f"slot {slot!r} of {src.root} has no champion (bot4 models promote ID)"
            )
        for d in ("objects", "models", "slots", "shadow"):
            (dst_root / d).mkdir(parents=True, exist_ok=True)
        for doc in src.models():
            obj = src.object_path(doc["sha256"])
            tgt = dst_root / "objects" / obj.name
            if not tgt.exists():
                shutil.copyfile(obj, tgt)
                tgt.chmod(0o444)
            (dst_root / "models" / f"{doc['id']}.json").write_text(json.dumps(doc, indent=1))
        dst = Registry(dst_root)
        dst.slot_path(slot).write_text(json.dumps(a.to_dict(), indent=1))
        dst._store_generation(slot, a.generation)
    except ModelError as exc:
        raise Bot4Error(f"replay: model_slot: {exc}", Code.CONFIG_INVALID) from None
    return {**params, "model_registry": str(dst_root), "model_watch": True}


class ReplayRollout:
    """The automatic rollout of one signals stage's slot in a replay (module doc).
    ``engine``: the DeterministicReplay, its channels built; ``node``: the signals node."""

    def __init__(self, engine, node) -> None:
        from bot4.models.registry import Registry
        from bot4.models.rollout import RolloutConfig, RolloutMonitor

        p = node.stage.spec.params
        self.engine = engine
        self.node = node
        self.reg = Registry(p["model_registry"])
        self.reg.clock = engine.clock
        self.reg.actor = ACTOR
        self.cfg = RolloutConfig.from_params(p.get("rollout"))
        self.monitor = RolloutMonitor(self.reg, p["model_slot"], self.cfg)
        topo = engine.topology
        kind = {s.name: s.kind for s in topo.stages}
        to_oms = [r for r in topo.rings if r.type == "ORDER" and kind.get(r.producer) == "risk"
                  and kind.get(r.consumer) == "orders"]  # fmt: skip
        to_risk = [r for r in topo.rings if r.type == "EXEC_REPORT"
                   and kind.get(r.producer) == "orders" and kind.get(r.consumer) == "risk"]  # fmt: skip
        self.cancelled = 0
        self.off = ""  # why the rollout does not run (the routing does)
        if len(to_oms) != 1 or len(to_risk) != 1:
            self.off = (
                "fills are attributed on one risk -> orders ORDER ring and one orders -> risk "
                f"EXEC_REPORT ring; this topology has {len(to_oms)} and {len(to_risk)}"
            )
            self.monitor.active = False
            return
        self.orders_ch = engine.channels[to_oms[0].name]
        self.orders_ch.tap = self.monitor.attr.on_orders
        engine.channels[to_risk[0].name].tap = self.monitor.attr.on_reports
        self.hooked = False

    def step(self, T: int) -> None:
        """At the start of a step (module doc); cheap unless a look is due."""
        if self.off:
            return
        if not self.hooked:  # the stage's router exists once the run set the stage up
            e = self.engine
            self.node.stage.router.on_shadow = lambda recs: self.monitor.attr.on_would_be(
                recs, e.last_bid, e.last_ask
            )
            self.hooked = True
        if self.monitor.due():
            self.monitor.check(T, self.marks(), self.cancel)

    def marks(self) -> dict[int, int]:
        e = self.engine
        out = {}
        for i in np.flatnonzero(e.quoted).tolist():
            b, a = int(e.last_bid[i]), int(e.last_ask[i])
            if b > 0 and a > b:
                out[i] = (b + a) // 2
        return out

    def cancel(self, orders: list[tuple[int, int]]) -> None:
        """ACTION_CANCEL of each (client order id, instrument) into the risk -> OMS ring."""
        if not orders:
            return
        t = self.engine.clock.t
        view = self.orders_ch.room(len(orders))
        view[:] = np.zeros(len(orders), ORDER)
        for j, (cl, inst) in enumerate(orders):
            o = view[j]
            o["action"] = ACTION_CANCEL
            o["orig_client_order_id"] = cl
            o["instrument"] = inst
            o["model_id"] = self.monitor.challenger
            o["strategy"] = 1
            for f in ("ts_event_ns", "ts_recv_ns", "ts_signal_ns", "ts_risk_ns"):
                o[f] = t
        self.orders_ch.commit(len(orders), t)
        self.cancelled += len(orders)

    def summary(self) -> dict:
        s = self.monitor.summary(self.marks())
        s["registry"] = "models"  # under the replay's out directory
        s["cancelled_orders"] = self.cancelled
        if self.off:
            s["rollout_off"] = self.off
        return s


def model_lines(m: dict | None) -> list[str]:
    """The rollout of a replay with ``model_slot`` (``doc["models"]``): the assignment at
    start and end, each rollback with its reason and who took the inventory, and per model
    orders, fills and PnL (price units) of its virtual sub-positions."""
    if not m:
        return []

    def assign(a: dict) -> str:
        if not a["challenger"]:
            return f"champion {a['champion']}"
        return f"champion {a['champion']}, challenger {a['challenger']} ({a['mode']} {a['pct']:g}%)"

    out = [f"models: slot {m['slot']}: {assign(m['start'])} -> {assign(m['end'])}"]
    for look in m["looks"]:
        if look["rollback"] and look.get("shadow"):
            out.append(
                f"  ROLLBACK of shadow model {look['challenger']} at checkpoint "
                f"{look['checkpoint']} ({look['trades']['challenger']} would-be trades): "
                f"{look['reason']}"
            )
        elif look["rollback"]:
            out.append(
                f"  ROLLBACK of model {look['challenger']} at checkpoint {look['checkpoint']} "
                f"({look['trades']['challenger']} challenger trades): {look['reason']}; "
                f"{look['cancelled_orders']} open order(s) cancelled, inventory to model "
                f"{look['inventory_to']}"
            )
        elif look["action"] != "none":
            out.append(
                f"  checkpoint {look['checkpoint']} passed ({look['trades']['challenger']} "
                f"challenger trades): {look['action']}"
            )
    for mid, r in m["models"].items():
        wb = ""
        if "would_be_intents" in r:
            wb = f"  would-be intents {r['would_be_intents']} (fills {r['would_be_fills']})"
        out.append(
            f"  model {mid}: orders {r['orders']}  fills {r['fills']}  trades {r['trades']}  "
            f"pnl {r['pnl_units']} units{wb}"
            + (
                f"  (took the inventory of {r['took_inventory_of']})"
                if r["took_inventory_of"]
                else ""
            )
        )
    return out
