"""The HTML report in headless Chromium (Debian's, driven by Playwright; nothing downloaded).

Skips with a reason when Playwright or /usr/bin/chromium is missing (``make browser-deps``
installs chromium; ``make test`` runs these).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dualex.viz.report import write_report

pytestmark = pytest.mark.browser

EVIL_CAPTION = "<img src=x onerror=alert(1)> a red circle"
EVIL_NAME = "<img src=x onerror=alert('name')><script>alert(2)</script>.png"


@pytest.fixture(scope="module")
def report_file(tmp_path_factory, tiny_ex, make_ex):
    """A two-pair report: the tiny real explanation and a script-injection caption."""
    evil = make_ex(EVIL_CAPTION, model="<b>evil model</b>")
    path = tmp_path_factory.mktemp("report") / "report.html"
    return write_report([tiny_ex, evil], path, names=["scene.png", EVIL_NAME])


@pytest.fixture
def page(browser, report_file):
    """A fresh page on the report, collecting console errors and dialogs."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.errors, pg.dialogs = [], []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))

    def on_dialog(d):
        pg.dialogs.append(d.message)
        d.dismiss()

    pg.on("dialog", on_dialog)
    pg.goto(Path(report_file).as_uri())
    pg.wait_for_selector("body[data-ready='0']", timeout=10_000)
    yield pg
    ctx.close()


def canvas_pixels(pg) -> np.ndarray:
    """The heatmap canvas as an ``[H, W, 4]`` int array (through a PNG data URL: fast)."""
    url = pg.evaluate("document.getElementById('heatmap').toDataURL('image/png')")
    raw = base64.b64decode(url.split(",", 1)[1])
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("RGBA"), dtype=np.int16)


def token_backgrounds(pg) -> list[str]:
    return pg.eval_on_selector_all(
        "#tokens .tok:not(.special)", "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )


def test_click_a_token_updates_the_heatmap(page, tiny_ex, tmp_path):
    before = canvas_pixels(page)
    assert page.evaluate("dualexReport.selection()") == [1, 2, 3, 4, 5, 6, 7], "whole caption"
    page.locator("#tokens .tok", has_text="circle").click()
    assert page.evaluate("dualexReport.selection()") == [3], "a click selects one token"
    after = canvas_pixels(page)
    diff = np.abs(after - before)
    assert diff.max() > 20 and (diff > 0).mean() > 0.1, "the heatmap canvas was redrawn"
    js = np.asarray(page.evaluate("dualexReport.patchValues()"))
    py = tiny_ex.image_map("circle").flatten().double().numpy()
    np.testing.assert_allclose(
        js,
        py,
        atol=float(tiny_ex.matrix.abs().max()) * 1e-4,
        err_msg="the page recomputes Explanation.image_map",
    )
    assert page.locator("#span-label").inner_text() == "span: “circle”"
    shot = tmp_path / "report-token.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.errors == [], page.errors


def test_shift_click_and_drag_select_a_span(page, tiny_ex):
    toks = page.locator("#tokens .tok:not(.special)")
    toks.nth(1).click()  # "red"
    toks.nth(2).click(modifiers=["Shift"])  # "circle"
    assert page.evaluate("dualexReport.selection()") == [2, 3], "shift-click extends the span"
    first, last = toks.nth(4).bounding_box(), toks.nth(6).bounding_box()
    page.mouse.move(first["x"] + 3, first["y"] + 5)
    page.mouse.down()
    page.mouse.move(last["x"] + 5, last["y"] + 5, steps=4)
    page.mouse.up()
    assert page.evaluate("dualexReport.selection()") == [5, 6, 7], "drag selects a range"
    js = np.asarray(page.evaluate("dualexReport.patchValues()"))
    py = tiny_ex.image_map("a blue square").flatten().double().numpy()
    np.testing.assert_allclose(js, py, atol=float(tiny_ex.matrix.abs().max()) * 1e-4)
    assert page.errors == [], page.errors


def test_drag_a_box_recolours_the_tokens(page, tiny_ex, tmp_path):
    before = token_backgrounds(page)
    canvas = page.locator("#heatmap").bounding_box()
    page.mouse.move(canvas["x"] + 0.15 * canvas["width"], canvas["y"] + 0.1 * canvas["height"])
    page.mouse.down()
    page.mouse.move(
        canvas["x"] + 0.5 * canvas["width"], canvas["y"] + 0.7 * canvas["height"], steps=6
    )
    page.mouse.up()
    assert page.locator("#box").is_visible(), "the box is drawn on the image"
    after = token_backgrounds(page)
    assert after != before, f"token colours changed: {before} -> {after}"
    assert page.locator("#box-label").inner_text().startswith("box: (")
    # the same numbers as Python for a box given in original pixels
    box = (9.0, 6.0, 24.0, 21.0)
    page.evaluate(f"dualexReport.setBox({list(box)})")
    assert page.evaluate("dualexReport.boxColumns()") == tiny_ex.b.box_patches(box)
    js = np.asarray(page.evaluate("dualexReport.tokenScores()"))
    py = tiny_ex.text_scores(box).double().numpy()
    np.testing.assert_allclose(
        js,
        py,
        atol=float(tiny_ex.matrix.abs().max()) * 1e-3,
        err_msg="the page recomputes Explanation.text_scores(box)",
    )
    scores = [
        float(v)
        for v in page.eval_on_selector_all("#tokens .tok", "els => els.map(e => e.dataset.score)")
    ]
    assert len(scores) == len(tiny_ex.a)
    page.screenshot(path=str(tmp_path / "report-box.png"), full_page=True)
    assert page.errors == [], page.errors


def test_positive_only_toggle_and_navigation(page):
    before = canvas_pixels(page)
    page.locator("#positive-only").check()
    assert (canvas_pixels(page) != before).any(), "positive-only redraws the map"
    assert page.locator("#image-colorbar .lo").inner_text() == "0"
    page.locator("#next").click()
    page.wait_for_selector("body[data-ready='1']")
    assert page.evaluate("location.hash") == "#pair-2"
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector("body[data-ready='0']")
    assert page.locator("#pair-name").inner_text() == "scene.png"
    assert page.errors == [], page.errors


def test_script_injection_is_shown_as_text(page, tmp_path):
    page.locator("#pairs button").nth(1).click()
    page.wait_for_selector("body[data-ready='1']")
    page.locator("#show-special").check()
    page.locator("#tokens .tok:not(.special)").first.click()
    page.wait_for_timeout(100)
    tokens_text = page.locator("#tokens").evaluate(
        "el => Array.from(el.childNodes).filter(n => !(n.classList && n.classList.contains("
        "'special'))).map(n => n.textContent).join('')"
    )
    assert tokens_text == EVIL_CAPTION, "the caption is shown verbatim, as text"
    assert page.locator("img").count() == 0, "no <img> element was created"
    assert page.locator("#pair-name").inner_text() == EVIL_NAME
    assert "<b>evil model</b>" in page.locator("#completeness").inner_text()
    assert page.evaluate("document.scripts.length") == 2, "no script element was injected"
    page.screenshot(path=str(tmp_path / "report-injection.png"), full_page=True)
    assert page.dialogs == [], f"a dialog opened: {page.dialogs}"
    assert page.errors == [], page.errors


# -- random-weights banner, text–text pairs, the new controls ---------------------------------


def _open(browser, path):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(Path(path).as_uri())
    pg.wait_for_selector("body[data-ready='0']", timeout=10_000)
    return ctx, pg


def test_random_weights_banner_shows_only_for_random_pairs(browser, make_ex, tmp_path):
    from dataclasses import replace

    random_ex = replace(make_ex(model="random-clip:0"), weights="random")
    trained = replace(make_ex(model="builtin", seed=1), weights="builtin")
    path = write_report([random_ex, trained], tmp_path / "r.html", names=["rand", "trained"])
    ctx, pg = _open(browser, path)
    banner = pg.evaluate("dualexReport.bannerText()")
    assert banner.startswith("random weights: not a trained model (random-clip:0)")
    assert pg.locator("#weights-banner").is_visible()
    assert "random (not a trained model)" in pg.locator("#completeness").inner_text()
    pg.evaluate("dualexReport.show(1)")
    pg.wait_for_selector("body[data-ready='1']")
    assert pg.evaluate("dualexReport.bannerText()") == ""
    assert not pg.locator("#weights-banner").is_visible()
    assert pg.errors == [], pg.errors
    ctx.close()


def test_text_text_report_selects_spans_on_both_sides(browser, make_ex, text_pos, tmp_path):
    import torch

    from dualex.explanation import Explanation

    a, b = text_pos("a man plays guitar"), text_pos("someone makes music")
    g = torch.Generator().manual_seed(3)
    m = torch.randn(len(a), len(b), generator=g, dtype=torch.float64)
    ex = Explanation(matrix=m, a=a, b=b, completeness=make_ex().completeness, model="st:toy")
    path = write_report([ex], tmp_path / "tt.html")
    ctx, pg = _open(browser, path)
    assert pg.evaluate("dualexReport.kind()") == "text"
    assert not pg.locator("#stage").is_visible() and pg.locator("#tokens-b").is_visible()
    tol = float(m.abs().max()) * 1e-4
    pg.locator("#tokens .tok", has_text="guitar").click()  # a span of text A colours text B
    row = a.tokens.index("guitar")
    np.testing.assert_allclose(pg.evaluate("dualexReport.patchValues()"), m[row].numpy(), atol=tol)
    assert pg.locator("#span-label").inner_text() == "span A: “guitar”"
    pg.locator("#tokens-b .tokb", has_text="music").click()  # a span of text B colours text A
    col = b.tokens.index("music")
    np.testing.assert_allclose(
        pg.evaluate("dualexReport.tokenScores()"), m[:, col].numpy(), atol=tol
    )
    assert pg.locator("#box-label").inner_text() == "span B: “music”"
    pg.locator("#matrix-view").check()
    w, h = pg.evaluate("dualexReport.matrixSize()")
    assert w > 4 * 22 and h > 4 * 16, "a token × token grid with labels on both axes"
    pg.locator("#matrix").scroll_into_view_if_needed()
    box = pg.locator("#matrix").bounding_box()
    pg.mouse.move(box["x"] + box["width"] - 10, box["y"] + box["height"] - 10)
    assert "token A “guitar” × token B “music”" in pg.locator("#matrix-info").inner_text()
    headers = pg.eval_on_selector_all("#strongest th", "els => els.map(e => e.textContent)")
    assert headers == ["token A", "token B", "value"]
    assert pg.errors == [], pg.errors
    ctx.close()


def test_opacity_greyscale_and_ground_truth_boxes(browser, make_ex, tmp_path):
    ex = make_ex(grid=4, image_size=(48, 32), input_size=32)
    path = write_report([ex], tmp_path / "c.html", boxes=[[("red circle", (9, 6, 23, 20))]])
    ctx, pg = _open(browser, path)
    x, y = 300, 150  # inside the crop the model saw
    pg.evaluate("dualexReport.setOpacity(0)")
    plain = pg.evaluate(f"dualexReport.pixel({x}, {y})")
    pg.evaluate("dualexReport.setOpacity(1)")
    strong = pg.evaluate(f"dualexReport.pixel({x}, {y})")
    assert plain != strong, "opacity changes how much of the map covers the image"
    assert pg.locator("#opacity-value").inner_text() == "100 %"
    pg.evaluate("dualexReport.setOpacity(0)")
    pg.evaluate("dualexReport.setGreyscale(true)")
    r, g, b_, _ = pg.evaluate("dualexReport.pixel(40, 40)")  # image only: grey
    assert r == g == b_
    # the ground-truth box's outline (cyan) on its left edge
    k = pg.evaluate("document.getElementById('heatmap').width") / 48
    edge = pg.evaluate(f"dualexReport.pixel({round(9 * k)}, {round(13 * k)})")
    assert edge[2] > 200 and edge[1] > 180 and edge[0] < 80, edge
    pg.locator("#show-boxes").uncheck()
    assert pg.evaluate(f"dualexReport.pixel({round(9 * k)}, {round(13 * k)})") != edge
    assert pg.errors == [], pg.errors
    ctx.close()
