"""Every order row stores the model that produced it (issue 21; events migration 0007).

ORDER.model_id (the registry id risk copies from ORDER_INTENT.model_version) lands in
``orders.model_id`` and ``order_actions.model_id`` on every load path; executions, which do
not carry it, are attributed through their order by the ``exec_reports_by_model`` view.
"""

from __future__ import annotations

import numpy as np
import pytest

from bot4.db.loader import Loader
from bot4.records import ACTION_CANCEL
from tests.db.conftest import make_flow, query, write_flow
from tests.seeds import seeded_rng

pytestmark = pytest.mark.timeout(120)

MODELS = np.array([0, 7, 12, 4_000_000_000], dtype=np.uint32)  # 0: none; a uint32 past int32


@pytest.mark.parametrize(
    ("small_batch", "fast_path", "two_phase"),
    [(10_000, True, False), (0, True, True), (0, False, False)],
    ids=["pipeline", "copy-2pc", "staging"],
)
def test_a_loaded_journal_has_the_model_of_every_order_and_fill(
    tmp_path, new_db, small_batch, fast_path, two_phase
):
    rng, _seed = seeded_rng("model attribution")
    ev = new_db()
    lg = new_db(ledger=True) if two_phase else None
    flow = make_flow(60, seed=11)
    flow.orders["model_id"] = rng.choice(MODELS, len(flow.orders))
    cancels = flow.orders[:5].copy()  # order actions carry the model too
    cancels["action"] = ACTION_CANCEL
    cancels["orig_client_order_id"] = cancels["client_order_id"]
    cancels["seq"] += np.uint64(100_000)
    flow.orders = np.concatenate([flow.orders, cancels])
    write_flow(tmp_path / "j", flow)
    with Loader(
        tmp_path / "j", ev, lg, journal_id="m", small_batch=small_batch, fast_path=fast_path
    ) as loader:
        loader.load_available()
        assert loader.stats.rejected == 0
    want = {}
    for m in flow.orders["model_id"][: len(flow.orders) - len(cancels)].tolist():
        want[m] = want.get(m, 0) + 1
    got = dict(query(ev, "SELECT model_id, count(*) FROM orders GROUP BY model_id"))
    assert {int(k): v for k, v in got.items()} == want
    acts = query(ev, "SELECT client_order_id, model_id FROM order_actions ORDER BY 1")
    assert [(int(c), int(m)) for c, m in acts] == sorted(
        zip(cancels["client_order_id"].tolist(), cancels["model_id"].tolist(), strict=True)
    )
    by_order = dict(
        zip(flow.orders["client_order_id"].tolist(), flow.orders["model_id"].tolist(), strict=False)
    )
    fills = query(
        ev, "SELECT client_order_id, model_id FROM exec_reports_by_model WHERE last_qty > 0"
    )
    assert len(fills) == len(flow.fills)
    assert all(int(m) == by_order[int(c)] for c, m in fills)
