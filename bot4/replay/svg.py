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
