"""The HTML load-test report: made by a real (short) load test, rendered in headless Chromium.

The report is checked the way a person would look at it: Chromium opens the file with no network,
and the test reads the drawn page (the DOM after plotly ran: legend entries, line paths, bars,
shaded windows) and the pixels of a screenshot (the series' colours are there). Without Chromium
the rendering tests skip with a reason, except in CI, where they fail.

``CLUSTERINVAL_UPDATE_DOCS_PNG=1`` also copies the screenshot to docs/loadtest-report.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clusterinval.cli.main import app

plotly = pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")

from clusterinval.loadtest.html_report import (  # noqa: E402
    LOAD_SERIES,
    bench_figure,
    write_bench_html,
)
from clusterinval.testing.pytest_plugin import in_ci  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOCS_PNG = ROOT / "docs" / "loadtest-report.png"
WINDOW = (1150, 1650)
# Colours of the series (see html_report._COLORS), as drawn in the screenshot.
GET_BLUE = (0x1F, 0x77, 0xB4)
DELETED_PURPLE = (0x94, 0x67, 0xBD)
LATENCY_BROWN = (0x8C, 0x56, 0x4B)


def chromium_binary() -> str:
    """Debian's chromium; skip without it (fail in CI, which installs it)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    reason = "chromium is not installed (apt-get install -y --no-install-recommends chromium)"
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def run_chromium(
    binary: str, page: Path, work: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``page``, its profile and caches kept under ``work``."""
    env = {**os.environ, "HOME": str(work), "XDG_CONFIG_HOME": str(work / "config"),
           "XDG_CACHE_HOME": str(work / "cache")}
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={work / 'profile'}",
           "--virtual-time-budget=15000", *args, page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def png_pixels(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit RGB or RGBA, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        prev = line
    pixels = [(row[i], row[i + 1], row[i + 2]) for row in rows
              for i in range(0, stride, channels)]
    return width, height, pixels


@pytest.fixture(scope="module")
def load_report(
    local_cluster: object, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object]]:
    """A short real load test on the session cluster, with --report and --out."""
    from clusterinval.testing.local import LocalCluster

    assert isinstance(local_cluster, LocalCluster)
    local_cluster.flushall()
    out = tmp_path_factory.mktemp("report")
    page, data = out / "report.html", out / "report.json"
    result = CliRunner().invoke(app, [
        "loadtest", "--url", local_cluster.url, "--keys", "5000", "--baseline", "2",
        "--duration", "5", "--rate", "400", "--inv-rate", "4", "--workers", "4",
        "--metrics-port", "-1", "--out", str(data), "--report", str(page)])
    assert result.exit_code == 0, result.output
    local_cluster.flushall()
    return page, json.loads(data.read_text())


def test_report_is_one_self_contained_file(load_report: tuple[Path, dict[str, object]]) -> None:
    page, _ = load_report
    text = page.read_text()
    assert "Final check: PASS" in text
    # plotly.js is inlined: no script, stylesheet or font is fetched from anywhere.
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=\"?https?:", text)
    assert "Plotly.newPlot" in text


def test_report_renders_every_chart(
    load_report: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    binary = chromium_binary()
    page, data = load_report
    dom = run_chromium(binary, page, tmp_path, "--dump-dom").stdout
    legend = re.findall(r'class="legendtext"[^>]*data-unformatted="([^"]*)"', dom)
    assert legend == list(LOAD_SERIES)
    lines = re.findall(r'class="js-line"[^>]*\sd="M[\d.,LM-]{20,}', dom)
    assert len(lines) >= 4, "the GET/SET p50/p99 lines are not drawn"
    bars = re.findall(r'<g class="point"><path d="M[^"]+"', dom)
    assert len(bars) >= 5, "no bars drawn (keys deleted/s, latency histogram)"
    windows = re.findall(r'<path data-index="\d+" fill-rule="evenodd" d="M[^"]+"', dom)
    assert windows, "the invalidation windows are not shaded"
    assert 'id="final-check"' in dom and "Final check: PASS" in dom
    assert isinstance(data["final_check"], dict) and data["final_check"]["ok"] is True


def test_screenshot_shows_the_series(
    load_report: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    binary = chromium_binary()
    page, _ = load_report
    shot = tmp_path / "report.png"
    run_chromium(binary, page, tmp_path, "--hide-scrollbars",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}")
    width, height, pixels = png_pixels(shot)
    assert (width, height) == WINDOW
    colors = Counter(pixels)
    assert len(colors) > 50, "the screenshot is (nearly) blank"
    white = colors[(255, 255, 255)]
    assert white < 0.97 * len(pixels)
    assert colors[GET_BLUE] > 100, "no GET latency line"
    assert colors[DELETED_PURPLE] > 500, "no keys-deleted bars"
    assert colors[LATENCY_BROWN] > 500, "no latency histogram"
    if os.environ.get("CLUSTERINVAL_UPDATE_DOCS_PNG"):
        shutil.copyfile(shot, DOCS_PNG)


BENCH = {
    "size": 20000, "repeat": 3, "verified": True,
    "scenarios": [
        {"name": "S1", "tools": [
            {"tool": "clusterinval", "median_s": 0.2, "min_s": 0.18, "max_s": 0.25,
             "verified": True},
            {"tool": "keys_del", "median_s": 0.9, "min_s": 0.8, "max_s": 1.0, "verified": True},
        ]},
        {"name": "S2", "tools": [
            {"tool": "clusterinval", "median_s": 0.4, "min_s": 0.35, "max_s": 0.5,
             "verified": True},
            {"tool": "keys_del", "skipped": "too slow"},
        ]},
    ],
}


def test_bench_report(tmp_path: Path) -> None:
    fig = bench_figure(BENCH)
    traces = {t.name: (list(t.x), list(t.y)) for t in fig.data}
    assert traces == {"clusterinval": (["S1", "S2"], [0.2, 0.4]), "keys_del": (["S1"], [0.9])}
    page = tmp_path / "bench.html"
    write_bench_html(page, BENCH)
    text = page.read_text()
    assert "Every run verified" in text and "too slow" in text
    assert not re.search(r"<script[^>]+src=", text)
