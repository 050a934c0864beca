"""Small batches with fills in one round trip (issue 17; events migration 0008): a loader
that knows the positions a batch moves writes them by compare-and-set; when another
loader moved them meanwhile, or a fill was not inserted (a duplicate, a conflict), the
CAS refuses (B4003), nothing commits, and the batch is loaded the two-round-trip way."""

from __future__ import annotations

import pytest

from bot4.db.loader import Loader
from bot4.journal import JournalWriter
from tests.db.conftest import concat_flows, flow_frames, ledger_check, make_flow
from tests.db.test_loader import assert_positions_match

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("two_phase", [False, True], ids=["one_db", "two_phase"])
def test_one_trip_batches_and_cas_misses_keep_positions_exact(tmp_path, new_db, two_phase):
    ev = new_db()
    lg = new_db(ledger=True) if two_phase else None
    flows = [make_flow(30, start=1000 * k, seed=k, instruments=(1,), strategies=(1,))
             for k in range(4)]  # fmt: skip
    writers = [JournalWriter(tmp_path / f"j{k}", fsync="none") for k in range(2)]
    loaders = [Loader(tmp_path / f"j{k}", ev, lg, journal_id=f"j{k}", batch_records=8)
               for k in range(2)]  # fmt: skip
    try:
        # two journals move the same position in turn: each loader's known position is
        # stale whenever the other loaded in between
        for k, flow in enumerate(flows):
            frames = flow_frames(flow, 4)
            w = writers[k % 2]
            for f in frames:
                w.append(f)
            w.flush()
            loaders[k % 2].load_available()
        # a frame journalled again: its fills are not inserted, the CAS refuses
        writers[0].append(flow_frames(flows[2], 4)[2])
        writers[0].flush()
        loaders[0].load_available()
        stats = [ld.stats for ld in loaders]
        assert sum(s.one_trip_batches for s in stats) > 10
        assert sum(s.cas_misses for s in stats) >= 2
        assert all(s.conflicts == 0 and s.rejected == 0 for s in stats)
    finally:
        for ld in loaders:
            ld.close()
        for w in writers:
            w.close()
    everything = concat_flows(flows)
    assert ledger_check(lg or ev) == {"fills": len(everything.fills), "unbalanced": 0}
    assert_positions_match(ev, everything.fills, ordered=False)
