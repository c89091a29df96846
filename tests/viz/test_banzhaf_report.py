"""`dualex explain IMG TEXT --method banzhaf --out x.html`: the report opens in headless Chromium
without console errors, names the method and shows the sampling error instead of a completeness
error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from dualex import cli

pytestmark = pytest.mark.browser


def test_banzhaf_report_in_chromium(browser, tmp_path, monkeypatch, capsys):
    img = tmp_path / "scene.png"
    im = Image.new("RGB", (64, 64), (235, 235, 230))
    ImageDraw.Draw(im).ellipse((8, 8, 30, 30), fill=(210, 30, 30))
    im.save(img)
    out = tmp_path / "x.html"
    args = [str(img), "a red circle", "--method", "banzhaf", "--budget", "2048", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["dualex", "explain", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code
    printed = capsys.readouterr().out
    assert code in (0, None), printed
    assert "sampling error" in printed and "banzhaf" in printed

    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(Path(out).as_uri())
    pg.wait_for_selector("body[data-ready='0']", timeout=10_000)
    table = pg.inner_text("#completeness")
    caption = pg.inner_text("#completeness caption")
    ctx.close()
    assert errors == []
    assert "method, sampling error" in caption
    assert "banzhaf: weighted Banzhaf interactions" in table
    assert "budget 2048" in table and "sampling error" in table
    assert "first-order token" in table and "relative error" not in table
