"""Inline SVG charts for the replay report: a line chart (equity, drawdown) and a bar chart
(latency histogram). Plain strings, no scripts, no external resources; numbers are
printed with fixed precision so the same data gives the same bytes."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "line_chart"]

W, H = 720, 240
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 28, 36


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def _nice(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e3:
        return f"{v / 1e3:.2f}k"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _frame(title: str, body: str, y_lo: float, y_hi: float, x_lo: str, x_hi: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" role="img" aria-label="{escape(title)}">'
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>'
        f'<text x="{PAD_L}" y="18" font-family="sans-serif" font-size="13" '
        f'font-weight="bold">{escape(title)}</text>'
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#888"/>'
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#888"/>'
        f'<text x="{PAD_L - 6}" y="{PAD_T + 4}" font-family="sans-serif" font-size="10" '
        f'text-anchor="end">{escape(_nice(y_hi))}</text>'
        f'<text x="{PAD_L - 6}" y="{H - PAD_B}" font-family="sans-serif" font-size="10" '
        f'text-anchor="end">{escape(_nice(y_lo))}</text>'
        f'<text x="{PAD_L}" y="{H - PAD_B + 16}" font-family="sans-serif" font-size="10">'
        f"{escape(x_lo)}</text>"
        f'<text x="{W - PAD_R}" y="{H - PAD_B + 16}" font-family="sans-serif" font-size="10" '
        f'text-anchor="end">{escape(x_hi)}</text>'
        f"{body}</svg>"
    )


def line_chart(
    xs: Sequence[float],
    ys: Sequence[float],
    title: str,
    *,
    x_lo: str = "",
    x_hi: str = "",
    color: str = "#1f5fa8",
    fill_to_zero: bool = False,
) -> str:
    """A polyline of ``ys`` over ``xs`` (both as given units), with a zero line when the
    range spans zero. At most 2000 points are drawn (evenly thinned, last point kept)."""
    n = len(xs)
    if n == 0:
        return _frame(title + " (no data)", "", 0.0, 0.0, x_lo, x_hi)
    step = max(1, n // 2000)
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    x0, x1 = float(xs[0]), float(xs[-1])
    y0 = min(0.0, min(float(ys[i]) for i in idx))
    y1 = max(0.0, max(float(ys[i]) for i in idx))
    if x1 == x0:
        x1 = x0 + 1.0
    if y1 == y0:
        y1 = y0 + 1.0
    sx = (W - PAD_L - PAD_R) / (x1 - x0)
    sy = (H - PAD_T - PAD_B) / (y1 - y0)

    def px(i: int) -> str:
        return (
            f"{_fmt(PAD_L + (float(xs[i]) - x0) * sx)},{_fmt(H - PAD_B - (float(ys[i]) - y0) * sy)}"
        )

    pts = " ".join(px(i) for i in idx)
    zero_y = H - PAD_B - (0.0 - y0) * sy
    body = (
        f'<line x1="{PAD_L}" y1="{_fmt(zero_y)}" x2="{W - PAD_R}" y2="{_fmt(zero_y)}" '
        f'stroke="#ccc" stroke-dasharray="4 3"/>'
    )
    if fill_to_zero:
        first = f"{_fmt(PAD_L)},{_fmt(zero_y)}"
        last = f"{_fmt(PAD_L + (float(xs[idx[-1]]) - x0) * sx)},{_fmt(zero_y)}"
        body += f'<polygon points="{first} {pts} {last}" fill="{color}" fill-opacity="0.25"/>'
    body += f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>'
    return _frame(title, body, y0, y1, x_lo, x_hi)


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str) -> str:
    """Vertical bars, one per label (e.g. a latency histogram's buckets)."""
    n = len(values)
    if n == 0:
        return _frame(title + " (no data)", "", 0.0, 0.0, "", "")
    vmax = max(float(v) for v in values) or 1.0
    bw = (W - PAD_L - PAD_R) / n
    parts = []
    for i, v in enumerate(values):
        h = (H - PAD_T - PAD_B) * float(v) / vmax
        x = PAD_L + i * bw
        parts.append(
            f'<rect x="{_fmt(x + 1)}" y="{_fmt(H - PAD_B - h)}" width="{_fmt(max(bw - 2, 1))}" '
            f'height="{_fmt(h)}" fill="#4a8c3f"><title>{escape(labels[i])}: {int(v)}</title></rect>'
        )
    step = max(1, n // 8)
    for i in range(0, n, step):
        parts.append(
            f'<text x="{_fmt(PAD_L + i * bw + bw / 2)}" y="{H - PAD_B + 28}" '
            f'font-family="sans-serif" font-size="9" text-anchor="middle">{escape(labels[i])}</text>'
        )
    return _frame(title, "".join(parts), 0.0, vmax, "", "")


# --- charts on the session clock ------------------------------------------------------------

#: tick steps of a time axis, seconds (the first giving at most 7 ticks is used)
_TIME_STEPS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800, 3600, 7200, 14400,
)  # fmt: skip


def clock_label(t_ns: int, zone, step_s: float) -> str:
    """``HH:MM``, ``HH:MM:SS`` or ``HH:MM:SS.fff`` of ``t_ns`` (ns since the epoch) in
    ``zone``, as fine as the axis step needs."""
    from datetime import datetime

    dt = datetime.fromtimestamp(t_ns / 1e9, zone)
    if step_s < 1:
        return dt.strftime("%H:%M:%S.") + f"{(t_ns // 1_000_000) % 1000:03d}"
    return dt.strftime("%H:%M" if step_s >= 60 and step_s % 60 == 0 else "%H:%M:%S")


def _y_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    import math

    span = hi - lo
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + 1e-9 * span:
        out.append(round(v, 12))
        v += step
    return out


def time_chart(
    title: str,
    t0_ns: int,
    t1_ns: int,
    zone,
    *,
    lines: Sequence[tuple] = (),
    segments: Sequence[tuple] = (),
    markers: Sequence[tuple] = (),
    fill_to_zero: bool = False,
    include_zero: bool = False,
    height: int = H,
    css_class: str = "chart",
) -> str:
    """A chart over the session clock: x from ``t0_ns`` to ``t1_ns`` with clock-time ticks
    in ``zone``; y fitted to everything drawn.

    * ``lines``: ``(times_ns, values, color, step)`` — a polyline (``step``: held until the
      next point, as a position is), at most 2000 points drawn (evenly thinned);
    * ``segments``: ``(t_from_ns, t_to_ns, y, color, tip)`` — horizontal bars (our resting
      quotes), at most 5000;
    * ``markers``: ``(t_ns, y, side, tip)`` — every one drawn (our fills): a triangle up
      (``side`` > 0, buy, green) or down (sell, red), class ``fill buy`` / ``fill sell``, so
      the number of fill markers is the number of fills.
    """
    from html import escape as esc

    w, h = W, height
    x_span = max(1, t1_ns - t0_ns)
    ys: list[float] = []
    for _t, v, *_ in lines:
        ys.extend(float(x) for x in v)
    ys.extend(float(s[2]) for s in segments)
    ys.extend(float(m[1]) for m in markers)
    if not ys:
        return _frame(title + " (no data)", "", 0.0, 0.0, "", "")
    y0, y1 = min(ys), max(ys)
    if include_zero:
        y0, y1 = min(y0, 0.0), max(y1, 0.0)
    if y1 == y0:
        y0, y1 = y0 - 1.0, y1 + 1.0
    pad = (y1 - y0) * 0.06
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = w - PAD_L - PAD_R, h - PAD_T - PAD_B

    def X(t: float) -> float:
        return PAD_L + (float(t) - t0_ns) * pw / x_span

    def Y(v: float) -> float:
        return h - PAD_B - (float(v) - y0) * ph / (y1 - y0)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" viewBox="0 0 {w} {h}" '
        f'width="{w}" height="{h}" role="img" aria-label="{esc(title)}">',
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
        f'<text x="{PAD_L}" y="18" font-family="sans-serif" font-size="13" '
        f'font-weight="bold">{esc(title)}</text>',
    ]
    for v in _y_ticks(y0, y1):
        yy = _fmt(Y(v))
        parts.append(
            f'<line x1="{PAD_L}" y1="{yy}" x2="{w - PAD_R}" y2="{yy}" stroke="#eee"/>'
            f'<text x="{PAD_L - 6}" y="{yy}" dy="3" font-family="sans-serif" font-size="10" '
            f'text-anchor="end">{esc(_nice(v))}</text>'
        )
    span_s = x_span / 1e9
    step = next((s for s in _TIME_STEPS if span_s / s <= 7), _TIME_STEPS[-1])
    step_ns = int(step * 1e9)
    first = -(-t0_ns // step_ns) * step_ns
    for t in range(first, t1_ns + 1, step_ns):
        xx = _fmt(X(t))
        parts.append(
            f'<line x1="{xx}" y1="{PAD_T}" x2="{xx}" y2="{h - PAD_B}" stroke="#f0f0f0"/>'
            f'<text x="{xx}" y="{h - PAD_B + 14}" font-family="sans-serif" font-size="10" '
            f'text-anchor="middle">{esc(clock_label(t, zone, step))}</text>'
        )
    parts.append(
        f'<line x1="{PAD_L}" y1="{h - PAD_B}" x2="{w - PAD_R}" y2="{h - PAD_B}" stroke="#888"/>'
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{h - PAD_B}" stroke="#888"/>'
    )
    if include_zero and y0 < 0 < y1:
        zy = _fmt(Y(0.0))
        parts.append(
            f'<line x1="{PAD_L}" y1="{zy}" x2="{w - PAD_R}" y2="{zy}" stroke="#bbb" '
            'stroke-dasharray="4 3"/>'
        )
    for ts, vals, color, stepped in lines:
        n = len(ts)
        if n == 0:
            continue
        k = max(1, n // 2000)
        idx = list(range(0, n, k))
        if idx[-1] != n - 1:
            idx.append(n - 1)
        pts = []
        prev_y = None
        for i in idx:
            xx, yy = _fmt(X(ts[i])), _fmt(Y(vals[i]))
            if stepped and prev_y is not None:
                pts.append(f"{xx},{prev_y}")
            pts.append(f"{xx},{yy}")
            prev_y = yy
        if stepped:
            pts.append(f"{_fmt(X(t1_ns))},{prev_y}")
        poly = " ".join(pts)
        if fill_to_zero:
            zy = _fmt(Y(0.0))
            parts.append(
                f'<polygon points="{_fmt(X(ts[idx[0]]))},{zy} {poly} '
                f'{poly.rsplit(" ", 1)[-1].split(",")[0]},{zy}" fill="{color}" '
                'fill-opacity="0.25"/>'
            )
        parts.append(
            f'<polyline class="series" points="{poly}" fill="none" stroke="{color}" '
            'stroke-width="1.3"/>'
        )
    for a, b, v, color, tip in segments[:5000]:
        yy = _fmt(Y(v))
        parts.append(
            f'<line class="quote" x1="{_fmt(X(a))}" y1="{yy}" x2="{_fmt(max(X(b), X(a) + 1))}" '
            f'y2="{yy}" stroke="{color}" stroke-width="3" stroke-opacity="0.45">'
            f"<title>{esc(tip)}</title></line>"
        )
    for t, v, side, tip in markers:
        xx, yy = X(t), Y(v)
        if side > 0:
            d = f"M{_fmt(xx)},{_fmt(yy - 4)} l4,7 h-8 z"
            cls, color = "fill buy", "#1a8a3a"
        else:
            d = f"M{_fmt(xx)},{_fmt(yy + 4)} l4,-7 h-8 z"
            cls, color = "fill sell", "#c0392b"
        parts.append(f'<path class="{cls}" d="{d}" fill="{color}"><title>{esc(tip)}</title></path>')
    parts.append("</svg>")
    return "".join(parts)
