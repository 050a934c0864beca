"""Positions: how fills move one strategy's position in one instrument (average cost, in
fixed point), and the SQL that reads and writes the ``positions`` rows.

The loader moves positions only by the fills its transaction inserted, in journal order:
read the rows (:data:`POSITIONS_READ_SQL`), apply the fills (:func:`positions_moved`),
upsert them (:data:`POSITIONS_WRITE_SQL`) — or, when it knows the positions from its own
last commit, in the same round trip as the INSERTs through ``bot4_positions_cas``
(:data:`POSITIONS_CAS_SQL`), which refuses with :data:`CAS_MISS` unless every fill was
inserted and every row is still the one it knows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal

from bot4.db.encoding import Instruments
from bot4.db.rows import Part
from bot4.records.accounting import average_cost_fill
from bot4.records.dtypes import EXEC_BROKEN, SIDE_BUY
from bot4.records.fixed import from_fixed, to_fixed

__all__ = [
    "CAS_MISS",
    "POSITIONS_CAS_SQL",
    "POSITIONS_READ_SQL",
    "POSITIONS_WRITE_SQL",
    "Position",
    "apply_fill",
    "cas_params",
    "position_keys",
    "positions_from_rows",
    "positions_moved",
]

CAS_MISS = "B4003"  # bot4_positions_cas: a fill not inserted, or a position moved meanwhile
POSITIONS_CAS_SQL = (
    "SELECT bot4_positions_cas(%s, %s::integer[], %s::integer[], %s::bigint[], %s::bigint[], "
    "%s::numeric[], %s::numeric[], %s::numeric[], %s::bigint[], %s::bigint[], %s::bigint[], "
    "%s::numeric[], %s::bigint[])"
)

POSITIONS_READ_SQL = """
SELECT strategy, instrument, qty, cost, realised_pnl, fees, bought_qty, sold_qty, fills,
       last_exec_id, last_ts_venue_ns
FROM positions
WHERE (strategy, instrument) IN (SELECT * FROM unnest(%s::integer[], %s::integer[]))
"""

POSITIONS_WRITE_SQL = """
INSERT INTO positions (strategy, instrument, qty, cost, realised_pnl, fees, bought_qty,
                       sold_qty, fills, last_exec_id, last_ts_venue_ns, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (strategy, instrument) DO UPDATE
   SET qty = EXCLUDED.qty, cost = EXCLUDED.cost, realised_pnl = EXCLUDED.realised_pnl,
       fees = EXCLUDED.fees, bought_qty = EXCLUDED.bought_qty, sold_qty = EXCLUDED.sold_qty,
       fills = EXCLUDED.fills, last_exec_id = EXCLUDED.last_exec_id,
       last_ts_venue_ns = EXCLUDED.last_ts_venue_ns, updated_at = now()
"""


@dataclass(slots=True)
class Position:
    """One strategy's position in one instrument, in fixed-point integers.

    ``cost`` and ``realised`` are in price units times shares (currency = value / scale),
    ``fees`` in price units. Average cost: see :func:`apply_fill`.
    """

    qty: int = 0
    cost: int = 0
    realised: int = 0
    fees: int = 0
    bought: int = 0
    sold: int = 0
    fills: int = 0
    last_exec_id: int | None = None
    last_ts_venue_ns: int | None = None


def apply_fill(
    p: Position,
    side: int,
    qty: int,
    price: int,
    fee: int,
    exec_id: int,
    ts_venue_ns: int,
    broken: bool = False,
) -> None:
    """Move ``p`` by one fill (``qty`` > 0 shares at ``price`` units, ``fee`` units), or
    with ``broken`` reverse the fill a trade bust (``EXEC_BROKEN``) names: the opposite
    side at the same price, the fee given back, the fill's side's bought / sold quantity
    taken back; ``fills`` counts every row that moved the position, busts included.

    Average cost by :func:`bot4.records.accounting.average_cost_fill`, the rule the risk
    stage keeps its positions by, so the table and risk agree to the unit.
    """
    signed = qty if side == SIDE_BUY else -qty
    p.fills += 1
    if broken:
        p.fees -= fee
        if signed > 0:
            p.bought -= qty
        else:
            p.sold -= qty
        signed = -signed
    else:
        p.fees += fee
        if signed > 0:
            p.bought += qty
        else:
            p.sold += qty
    q, c, realised, _closed = average_cost_fill(p.qty, p.cost, signed, price)
    p.qty, p.cost = int(q), int(c)
    p.realised += int(realised)
    p.last_exec_id = exec_id
    p.last_ts_venue_ns = ts_venue_ns


# --- batches --------------------------------------------------------------------------------


def position_keys(fills: Part) -> tuple[list[int], list[int]]:
    """(strategies, instruments) of the positions ``fills`` move, as query arrays."""
    r = fills.records
    keys = sorted(set(zip(r["strategy"].tolist(), r["instrument"].tolist(), strict=True)))
    return [k[0] for k in keys], [k[1] for k in keys]


def positions_from_rows(rows: list[tuple], inst: Instruments) -> dict[tuple[int, int], Position]:
    """The rows of :data:`POSITIONS_READ_SQL` as positions by (strategy, instrument)."""
    current = {}
    for s, i, qty, cost, realised, fees, bought, sold, n, last_id, last_ts in rows:
        scale = inst.scale(i)
        current[(s, i)] = Position(
            qty, to_fixed(cost, scale), to_fixed(realised, scale), to_fixed(fees, scale),
            bought, sold, n, None if last_id is None else int(last_id), last_ts,
        )  # fmt: skip
    return current


def positions_moved(
    current: dict[tuple[int, int], Position], fills: Part, inst: Instruments
) -> tuple[list[tuple], dict[tuple[int, int], Position]]:
    """Apply ``fills`` in journal order to copies of ``current``; the upsert rows of
    the moved positions (NUMERIC from fixed point, exact; sorted by key) and the moved
    positions."""
    r = fills.records
    cols = zip(
        r["strategy"].tolist(), r["instrument"].tolist(), r["side"].tolist(),
        r["last_qty"].tolist(), r["last_price"].tolist(), r["fee"].tolist(),
        r["exec_id"].tolist(), r["ts_venue_ns"].tolist(),
        (r["exec_type"] == EXEC_BROKEN).tolist(), strict=True,
    )  # fmt: skip
    moved: dict[tuple[int, int], Position] = {}
    for s, i, side, qty, price, fee, exec_id, ts, broken in cols:
        p = moved.get((s, i))
        if p is None:
            was = current.get((s, i))
            p = Position() if was is None else dataclasses.replace(was)
            moved[(s, i)] = p
        apply_fill(p, side, qty, price, fee, exec_id, ts, broken)
    out = []
    for (s, i), p in sorted(moved.items()):
        scale = inst.scale(i)
        last = None if p.last_exec_id is None else Decimal(p.last_exec_id)
        out.append(
            (
                s, i, p.qty, from_fixed(p.cost, scale), from_fixed(p.realised, scale),
                from_fixed(p.fees, scale), p.bought, p.sold, p.fills, last,
                p.last_ts_venue_ns,
            )
        )  # fmt: skip
    return out, moved


def cas_params(
    known: dict[tuple[int, int], Position], fills: Part, inst: Instruments
) -> tuple[tuple, dict[tuple[int, int], Position]]:
    """The parameters of :data:`POSITIONS_CAS_SQL` moving the ``known`` positions by
    ``fills`` (every fill's position must be known), and the moved positions."""
    rows, moved = positions_moved(known, fills, inst)
    expect = [known[k].fills for k in sorted(moved)]
    cols = [list(c) for c in zip(*rows, strict=True)]
    return (len(fills), cols[0], cols[1], expect, *cols[2:]), moved
