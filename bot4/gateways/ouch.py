"""NASDAQ OUCH 4.2: order entry messages (carried in SoupBinTCP unsequenced / sequenced
data packets), as numpy structured dtypes, big-endian, packed.

Inbound (client -> exchange)::

    'O' enter order    49 B  token(14) side(1) shares(u32) stock(8) price(u32) tif(u32)
                             firm(4) display(1) capacity(1) iso(1) min_qty(u32)
                             cross_type(1) customer_type(1)
    'U' replace order  47 B  existing token(14) replacement token(14) shares(u32)
                             price(u32) tif(u32) display(1) iso(1) min_qty(u32)
    'X' cancel order   19 B  token(14) shares(u32): the intended remaining open shares
                             (0 = cancel the whole order)

Outbound (exchange -> client), each with an 8-byte timestamp (ns since midnight) after the
type, and the token after it for order messages::

    'S' system event   10 B  event code ('S' start of day, 'E' end of day)
    'A' accepted       66 B  token side shares stock price tif firm display
                             order_ref(u64) capacity iso min_qty cross_type
                             order_state('L' live / 'D' dead) bbo_weight
    'U' replaced       80 B  replacement token, the same fields as accepted, then the
                             previous token(14) and bbo_weight
    'C' canceled       28 B  decrement shares(u32) reason(1)
    'D' AIQ canceled   37 B  decrement shares(u32) reason(1, 'Q') qty prevented(u32)
                             execution price(u32) liquidity flag(1)
    'E' executed       40 B  executed shares(u32) price(u32) liquidity flag(1)
                             match number(u64)
    'B' broken trade   32 B  match number(u64) reason(1: 'E' clearly erroneous, 'C' consent,
                             'S' supervisory, 'X' external): the execution of that match
                             number (reported by an Executed before) no longer stands
    'J' rejected       24 B  reason(1)
    'P' cancel pending 23 B  -
    'I' cancel reject  23 B  -
    'T' priority upd.  36 B  price(u32) display(1) order_ref(u64)
    'M' order modified 28 B  side(1) shares(u32)

Prices are ``Price(4)`` u32 ($ x 10_000 = bot4's default price scale); shares u32. Time in
force is seconds: 0 = immediate or cancel, 99998 = market hours, 99999 = system hours.

Tokens are 14 alphanumeric characters, day-unique per account: bot4's token for an order
is its ``client_order_id`` in base 36, upper case, zero padded (:func:`token_of`; 2^64 fits
13 digits), so a token is a pure function of the idempotent client order id and maps back
to it (:func:`coid_of`): a restarted gateway re-derives every token it ever sent.
"""

from __future__ import annotations

import numpy as np

TIF_IOC = 0
TIF_MARKET_HOURS = 99998
TIF_SYSTEM_HOURS = 99999
TOKEN_WIDTH = 14
MARKET_BUY_PRICE = 1_999_999_900  # $199,999.99: OUCH has no market orders (max Price(4))
MARKET_SELL_PRICE = 1  # $0.0001

ENTER = np.dtype(
    [
        ("type", "S1"),
        ("token", "S14"),
        ("side", "S1"),
        ("shares", ">u4"),
        ("stock", "S8"),
        ("price", ">u4"),
        ("tif", ">u4"),
        ("firm", "S4"),
        ("display", "S1"),
        ("capacity", "S1"),
        ("iso", "S1"),
        ("min_qty", ">u4"),
        ("cross_type", "S1"),
        ("customer_type", "S1"),
    ]
)
REPLACE = np.dtype(
    [
        ("type", "S1"),
        ("token", "S14"),
        ("new_token", "S14"),
        ("shares", ">u4"),
        ("price", ">u4"),
        ("tif", ">u4"),
        ("display", "S1"),
        ("iso", "S1"),
        ("min_qty", ">u4"),
    ]
)
CANCEL = np.dtype([("type", "S1"), ("token", "S14"), ("shares", ">u4")])

_OUT = [("type", "S1"), ("ts", ">u8")]
_ORD = _OUT + [("token", "S14")]
_ACCEPTED_BODY = [
    ("side", "S1"),
    ("shares", ">u4"),
    ("stock", "S8"),
    ("price", ">u4"),
    ("tif", ">u4"),
    ("firm", "S4"),
    ("display", "S1"),
    ("order_ref", ">u8"),
    ("capacity", "S1"),
    ("iso", "S1"),
    ("min_qty", ">u4"),
    ("cross_type", "S1"),
    ("order_state", "S1"),
]
SYSTEM_EVENT = np.dtype(_OUT + [("event", "S1")])
ACCEPTED = np.dtype(_ORD + _ACCEPTED_BODY + [("bbo_weight", "S1")])
REPLACED = np.dtype(_ORD + _ACCEPTED_BODY + [("prev_token", "S14"), ("bbo_weight", "S1")])
CANCELED = np.dtype(_ORD + [("decrement", ">u4"), ("reason", "S1")])
AIQ_CANCELED = np.dtype(
    _ORD
    + [
        ("decrement", ">u4"),
        ("reason", "S1"),
        ("prevented", ">u4"),
        ("price", ">u4"),
        ("liquidity", "S1"),
    ]
)
EXECUTED = np.dtype(
    _ORD + [("shares", ">u4"), ("price", ">u4"), ("liquidity", "S1"), ("match", ">u8")]
)
BROKEN_TRADE = np.dtype(_ORD + [("match", ">u8"), ("reason", "S1")])
REJECTED = np.dtype(_ORD + [("reason", "S1")])
CANCEL_PENDING = np.dtype(_ORD)
CANCEL_REJECT = np.dtype(_ORD)
PRIORITY_UPDATE = np.dtype(_ORD + [("price", ">u4"), ("display", "S1"), ("order_ref", ">u8")])
MODIFIED = np.dtype(_ORD + [("side", "S1"), ("shares", ">u4")])

INBOUND: dict[bytes, np.dtype] = {b"O": ENTER, b"U": REPLACE, b"X": CANCEL}
OUTBOUND: dict[bytes, np.dtype] = {
    b"S": SYSTEM_EVENT,
    b"A": ACCEPTED,
    b"U": REPLACED,
    b"C": CANCELED,
    b"D": AIQ_CANCELED,
    b"E": EXECUTED,
    b"B": BROKEN_TRADE,
    b"J": REJECTED,
    b"P": CANCEL_PENDING,
    b"I": CANCEL_REJECT,
    b"T": PRIORITY_UPDATE,
    b"M": MODIFIED,
}
#: message lengths of the specification (checked at import and by golden fixtures)
LENGTHS = {
    (b"in", b"O"): 49,
    (b"in", b"U"): 47,
    (b"in", b"X"): 19,
    (b"out", b"S"): 10,
    (b"out", b"A"): 66,
    (b"out", b"U"): 80,
    (b"out", b"C"): 28,
    (b"out", b"D"): 37,
    (b"out", b"E"): 40,
    (b"out", b"B"): 32,
    (b"out", b"J"): 24,
    (b"out", b"P"): 23,
    (b"out", b"I"): 23,
    (b"out", b"T"): 36,
    (b"out", b"M"): 28,
}
for (_d, _t), _n in LENGTHS.items():
    _dt = (INBOUND if _d == b"in" else OUTBOUND)[_t]
    if _dt.itemsize != _n:
        raise AssertionError(f"OUCH {_d!r} {_t!r}: dtype {_dt.itemsize} B, spec {_n} B")

# Canceled reasons (subset used by the simulator)
CANCEL_USER = b"U"  # user requested
CANCEL_IOC = b"I"  # immediate or cancel: nothing left to rest
CANCEL_SYSTEM = b"Z"  # system cancel (here: cancel on disconnect)
CANCEL_SELF_MATCH = b"Q"  # self-match prevention (AIQ)
# Broken Trade reasons (all of them)
BROKEN_ERRONEOUS = b"E"  # clearly erroneous
BROKEN_CONSENT = b"C"  # both parties agreed
BROKEN_SUPERVISORY = b"S"  # broken by the exchange's supervisory terminal
BROKEN_EXTERNAL = b"X"  # broken by an external third party
# Rejected reasons (subset)
REJECT_INVALID_STOCK = b"S"
REJECT_INVALID_PRICE = b"X"
REJECT_INVALID_SHARES = b"Z"
REJECT_OTHER = b"O"

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def token_of(coid: int) -> bytes:
    """The 14-character OUCH token of a client order id (base 36, zero padded)."""
    coid = int(coid)
    if coid <= 0 or coid >= 1 << 64:
        raise ValueError(f"client order id {coid} cannot be a token")
    out = []
    while coid:
        coid, r = divmod(coid, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out)).rjust(TOKEN_WIDTH, "0").encode("ascii")


def coid_of(token: bytes) -> int:
    """The client order id of a bot4 token (inverse of :func:`token_of`); ValueError for a
    token bot4 did not make."""
    text = bytes(token).decode("ascii").strip()
    value = int(text, 36)
    if value <= 0 or value >= 1 << 64:
        raise ValueError(f"token {token!r} is no client order id")
    return value


def decode(direction: bytes, payload: bytes) -> np.void:
    """One message as a structured scalar; ValueError for an unknown type or a length
    other than the specification's."""
    if not payload:
        raise ValueError("empty OUCH message")
    t = payload[:1]
    table = INBOUND if direction == b"in" else OUTBOUND
    dt = table.get(t)
    if dt is None:
        raise ValueError(f"unknown OUCH {direction.decode()}bound message type {t!r}")
    if len(payload) != dt.itemsize:
        raise ValueError(f"OUCH {t!r} of {len(payload)} bytes, expected {dt.itemsize}")
    return np.frombuffer(payload, dt, 1)[0]


def message(dt: np.dtype, **fields) -> bytes:
    """Encode one message of dtype ``dt`` from keyword fields (the rest zero / spaces for
    alpha fields): one tuple assigned to a structured record (numpy packs it in one call),
    alpha values space padded, never NUL."""
    spec = _SPECS.get(dt)
    if spec is None:
        spec = _SPECS[dt] = tuple(
            (name, dt.fields[name][0].itemsize if dt.fields[name][0].kind == "S" else 0)
            for name in dt.names
        )
    vals = []
    for name, alpha in spec:
        v = fields.get(name)
        if alpha:
            if v is None:
                v = b" " * alpha
            elif isinstance(v, str):
                v = v.encode("ascii").ljust(alpha)
            elif len(v) < alpha:
                v = v.ljust(alpha)
        elif v is None:
            v = 0
        vals.append(v)
    m = np.empty(1, dt)
    m[0] = tuple(vals)
    return m.tobytes()


_SPECS: dict[np.dtype, tuple] = {}  # dtype -> ((field, alpha width or 0), ...)
