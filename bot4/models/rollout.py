"""Automatic rollout from attributed fills: per-trade markouts, per-model virtual
sub-positions, the checkpoint looks of :mod:`bot4.models.evaluate` and what a verdict does
to a registry slot.

One definition of each, used incrementally by ``bot4 replay`` (``bot4/replay/models.py``
feeds it the orders and reports as they cross the rings) and from a journal by
``bot4 models evaluate`` / ``bot4 models status --journal``:

* **attribution**: a fill belongs to the model whose id the order's ``ORDER.model_id``
  carries (risk copies the intent's ``model_version`` into it); reports find their order
  by ``client_order_id``.
* **markouts** (:class:`Markouts`): a fill's return is ``side * (mark - price) / price``,
  ``mark`` the instrument's fill price ``horizon`` fills later (any model's); a hit when
  the mark moved the fill's way, no move not counted for accuracy. A fill is a trade of
  its model once its mark is known.
* **virtual sub-positions** (:class:`SubPositions`): per model and instrument, position,
  cash and fees from its fills; the model's PnL at a mark is ``cash + position * mark -
  fees``. They are for attribution only: risk limits stay on the total position, which
  the sub-positions sum to. When a challenger is rolled back its sub-positions are handed
  to the champion *at the mark* (the champion's position grows by the challenger's, its
  cash pays ``position * mark``; the challenger keeps the PnL it made up to that mark),
  and fills that still arrive on its orders (a cancel racing a fill) are the champion's.
* **looks** (:class:`RolloutMonitor`): every ``checkpoint_trades`` challenger trades since
  the challenger was assigned, at most ``max_checkpoints`` looks, the champion's trades
  over the same period: :func:`bot4.models.evaluate.evaluate_checkpoint`;
  :func:`apply_verdicts` then rolls back (reason, tests, values and p-values in the event)
  or moves a canary one ramp step per passed look (after the last step it is promoted).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot4.models.evaluate import EvalConfig, Verdict, evaluate_checkpoint
from bot4.records import (
    ACTION_NEW,
    EXEC_BROKEN,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_REJECTED,
)

#: order statuses after which an order rests nowhere
CLOSED = (OS_FILLED, OS_CANCELLED, OS_REJECTED, OS_EXPIRED)
ROLLOUT_KEYS = frozenset(
    {"enabled", "horizon", "min_trades", "checkpoint_trades", "max_checkpoints", "alpha"}
)


@dataclass(frozen=True)
class RolloutConfig:
    """The markout horizon (fills) and the evaluator's sampling; ``enabled`` false: a
    replay routes as the slot says but never rolls back or ramps."""

    horizon: int = 20
    eval: EvalConfig = field(default_factory=EvalConfig)
    enabled: bool = True

    @classmethod
    def from_params(cls, d: dict | None) -> RolloutConfig:
        """From a signals stage's ``rollout`` table (keys: ROLLOUT_KEYS)."""
        d = dict(d or {})
        ev = EvalConfig(
            **{k: d[k] for k in ("min_trades", "checkpoint_trades", "max_checkpoints", "alpha")
               if k in d}
        )  # fmt: skip
        return cls(int(d.get("horizon", 20)), ev, bool(d.get("enabled", True)))

    def describe(self) -> dict:
        e = self.eval
        return {
            "enabled": self.enabled,
            "horizon_fills": self.horizon,
            "min_trades": e.min_trades,
            "checkpoint_trades": e.checkpoint_trades,
            "max_checkpoints": e.max_checkpoints,
            "alpha": e.alpha,
            "alpha_per_look": e.alpha_per_look,
        }


class Markouts:
    """Per-trade outcomes as fills arrive (module doc). ``returns[m]``, ``hits[m]``,
    ``ts[m]`` and ``index[m]`` (the fill's position in arrival order) grow per model ``m``
    in the order the marks become known."""

    def __init__(self, horizon: int) -> None:
        if horizon < 1:
            raise ValueError("markout horizon must be >= 1 fill")
        self.horizon = int(horizon)
        self._pending: dict[int, deque] = {}
        self.returns: dict[int, list[float]] = {}
        self.hits: dict[int, list[int]] = {}
        self.ts: dict[int, list[int]] = {}
        self.index: dict[int, list[int]] = {}
        self.fills = 0
        self._virtual: dict[int, deque] = {}  # would-be fills waiting for their mark

    def add(
        self, model: int, inst: int, side: int, price: float, ts: int, tick_ns: int = 0
    ) -> None:
        """A real fill; ``tick_ns``: its originating tick's receive time (marks would-be
        fills decided on earlier ticks only)."""
        q = self._pending.setdefault(inst, deque())
        q.append((self.fills, model, side, float(price), ts))
        self.fills += 1
        if len(q) > self.horizon:
            i, m, s, px, t = q.popleft()
            self._mark(i, m, s, px, t, price)
        v = self._virtual.get(inst)
        if v:
            keep = deque()
            for e in v:
                if tick_ns > e[1]:
                    e[0] -= 1
                if e[0] <= 0:
                    self._mark(-1, e[2], e[3], e[4], e[5], price)
                else:
                    keep.append(e)
            self._virtual[inst] = keep

    def add_virtual(
        self, model: int, inst: int, side: int, price: float, ts: int, tick_ns: int
    ) -> None:
        """A shadow model's would-be fill decided on the tick received at ``tick_ns``:
        marked like a real fill, by its instrument's ``horizon``-th real fill from a later
        tick (a real fill on the same tick — the champion acting on the quote the shadow
        saw — is not a later price), and never a mark itself."""
        e = [self.horizon, int(tick_ns), model, side, float(price), ts]
        self._virtual.setdefault(inst, deque()).append(e)

    def _mark(self, i: int, m: int, s: int, px: float, t: int, price: float) -> None:
        ret = s * (price - px) / px
        self.returns.setdefault(m, []).append(ret)
        self.hits.setdefault(m, []).append(-1 if price == px else int(ret > 0))
        self.ts.setdefault(m, []).append(t)
        self.index.setdefault(m, []).append(i)

    def trades(self, model: int) -> int:
        return len(self.returns.get(model, ()))

    def arrays(self, model: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(returns, hits) of ``model`` from its ``start``-th trade on."""
        return (
            np.asarray(self.returns.get(model, [])[start:], float),
            np.asarray(self.hits.get(model, [])[start:], np.int64),
        )


class SubPositions:
    """Per-model virtual sub-positions (module doc). Prices in price units (int)."""

    def __init__(self) -> None:
        # (model, instrument) -> [position, cash, fees, fills, bought, sold]
        self.book: dict[tuple[int, int], list[int]] = {}
        self.heir: dict[int, int] = {}  # rolled-back model -> the model that took over

    def owner(self, model: int) -> int:
        seen = 0
        while model in self.heir and seen < 64:
            model = self.heir[model]
            seen += 1
        return model

    def fill(
        self, model: int, inst: int, side: int, qty: int, price: int, fee: int, broken=False
    ) -> None:
        """One fill; ``broken``: reverse the fill a trade bust (``EXEC_BROKEN``) names (its
        quantity, price and fee taken back; ``fills`` counts it)."""
        b = self.book.setdefault((self.owner(model), inst), [0, 0, 0, 0, 0, 0])
        sign = -1 if broken else 1
        b[0] += sign * side * qty
        b[1] -= sign * side * qty * price
        b[2] += sign * fee
        b[3] += 1
        b[4 if side > 0 else 5] += sign * qty

    def hand_over(self, frm: int, to: int, marks: dict[int, int]) -> dict[int, dict]:
        """``frm``'s positions to ``to`` at ``marks`` (instrument -> price units); later
        fills of ``frm``'s orders are ``to``'s. Returns what moved per instrument."""
        moved = {}
        for (m, inst), b in list(self.book.items()):
            if m != frm or b[0] == 0:
                continue
            q, px = b[0], int(marks.get(inst, 0))
            t = self.book.setdefault((to, inst), [0, 0, 0, 0, 0, 0])
            t[0] += q
            t[1] -= q * px
            b[0] = 0
            b[1] += q * px
            moved[inst] = {"position": q, "mark": px}
        self.heir[frm] = to
        return moved

    def rows(self, marks: dict[int, int]) -> list[dict]:
        """One row per model and instrument: position, fills, bought, sold, fees and PnL
        at ``marks`` (missing mark: position valued at 0 and ``mark`` 0)."""
        out = []
        for (m, inst), (pos, cash, fees, n, bought, sold) in sorted(self.book.items()):
            px = int(marks.get(inst, 0))
            out.append(
                {
                    "model": m,
                    "instrument": inst,
                    "position": pos,
                    "fills": n,
                    "bought": bought,
                    "sold": sold,
                    "fees": fees,
                    "mark": px,
                    "pnl": cash + pos * px - fees,
                }
            )
        return out

    def totals(self, marks: dict[int, int]) -> dict[int, dict]:
        """Per model: fills and PnL summed over instruments, and its positions."""
        out: dict[int, dict] = {}
        for r in self.rows(marks):
            t = out.setdefault(r["model"], {"fills": 0, "pnl": 0, "positions": {}})
            t["fills"] += r["fills"]
            t["pnl"] += r["pnl"]
            if r["position"]:
                t["positions"][r["instrument"]] = r["position"]
        return out


class Attribution:
    """Orders and reports in, attributed fills out: the model of each order, its open
    orders, markouts and sub-positions. ``on_orders`` takes ORDER records (only
    ``ACTION_NEW`` matter), ``on_reports`` EXEC_REPORT records (fills; ``status`` closes
    an order). Reports with an ``exec_id`` seen before are skipped (a journal holds the
    venue's report and the OMS's copy)."""

    def __init__(self, horizon: int) -> None:
        self.model_of: dict[int, int] = {}
        self.open: dict[int, int] = {}  # client order id -> model, while it may rest
        self.open_inst: dict[int, int] = {}
        self.marks = Markouts(horizon)
        self.subs = SubPositions()
        self.last_price: dict[int, int] = {}
        self.orders_by_model: dict[int, int] = {}
        self.would_be: dict[int, int] = {}  # shadow: would-be intents per model
        self.would_be_fills: dict[int, int] = {}
        self._seen_exec: set[int] = set()

    def on_orders(self, recs: np.ndarray) -> None:
        new = recs[recs["action"] == ACTION_NEW]
        for cl, m, inst in zip(
            new["client_order_id"].tolist(), new["model_id"].tolist(),
            new["instrument"].tolist(), strict=True,
        ):  # fmt: skip
            if cl in self.model_of:
                continue
            self.model_of[cl] = m
            self.open[cl] = m
            self.open_inst[cl] = inst
            self.orders_by_model[m] = self.orders_by_model.get(m, 0) + 1

    def on_reports(self, recs: np.ndarray) -> None:
        for r in recs:
            xid = int(r["exec_id"])
            if xid:
                if xid in self._seen_exec:
                    continue
                self._seen_exec.add(xid)
            cl = int(r["client_order_id"])
            et = int(r["exec_type"])
            q = int(r["last_qty"])
            if q > 0 and et in (EXEC_FILL, EXEC_PARTIAL_FILL):
                m = self.model_of.get(cl, 0)
                inst, side, px = int(r["instrument"]), int(r["side"]), int(r["last_price"])
                self.marks.add(
                    m, inst, side, float(px), int(r["ts_venue_ns"]), int(r["ts_recv_ns"])
                )
                self.subs.fill(m, inst, side, q, px, int(r["fee"]))
                self.last_price[inst] = px
            elif q > 0 and et == EXEC_BROKEN:  # a trade bust: the model's fill reversed
                m = self.model_of.get(cl, 0)
                self.subs.fill(m, int(r["instrument"]), int(r["side"]), q,
                               int(r["last_price"]), int(r["fee"]), broken=True)  # fmt: skip
            if int(r["status"]) in CLOSED:
                self.open.pop(cl, None)
                self.open_inst.pop(cl, None)

    def on_would_be(self, intents: np.ndarray, bid, ask) -> None:
        """A shadow model's would-be intents (ORDER_INTENT, ``model_version`` its id): one
        crossing the touch (``bid`` / ``ask``: arrays by instrument, the quotes it was
        decided on) is a would-be fill at the touch, marked like a real fill; one that
        would rest is counted, not filled (no queue model for would-be orders)."""
        for r in intents:
            m, inst, side = int(r["model_version"]), int(r["instrument"]), int(r["side"])
            px = int(r["limit_price"])
            touch = int(ask[inst]) if side > 0 else int(bid[inst])
            self.would_be[m] = self.would_be.get(m, 0) + 1
            if touch > 0 and (px >= touch if side > 0 else px <= touch):
                self.marks.add_virtual(
                    m, inst, side, float(touch), int(r["ts_signal_ns"]), int(r["ts_recv_ns"])
                )
                self.would_be_fills[m] = self.would_be_fills.get(m, 0) + 1

    def open_orders(self, model: int) -> list[tuple[int, int]]:
        """(client order id, instrument) of ``model``'s orders that may still rest."""
        return [(cl, self.open_inst[cl]) for cl, m in self.open.items() if m == model]


def apply_verdicts(
    reg, slot: str, verdicts: list[Verdict], *, details: dict | None = None, base_step: int = 0
) -> str:
    """What the looks so far do to ``slot`` (the CLI's ``evaluate --apply`` and the
    replay's monitor): the last one a rollback → :func:`~bot4.models.registry.rollback`
    (why: ``automatic: <tests, values, p-values>``; details: the look, its triggers and
    metrics, and ``details``); else a canary moves one ramp step per passed look not yet
    applied (after its last step it is champion; ``base_step``: the ramp step the looks
    started from). Returns ``rolled_back``, ``ramped``,
    ``promoted`` or ``none``."""
    from bot4.models import registry as R

    last = verdicts[-1] if verdicts else None
    if last is not None and last.rollback:
        R.rollback(
            reg, slot, why=f"automatic: {last.reason()}",
            details={"checkpoint": last.checkpoint, "triggers": last.triggers,
                     "metrics": last.metrics, **(details or {})},
        )  # fmt: skip
        return "rolled_back"
    passed = sum(1 for v in verdicts if v.passed)
    action = "none"
    a = reg.assignment(slot)
    while a.challenger and a.mode == "canary" and a.ramp and a.ramp_step + 1 <= passed + base_step:
        a = R.advance_ramp(reg, slot, why=f"checkpoint passed ({passed} so far)")
        action = "ramped" if a.challenger else "promoted"
    return action


class RolloutMonitor:
    """The automatic rollout of one slot, fed as fills happen (``bot4 replay``).

    ``reg`` is the registry the signals stage watches (a replay's own copy): a decision is
    an ordinary registry change, so the stage picks it up at its next batch through the
    generation word, as it would a ``bot4 models`` command. ``check(now_ns)`` runs the
    looks that the challenger's trades have reached; it returns the actions taken, each a
    dict (``action``, ``at_ns``, the look, and for a rollback the reason, the cancelled
    orders and the hand-over of the challenger's inventory to the champion). ``marks``
    (instrument -> price units) and ``cancel(orders)`` come from the caller: the replay's
    last quotes and its order ring."""

    def __init__(self, reg, slot: str, cfg: RolloutConfig) -> None:
        self.reg = reg
        self.slot = slot
        self.cfg = cfg
        self.attr = Attribution(cfg.horizon)
        self.assignment = reg.assignment(slot)
        self.initial = self.assignment
        self.verdicts: list[Verdict] = []
        self.actions: list[dict] = []
        self._start()

    def _start(self) -> None:
        a = self.assignment
        self.active = bool(self.cfg.enabled and a.challenger)
        self.champion, self.challenger = a.champion, a.challenger
        self.c0 = self.attr.marks.trades(a.champion)
        self.h0 = self.attr.marks.trades(a.challenger) if a.challenger else 0
        self.base_step = a.ramp_step  # the looks count passes from the step it is at
        self.verdicts = []

    def due(self) -> bool:
        """A look is due: cheap enough to ask after every step."""
        if not self.active or len(self.verdicts) >= self.cfg.eval.max_checkpoints:
            return False
        need = (len(self.verdicts) + 1) * self.cfg.eval.checkpoint_trades
        return self.attr.marks.trades(self.challenger) - self.h0 >= need

    def check(self, now_ns: int, marks: dict[int, int], cancel) -> list[dict]:
        out = []
        while self.due():
            k = len(self.verdicts) + 1
            m = k * self.cfg.eval.checkpoint_trades
            cr, ch = self.attr.marks.arrays(self.champion, self.c0)
            hr, hh = self.attr.marks.arrays(self.challenger, self.h0)
            v = evaluate_checkpoint(cr, ch, hr[:m], hh[:m], k, self.cfg.eval)
            self.verdicts.append(v)
            rec = {
                "at_ns": int(now_ns),
                "checkpoint": k,
                "champion": self.champion,
                "challenger": self.challenger,
                "trades": {"champion": int(cr.size), "challenger": m},
                "passed": v.passed,
                "rollback": v.rollback,
            }
            extra = {}
            if v.rollback and self.assignment.mode == "shadow":
                extra = {"at_ns": int(now_ns), "shadow": True}
                rec.update(reason=v.reason(), triggers=v.triggers, **extra)
            elif v.rollback:
                orders = self.attr.open_orders(self.challenger)
                cancel(orders)
                moved = self.attr.subs.hand_over(self.challenger, self.champion, marks)
                extra = {
                    "at_ns": int(now_ns),
                    "cancelled_orders": len(orders),
                    "inventory_to": self.champion,
                    "inventory": {str(i): d for i, d in moved.items()},
                }
                rec.update(reason=v.reason(), triggers=v.triggers, **extra)
            rec["action"] = apply_verdicts(
                self.reg, self.slot, self.verdicts, details=extra, base_step=self.base_step
            )
            if not v.rollback:
                rec["pct"] = self.reg.assignment(self.slot).pct
            out.append(rec)
            self.actions.append(rec)
            if rec["action"] != "none" or v.rollback:
                a = self.reg.assignment(self.slot)
                self.assignment = a
                if rec["action"] in ("rolled_back", "promoted"):
                    self.active = False
                    break
        return out

    def summary(self, marks: dict[int, int]) -> dict:
        """The rollout for a report: configuration, start and end assignment, every look
        and action, per-model orders, trades (marked fills), fills and PnL, and the
        sub-positions per instrument."""
        a = self.reg.assignment(self.slot)
        named = {self.initial.champion, self.initial.challenger, a.champion, a.challenger}
        models = sorted((named | set(self.attr.orders_by_model)) - {0})
        tot = self.attr.subs.totals(marks)
        per = {}
        for mid in models:
            t = tot.get(mid, {"fills": 0, "pnl": 0, "positions": {}})
            r, h = self.attr.marks.arrays(mid)
            per[str(mid)] = {
                "orders": self.attr.orders_by_model.get(mid, 0),
                "fills": t["fills"],
                "trades": int(r.size),
                "mean_markout": float(r.mean()) if r.size else None,
                "accuracy": float(h[h >= 0].mean()) if (h >= 0).any() else None,
                "pnl_units": t["pnl"],
                "positions": {str(k): v for k, v in t["positions"].items()},
                "took_inventory_of": sorted(k for k, v in self.attr.subs.heir.items() if v == mid),
            }
            if mid in self.attr.would_be:
                per[str(mid)]["would_be_intents"] = self.attr.would_be[mid]
                per[str(mid)]["would_be_fills"] = self.attr.would_be_fills.get(mid, 0)
        return {
            "slot": self.slot,
            "config": self.cfg.describe(),
            "start": _assign(self.initial),
            "end": _assign(a),
            "looks": self.actions,
            "models": per,
            "sub_positions": self.attr.subs.rows(marks),
        }


def _assign(a) -> dict:
    return {
        "generation": a.generation,
        "champion": a.champion,
        "challenger": a.challenger,
        "mode": a.mode if a.challenger else "champion",
        "pct": a.pct,
        "split": a.split,
        "ramp": list(a.ramp),
        "ramp_step": a.ramp_step,
    }


def attribution_from_journal(directory, horizon: int = 20) -> Attribution:
    """The journal's ORDER and EXEC_REPORT records through :class:`Attribution`, in
    journal order."""
    from bot4.journal import JournalReader
    from bot4.records import RT_EXEC_REPORT, RT_ORDER

    att = Attribution(horizon)
    for _frame, rtype, recs in JournalReader(directory):
        if rtype == RT_ORDER:
            att.on_orders(recs)
        elif rtype == RT_EXEC_REPORT:
            att.on_reports(recs)
    return att


def outcomes_from_journal(directory: str | Path, horizon: int = 20) -> dict[int, dict]:
    """Per ``ORDER.model_id`` (0: unattributed) the markouts of its fills, in journal order:
    ``{"returns": array, "hits": array, "ts": array}``. A fill's mark is the fill price of
    its instrument ``horizon`` fills later (any model); the last ``horizon`` fills of each
    instrument have none and are left out: :class:`Markouts`, the definition a replay's
    automatic rollout uses, in fill order."""
    mk = attribution_from_journal(directory, horizon).marks
    out: dict[int, dict] = {}
    for m in mk.returns:
        order = np.argsort(np.asarray(mk.index[m]), kind="stable")
        out[m] = {
            "returns": np.asarray(mk.returns[m], float)[order],
            "hits": np.asarray(mk.hits[m], np.int64)[order],
            "ts": np.asarray(mk.ts[m], np.int64)[order],
        }
    return out
