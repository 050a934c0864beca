"""A LOBSTER day served by the exchange simulator over ITCH 5.0 / MoldUDP64 (loopback UDP)
and received by ``md_gateway`` with packets dropped: every gap is recovered through the
re-request server, and the gateway's book equals LOBSTER's own orderbook file after every
message (every level of every row, so every determinable row too), so no message was lost
or applied twice (:func:`bot4.gateways.bookcheck.check_pair`, which ``bot4 exchange check``
runs on any pair: every sample pair passes it, see docs/gateways.md).
"""

from __future__ import annotations

import socket

import pytest

from bot4.gateways.bookcheck import check_pair
from tests.data_paths import lobster_dir

GROUP = "239.192.0.19"
pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize(
    ("pair", "drop_every", "rate", "store"),
    [
        ("aapl_level10_first999", 5, 50_000, 65536),
        ("amzn_level1", 100, 50_000, 65536),
        # the deep windows from the wire: every level of a level-5 and a level-10 day
        ("zips/LOBSTER_SampleFile_AMZN_2012-06-21_5.zip", 100, 100_000, 65536),
        ("zips/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip", 100, 100_000, 65536),
        # flat out into a 1024-message store: the receiver cannot keep up, messages beyond
        # the store are dropped (UDP is not back-pressured) and fetched again
        ("amzn_level1", 100, 0, 1024),
    ],
)
def test_lobster_day_over_itch_with_dropped_packets_rebuilds_lobsters_book(
    pair, drop_every, rate, store
):
    res = check_pair(f"{lobster_dir()}/{pair}", drop_every=drop_every, rate=rate, store=store)
    print(res)
    assert res["packets_dropped"] > 0 and res["gaps"] > 0 and res["requests"] > 0
    assert res["decoded"] == res["messages"]
    assert res["unknown_ref"] == 0 and res["bad_length"] == 0 and res["delete_mismatch"] == 0
    assert res["rows_checked"] == res["rows"], "every LOBSTER row has a message boundary"
    assert res["rows_mismatched"] == 0, f"book differs at rows {res['first_mismatches']}"
    assert res["determinable_rows"] > 0 and res["determinable_mismatches"] == 0
    assert res["bad_parent"] == 0 and res["quotes"] > 0
    assert res["ok"]
    if store < 65536:
        assert res["ahead_dropped"] > 0, "the small store never overflowed"


def test_lobster_day_over_multicast_on_loopback_rebuilds_lobsters_book():
    """The same over a multicast group on loopback (joining needs a multicast route on lo:
    skipped where the host has none)."""
    # only the host's ability to join the group decides a skip; any failure after it is
    # the gateway's (a timeout included)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        mreq = socket.inet_aton(GROUP) + socket.inet_aton("127.0.0.1")
        probe.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    except OSError as exc:
        pytest.skip(f"this host cannot join a multicast group on loopback: {exc}")
    finally:
        probe.close()
    res = check_pair(f"{lobster_dir()}/aapl_level10_first999", drop_every=5, rate=50_000,
                     group=GROUP, timeout_s=20)  # fmt: skip
    print(res)
    assert res["ok"] and res["rows_mismatched"] == 0 and res["packets_dropped"] > 0


def test_exchange_check_command_refuses_a_missing_pair_in_one_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bot4.cli", "exchange", "check", "/nonexistent"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1 and out.stdout == ""
    assert "Traceback" not in out.stderr
    assert "bot4: error: exchange check: /nonexistent:" in out.stderr


def test_synthetic_day_over_itch_with_dropped_packets_rebuilds_the_feeds_books():
    """The simulator's synthetic source (three instruments, quotes as replaced orders,
    trades as P): every message decoded once through the drops, each instrument's top of
    book at the end equal to the one the feed's own records leave."""
    from bot4.gateways.bookcheck import check_synthetic

    res = check_synthetic(20_000, 3, drop_every=50)
    print(res)
    assert res["packets_dropped"] > 0 and res["gaps"] > 0
    assert res["ok"] and res["tops_equal"] and res["quotes"] > 0
