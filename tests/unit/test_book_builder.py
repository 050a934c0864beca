"""The md stage's books, built from order messages (bot4.marketdata.builder), against
LOBSTER's own orderbook files on every sample pair, a dict model, and made-up gaps.

What a LOBSTER pair determines (the data README, "What the reference can and cannot
check"): a level-N message file carries only events that touched the N visible levels, so
when a message removes a level, the level that slides into the window from below is not
described by any message. The builder takes exactly those levels from the orderbook row
(counted ``slide_in``) and nothing else: the tests below check that the published top of
book and depth equal the orderbook file on every row, that the cross-check never found a
difference, and that the slide-ins are exactly the level-emptying messages computed from
the files alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from bot4.marketdata.builder import (
    BUILD_STATS,
    GAP_STATS,
    BookBuilder,
)
from bot4.marketdata.crosscheck import (
    compare_with_orderbook,
    copied_stream,
    emptying,
    message_of,
    published_depth,
    published_top,
)
from bot4.marketdata.lobster import find_pairs, read_pair
from bot4.records import (
    BOOK_LEVEL,
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_QUOTE,
    MD_TRADE,
    MDF_BOOK_STALE,
    MDF_LAST_IN_BATCH,
    SIDE_BUY,
    SIDE_SELL,
)
from tests.data_paths import lobster_dir
from tests.seeds import seeded_rng

UNKNOWN_REFERENCES = {  # the data README, check 3
    "AAPL-1": 14_980,
    "AMZN-1": 7_467,
    "AMZN-1-csv": 7_467,
    "AMZN-5": 8_491,
    "GOOG-1": 4_476,
    "GOOG-5": 4_951,
    "GOOG-10": 3_363,
    "AAPL-10-999": 9,
}
KEYS = list(UNKNOWN_REFERENCES)
DEEP = ["AMZN-5", "GOOG-5", "GOOG-10", "AAPL-10-999"]


def _key(pair) -> str:
    key = f"{pair.ticker}-{pair.levels}"
    if pair.message.member is None:
        key += "-999" if pair.levels == 10 else "-csv"
    return key


@pytest.fixture(scope="module")
def built():
    """key -> (records, orderbook, builder, stream, levels) for every sample pair."""
    out = {}
    for pair in find_pairs(lobster_dir(), recursive=True):
        records, book, _ = read_pair(pair)
        b = BookBuilder(int(records["instrument"].max()) + 1, pair.levels, pair.levels)
        stream, levels = b.build(records, book)
        out[_key(pair)] = (records, book, b, stream, levels)
    return out


@pytest.mark.parametrize("key", KEYS)
def test_published_top_of_book_equals_lobster_on_every_row(built, key):
    records, book, b, stream, _ = built[key]
    c = b.counters()
    assert c["checked"] == len(records)
    assert b.gaps() == dict.fromkeys(GAP_STATS, 0), "the rebuilt book never went stale"
    assert c["stale_messages"] == 0 and not (stream["flags"] & MDF_BOOK_STALE).any()
    assert c["unknown_order"] == UNKNOWN_REFERENCES[key]  # orders resting before the data
    rows = book[records["seq"].astype(np.int64) - 1]
    assert (published_top(stream, len(records)) == rows[:, :4]).all()
    # one event per message, a trade per execution, in message order
    ev = (stream["kind"] != MD_QUOTE) & (stream["kind"] != MD_TRADE)
    assert (stream[ev]["order_id"] == records["order_id"]).all()
    ex = np.isin(records["kind"], (MD_BOOK_EXEC, MD_BOOK_HIDDEN_EXEC))
    assert (stream["kind"] == MD_TRADE).sum() == ex.sum()
    # the end of a batch of equal event times is the last record of its message
    last = np.flatnonzero(stream["flags"] & MDF_LAST_IN_BATCH)
    assert (message_of(stream)[last] == np.flatnonzero(records["flags"] & MDF_LAST_IN_BATCH)).all()


@pytest.mark.parametrize("key", KEYS)
def test_only_levels_sliding_into_the_window_come_from_the_orderbook(built, key):
    """The orderbook file supplied one level per level-emptying message and nothing else
    (every row of these files has its full N levels, so one always slides in)."""
    records, book, b, _, _ = built[key]
    levels = book.shape[1] // 4
    c = b.counters()
    assert c["slide_in"] == emptying(records, book).sum()
    assert c["seeded"] == 2 * levels and c["resync"] == 0


@pytest.mark.parametrize("key", KEYS)
def test_market_data_stream_is_the_copied_one_byte_for_byte(built, key):
    """What the replay and the md stage publish from the rebuilt book is, record for
    record and byte for byte, the stream copied from the orderbook file before issue 18:
    on these files the replay's results cannot have changed."""
    records, book, _, stream, _ = built[key]
    published = stream.copy()
    published["seq"] = 0  # the stage numbers what it publishes (build_lobster_stream)
    assert published.tobytes() == copied_stream(records, book).tobytes()


@pytest.mark.parametrize("key", DEEP)
def test_every_determinable_cell_equals_the_orderbook(built, key):
    records, book, b, stream, levels = built[key]
    depth = book.shape[1] // 4
    got = published_depth(stream, levels, levels["parent_seq"], len(records), depth)
    cmp = compare_with_orderbook(records, book, got)
    assert cmp.ok, cmp.line()
    assert cmp.slid_in == 2 * cmp.emptying_messages == 2 * b.counters()["slide_in"]


@pytest.mark.parametrize("key", DEEP)
def test_published_depth_equals_lobster_on_every_row(built, key):
    records, book, b, stream, levels = built[key]
    depth = book.shape[1] // 4
    assert levels.dtype == BOOK_LEVEL and len(levels) > 0
    rows = book[records["seq"].astype(np.int64) - 1]
    got = published_depth(stream, levels, levels["parent_seq"], len(records), depth)
    assert (got[:, : 4 * (depth - 1)] == rows[:, : 4 * (depth - 1)]).all()  # determined
    assert (got == rows).all()  # and the deepest level with the slid-in levels
    assert (levels["orders"] >= 1).all() and (np.diff(levels["parent_seq"]) >= 0).all()


def test_depth_is_published_only_where_it_changed(built):
    records, book, b, stream, levels = built["AAPL-10-999"]
    prev = {}
    for r in levels:
        key = (int(r["side"]), int(r["level"]))
        now = (int(r["price"]), int(r["qty"]), int(r["orders"]))
        assert prev.get(key) != now
        prev[key] = now


def test_the_orderbook_file_is_a_cross_check_not_a_source(built):
    """Change one size in the middle of the reference: the cross-check finds it, counts
    it, flags that message stale and re-seeds from the (wrong) row; a book built without
    the check never looks at the changed size (it is not a slide-in)."""
    records, book, _, _, _ = built["AAPL-10-999"]
    bad = book.copy()
    row = 500
    bad[row, 1] += 7  # AskSize_1 after message 501
    b = BookBuilder(int(records["instrument"].max()) + 1, 10, 10)
    stream, _ = b.build(records, bad)
    assert b.counters()["check_mismatch"] >= 1 and b.counters()["resync"] >= 1
    msg = message_of(stream)
    stale = np.unique(msg[(stream["flags"] & MDF_BOOK_STALE) != 0])
    assert row in stale
    unchecked = BookBuilder(int(records["instrument"].max()) + 1, 10, 10, check=False)
    clean, _ = unchecked.build(records, bad)
    good = BookBuilder(int(records["instrument"].max()) + 1, 10, 10)
    expected, _ = good.build(records, book)
    assert clean.tobytes() == expected.tobytes()


# --- gaps and inconsistencies, made up ----------------------------------------------------


def _msgs(rows) -> np.ndarray:
    """MARKET_DATA from (kind, order_id, side, price, qty) tuples, instrument 1."""
    out = np.zeros(len(rows), MARKET_DATA)
    for i, (kind, oid, side, price, qty) in enumerate(rows):
        out[i] = (i + 1, 0, 1000 + i, 0, price, qty, oid, 1, kind, side, MDF_LAST_IN_BATCH)
    return out


def _book_without_reference():
    return BookBuilder(2, 8, 4, reference=False)


BASE = [
    (MD_BOOK_ADD, 1, SIDE_BUY, 100, 10),
    (MD_BOOK_ADD, 2, SIDE_SELL, 102, 5),
    (MD_BOOK_ADD, 3, SIDE_BUY, 99, 7),
]


def test_orders_are_applied_by_id_when_the_message_has_no_price():
    """An ITCH-style cancel / execute names only the order: the map gives price and side."""
    b = _book_without_reference()
    stream, levels = b.build(
        _msgs([*BASE, (MD_BOOK_EXEC, 1, 0, 0, 4), (MD_BOOK_CANCEL, 3, 0, 0, 7)])
    )
    assert b.top(1, 2).tolist() == [102, 5, 100, 6, 9999999999, 0, -9999999999, 0]
    assert b.gaps() == dict.fromkeys(GAP_STATS, 0) and b.counters()["unknown_order"] == 0
    q = stream[stream["kind"] == MD_QUOTE]
    assert [(int(r["side"]), int(r["price"]), int(r["qty"])) for r in q] == [
        (SIDE_BUY, 100, 10),
        (SIDE_SELL, 102, 5),
        (SIDE_BUY, 100, 6),
    ]
    assert levels["orders"][(levels["side"] == SIDE_BUY) & (levels["level"] == 1)].tolist() == [
        1,
        0,
    ]


@pytest.mark.parametrize(
    ("reason", "msg"),
    [
        ("unknown_order_gap", (MD_BOOK_EXEC, 77, 0, 0, 3)),  # no such order, no price
        ("missing_level", (MD_BOOK_DELETE, 78, SIDE_BUY, 98, 3)),  # no level at 98
        ("negative_level", (MD_BOOK_EXEC, 79, SIDE_SELL, 102, 6)),  # 6 of the 5 at 102
    ],
)
def test_a_gap_without_a_snapshot_is_counted_and_stays_stale(reason, msg):
    b = _book_without_reference()
    stream, levels = b.build(_msgs([*BASE, msg, (MD_BOOK_ADD, 4, SIDE_BUY, 101, 1)]))
    assert b.counters()[reason] == 1
    assert b.counters()["stale_messages"] == 2
    msg_of = message_of(stream)
    flagged = (stream["flags"] & MDF_BOOK_STALE) != 0
    assert (flagged == (msg_of >= 3)).all()  # every record from the gap on is flagged
    assert not (stream["kind"][msg_of >= 3] == MD_QUOTE).any()  # nothing from that book
    assert message_of(stream)[levels["parent_seq"].astype(np.int64)].max() < 3


def test_a_crossed_book_is_stale_while_it_lasts():
    b = _book_without_reference()
    stream, levels = b.build(
        _msgs(
            [
                *BASE,
                (MD_BOOK_ADD, 4, SIDE_BUY, 103, 2),  # crosses the ask at 102
                (MD_BOOK_ADD, 5, SIDE_BUY, 98, 1),  # still crossed
                (MD_BOOK_DELETE, 4, SIDE_BUY, 103, 2),  # uncrossed
            ]
        )
    )
    assert b.counters()["crossed"] == 1 and b.counters()["stale_messages"] == 2
    msg_of = message_of(stream)
    flagged = (stream["flags"] & MDF_BOOK_STALE) != 0
    assert (flagged == np.isin(msg_of, (3, 4))).all()
    # consistent again: the first message after publishes what changed since the last
    # publication (the bid is back at 100 x 10: no quote; level 3 of the bids is new)
    last = stream[msg_of == 5]
    assert not (last["kind"] == MD_QUOTE).any()
    lv = levels[message_of(stream)[levels["parent_seq"].astype(np.int64)] == 5]
    assert [(int(r["level"]), int(r["price"])) for r in lv] == [(2, 98)]


def test_a_gap_with_reference_rows_is_resynced_from_the_next_row():
    """With reference rows the book is re-seeded at once: only the gap's own message is
    flagged, and the next one publishes again."""
    msgs = _msgs([*BASE, (MD_BOOK_DELETE, 78, SIDE_BUY, 98, 3), (MD_BOOK_ADD, 4, SIDE_BUY, 101, 1)])
    ref = np.array(
        [
            [102, 0, 100, 10, 0, 0, 0, 0],  # row 1 after message 1 (no ask yet)
            [102, 5, 100, 10, 0, 0, 0, 0],
            [102, 5, 100, 10, 0, 0, 99, 7],
            [102, 5, 100, 10, 0, 0, 99, 7],  # the delete at 98 changes nothing visible
            [102, 5, 101, 1, 0, 0, 100, 10],
        ],
        np.int64,
    )
    b = BookBuilder(2, 2, 2, reference=True, check=True)
    stream, _ = b.build(msgs, ref)
    c = b.counters()
    assert c["missing_level"] == 1 and c["resync"] == 1 and c["stale_messages"] == 1
    flagged = message_of(stream)[(stream["flags"] & MDF_BOOK_STALE) != 0]
    assert set(flagged.tolist()) == {3}
    assert b.top(1, 2).tolist() == [102, 5, 101, 1, 9999999999, 0, 100, 10]


def test_a_resync_that_moved_the_other_side_is_published_by_the_next_message():
    """The gap's row has the ask moved (a change no message described): the book is
    re-seeded from it while the gap's message is flagged stale, so the next message, a bid
    add, publishes the ask's quote and levels too, not only its own side's."""
    msgs = _msgs([*BASE, (MD_BOOK_DELETE, 78, SIDE_BUY, 98, 3), (MD_BOOK_ADD, 4, SIDE_BUY, 101, 1)])
    ref = np.array(
        [
            [102, 0, 100, 10, 0, 0, 0, 0],
            [102, 5, 100, 10, 0, 0, 0, 0],
            [102, 5, 100, 10, 0, 0, 99, 7],
            [103, 8, 100, 10, 0, 0, 99, 7],  # the ask moved behind the messages' back
            [103, 8, 101, 1, 0, 0, 100, 10],
        ],
        np.int64,
    )
    b = BookBuilder(2, 2, 2, reference=True, check=True)
    stream, levels = b.build(msgs, ref)
    assert b.counters()["resync"] == 1 and b.counters()["check_mismatch"] == 1
    at = message_of(stream)
    quotes = stream[(at == 4) & (stream["kind"] == MD_QUOTE)]
    assert {(int(q["side"]), int(q["price"]), int(q["qty"])) for q in quotes} == {
        (SIDE_SELL, 103, 8),
        (SIDE_BUY, 101, 1),
    }
    asks = levels[(at[levels["parent_seq"].astype(np.int64)] == 4) & (levels["side"] == SIDE_SELL)]
    assert [(int(r["level"]), int(r["price"]), int(r["qty"])) for r in asks] == [(0, 103, 8)]


# --- against a dict model -------------------------------------------------------------------


def _model_levels(live: dict[int, list[int]], side: int) -> list[tuple[int, int, int]]:
    """(price, size, orders) of one side of the live orders, best first."""
    model: dict[int, list[int]] = {}
    for sd, price, q in live.values():
        if sd == side:
            lv = model.setdefault(price, [0, 0])
            lv[0] += q
            lv[1] += 1
    return sorted(((p, *v) for p, v in model.items()), reverse=side > 0)


def _random_flow(rng, live, count, p_add, bids, asks, by_id):
    """``count`` random order messages (kind, order_id, side, price, qty): adds (share
    ``p_add``) at prices uniform in ``bids`` / ``asks`` (half-open ranges), else a partial
    cancel, delete or execution of a random live order, by id only (price and side 0) with
    probability ``by_id``. ``live`` (id -> [side, price, qty]) is kept up to date; yields
    (row, the order's price) after applying each."""
    nxt = 1
    for _ in range(count):
        if not live or rng.random() < p_add:
            side = SIDE_BUY if rng.random() < 0.5 else SIDE_SELL
            price = int(rng.integers(*(bids if side == SIDE_BUY else asks)))
            q = int(rng.integers(1, 50))
            live[nxt] = [side, price, q]
            row = (MD_BOOK_ADD, nxt, side, price, q)
            nxt += 1
        else:
            oid = int(rng.choice(list(live)))
            side, price, q = live[oid]
            kind = int(rng.choice([MD_BOOK_CANCEL, MD_BOOK_DELETE, MD_BOOK_EXEC]))
            take = q if kind == MD_BOOK_DELETE else int(rng.integers(1, q + 1))
            anon = rng.random() < by_id
            row = (kind, oid, 0 if anon else side, 0 if anon else price, take)
            live[oid][2] -= take
            if live[oid][2] == 0:
                del live[oid]
        yield row, price


def test_builder_matches_a_dict_model_on_random_order_flow():
    """Random adds, partial cancels, deletes and executions (by id, with and without the
    price on the message) on a window wider than the prices used: after every message the
    builder's levels (size and order count) equal a dict of live orders aggregated."""
    rng, _seed = seeded_rng("builder dict model")
    live: dict[int, list[int]] = {}  # id -> [side, price, qty]
    rows, want = [], []
    for row, _price in _random_flow(rng, live, 3000, 0.45, (90, 100), (100, 110), by_id=0.3):
        rows.append(row)
        want.append([_model_levels(live, side) for side in (SIDE_BUY, SIDE_SELL)])
    # the book after every message, from the BOOK_LEVEL updates it published (every
    # position of a window wider than the prices used: 10 a side)
    b = BookBuilder(2, 32, 20, reference=False)
    stream, levels = b.build(_msgs(rows))
    at = message_of(stream)[levels["parent_seq"].astype(np.int64)]
    book = {}
    k = 0
    for m in range(len(rows)):
        while k < len(levels) and at[k] == m:
            r = levels[k]
            book[(int(r["side"]), int(r["level"]))] = (
                int(r["price"]),
                int(r["qty"]),
                int(r["orders"]),
            )
            k += 1
        for j, side in enumerate((SIDE_BUY, SIDE_SELL)):
            got = [book[(side, p)] for p in range(20) if book.get((side, p), (0, 0, 0))[1] > 0]
            assert got == want[m][j], (m, rows[m])
    assert b.gaps() == dict.fromkeys(GAP_STATS, 0)
    assert len(BUILD_STATS) == len(set(BUILD_STATS))


def test_deep_sides_match_a_dict_model_level_by_level():
    """Sides of ~300 levels (md_gateway's full-depth books): random adds, partial cancels,
    deletes and executions anywhere in the book, most of them past the ``NEAR`` levels
    ``_find`` scans before it bisects. After every message every level (price and size,
    best first) equals a dict of the live orders aggregated."""
    from bot4.marketdata.book_step import NEAR

    rng, _seed = seeded_rng("builder deep sides")
    live: dict[int, list[int]] = {}  # id -> [side, price, qty]
    b = BookBuilder(2, 1024, 0, reference=False)
    deep = 0
    flow = _random_flow(rng, live, 2500, 0.55, (1000, 1300), (1300, 1600), by_id=1.0)
    for m, (row, price) in enumerate(flow):
        if row[0] != MD_BOOK_ADD:
            side = SIDE_BUY if price < 1300 else SIDE_SELL
            better = {p for sd, p, _ in live.values() if sd == side and (p - price) * side > 0}
            deep += len(better) >= NEAR
        b.build(_msgs([row]))
        top = b.top(1, 400).reshape(400, 4)
        for side, cols in ((SIDE_BUY, (2, 3)), (SIDE_SELL, (0, 1))):
            want = [(p, q) for p, q, _ in _model_levels(live, side)]
            got = [(int(r[cols[0]]), int(r[cols[1]])) for r in top if r[cols[1]] > 0]
            assert got == want, (m, row)
    assert deep > 500, f"only {deep} reductions past the {NEAR} best levels"
    assert b.gaps() == dict.fromkeys(GAP_STATS, 0)
    assert b.counters()["dropped_level"] == 0


def test_orders_beyond_a_full_window_are_no_gap():
    """A window of 4 bid levels: the 5th and 6th adds lie beyond it (kept in the order map
    only), a better add then pushes a tracked level out. Reducing those orders later finds
    no level: counted ``beyond_window``, not a gap, and the book is never stale. A
    reduction at a missing price the window covers still is a gap."""
    b = BookBuilder(2, 4, 0, reference=False)
    rows = [(MD_BOOK_ADD, k, SIDE_BUY, 100 - k, 10) for k in range(1, 7)]  # 99 .. 94
    rows += [(MD_BOOK_ADD, 7, SIDE_BUY, 100, 1)]  # 96 falls out
    rows += [
        (MD_BOOK_DELETE, 6, 0, 0, 10),
        (MD_BOOK_EXEC, 4, 0, 0, 3),
        (MD_BOOK_CANCEL, 5, 0, 0, 2),
    ]
    stream, _ = b.build(_msgs(rows))
    assert b.top(1, 4).tolist()[2::4] == [100, 99, 98, 97]
    c = b.counters()
    assert c["beyond_window"] == 3 and c["dropped_level"] == 1
    assert b.gaps() == dict.fromkeys(GAP_STATS, 0) and c["stale_messages"] == 0
    assert not (stream["flags"] & MDF_BOOK_STALE).any()
    b.build(_msgs([(MD_BOOK_CANCEL, 0, SIDE_BUY, 101, 1)]))  # a price the window covers
    assert b.counters()["missing_level"] == 1 and b.counters()["beyond_window"] == 3
