"""The tearsheet as a browser paints it: a headless Chromium screenshots a replay's
report.html and the pixels show our fills (buy and sell marker colours) and the position
line; the same page with the fills taken away paints no marker at all, so an empty chart
fails. The browser's own DOM holds one fill marker per fill.

Needs a headless Chromium on PATH (Debian: ``apt-get install chromium-headless-shell``, which
.ci/run does): skipped, saying so, without one; under ``CI=true`` a missing browser fails the
test instead, so CI never passes without looking at the page."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace

import numpy as np
import pytest
from numba import njit

from tests.data_paths import lobster_dir

pytestmark = pytest.mark.system

BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")
BUY, SELL, POSITION = (0x1A, 0x8A, 0x3A), (0xC0, 0x39, 0x2B), (0x6A, 0x3D, 0x9A)


@njit(cache=True)
def _unfilter(raw, h, stride, bpp):
    out = np.zeros((h, stride), np.uint8)
    pos = 0
    for y in range(h):
        f = raw[pos]
        pos += 1
        for x in range(stride):
            v = np.int32(raw[pos + x])
            a = np.int32(out[y, x - bpp]) if x >= bpp else 0
            b = np.int32(out[y - 1, x]) if y > 0 else 0
            c = np.int32(out[y - 1, x - bpp]) if (x >= bpp and y > 0) else 0
            if f == 1:
                v += a
            elif f == 2:
                v += b
            elif f == 3:
                v += (a + b) // 2
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                v += a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            out[y, x] = v & 0xFF
        pos += stride
    return out


def read_png(path) -> np.ndarray:
    """(h, w, 3) uint8 of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    w = h = channels = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8)
    img = _unfilter(raw, h, w * channels, channels).reshape(h, w, channels)
    return img[:, :, :3]


def count(img: np.ndarray, rgb) -> int:
    return int(np.all(img == np.array(rgb, np.uint8), axis=2).sum())


def shoot(browser, html_path, png_path) -> np.ndarray:
    subprocess.run(
        [browser, "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=800,1500", f"--screenshot={png_path}", html_path.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    return read_png(png_path)


def browser() -> str:
    if BROWSER is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no headless Chromium on PATH (.ci/run installs chromium-headless-shell)")
        pytest.skip("no headless Chromium on PATH (apt-get install chromium-headless-shell)")
    return BROWSER


def test_the_browser_paints_every_fill_and_an_empty_chart_would_fail(tmp_path):
    from bot4.replay.runner import replay

    browser()
    out = replay(lobster_dir() / "aapl_level10_first999", tmp_path / "r", progress=None)
    rep = out.report
    buys = sum(1 for f in rep.fills if f["side"] > 0)
    sells = len(rep.fills) - buys
    assert buys > 0 and sells > 0

    dom = subprocess.run(
        [BROWSER, "--no-sandbox", "--disable-gpu", "--dump-dom", out.html_path.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert dom.count('class="fill buy"') == buys and dom.count('class="fill sell"') == sells

    img = shoot(BROWSER, out.html_path, tmp_path / "page.png")
    assert count(img, BUY) >= buys and count(img, SELL) >= sells  # markers painted
    assert count(img, POSITION) > 100  # the position line

    empty = tmp_path / "empty.html"
    empty.write_text(replace(rep, fills=[], quotes=[]).to_html())
    img = shoot(BROWSER, empty, tmp_path / "empty.png")
    assert count(img, BUY) == 0 and count(img, SELL) == 0  # what an empty chart looks like
