"""The report's concept panel and the dictionary page in headless Chromium (Playwright)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image
from tests.viz.conftest import CAPTION, scene

import dualex
from dualex import Concepts
from dualex.io import atomic_write
from dualex.viz.concepts import concept_panel, concepts_page
from dualex.viz.report import write_report

pytestmark = pytest.mark.browser

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def model():
    from dualex.models.factory import random_clip

    m, tok, proc = random_clip(seed=0, image_size=32, patch_size=8, width=32, layers=2, heads=2)
    return dualex.wrap(m, tokenizer=tok, image_processor=proc, name="tiny-random-clip")


@pytest.fixture(scope="module")
def concepts(model):
    E = model.module.config.projection_dim
    g = torch.Generator().manual_seed(0)
    K = 6
    names = [EVIL, "red", "circle", "blue", "square", "and"]
    return Concepts.from_directions(
        model, torch.randn(K, E, generator=g), torch.randn(E, K, generator=g),
        torch.randn(E, K, generator=g), topk=2, names=names,
    )  # fmt: skip


def _open(browser, path):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1600})
    pg = ctx.new_page()
    pg.errors, pg.dialogs = [], []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.goto(path.as_uri())
    return ctx, pg


def _pixels(pg) -> np.ndarray:
    url = pg.evaluate("document.getElementById('concept-heatmap').toDataURL('image/png')")
    raw = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(int)


def _token_colours(pg) -> list[str]:
    return pg.eval_on_selector_all(
        "#concept-tokens .ctok", "els => els.map(e => e.style.background)"
    )


def test_clicking_a_concept_recolours_heatmap_and_tokens(browser, model, concepts, tmp_path):
    ex = dualex.explain(model, CAPTION, scene(), steps=4)
    split = ex.concept_split(concepts)
    path = write_report(
        [ex], tmp_path / "r.html", names=["scene.png"], addons=[concept_panel([ex], concepts)]
    )
    ctx, pg = _open(browser, path)
    try:
        pg.wait_for_selector("body[data-concepts-ready='0']", timeout=10_000)
        buttons = pg.locator("#concept-list button")
        assert buttons.count() == len(split.names)
        # ranked by |share|, the first is selected; names are text, not markup
        assert buttons.nth(0).get_attribute("class") == "active"
        assert int(pg.get_attribute("body", "data-concept")) == int(split.concepts[0])
        first_px, first_tok = _pixels(pg), _token_colours(pg)
        pg.wait_for_timeout(200)  # the image is drawn once it has decoded
        first_px = _pixels(pg)
        buttons.nth(1).click()
        assert int(pg.get_attribute("body", "data-concept")) == int(split.concepts[1])
        second_px, second_tok = _pixels(pg), _token_colours(pg)
        assert np.abs(first_px - second_px).sum() > 0, "the heatmap changed"
        assert first_tok != second_tok, "the token strip changed"
        # the strip shows the concept's row sums over the patches, as Python computes them
        k = 1
        content = [i for i, s in enumerate(ex.text_positions.special) if not s]
        m = split.matrices[k][:, ex.image_positions.patch_slice].sum(1)
        values = pg.eval_on_selector_all(
            "#concept-tokens .ctok", "els => els.map(e => +e.dataset.value)"
        )
        want = [float(m[i]) for i in content]
        # int16 quantisation with one scale for all the pair's concepts: ≤ ½ step per entry
        step = float(split.matrices.abs().max()) / 32767
        cols = ex.image_positions.grid[0] * ex.image_positions.grid[1]
        assert np.allclose(values, want, rtol=0, atol=0.5 * step * cols + 1e-12)
        # a token click ranks the concepts that carry it
        pg.locator("#concept-tokens .ctok").nth(1).click()
        assert pg.locator("#concept-carry li").count() == min(5, len(split.names))
        # a dragged box too
        box = pg.locator("#concept-heatmap").bounding_box()
        pg.mouse.move(box["x"] + 2, box["y"] + 2)
        pg.mouse.down()
        pg.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2)
        pg.mouse.up()
        assert "box" in pg.text_content("#concept-info")
        assert pg.errors == [] and pg.dialogs == []
    finally:
        ctx.close()


def test_text_text_panel_and_dictionary_page(browser, concepts, tmp_path):
    from tests.toys import mixing_model

    tt = mixing_model(seed=2, same=True)
    g = torch.Generator().manual_seed(0)
    d = Concepts.from_directions(tt, torch.randn(4, 5, generator=g, dtype=torch.float64),
                                 torch.randn(5, 4, generator=g, dtype=torch.float64), topk=2)  # fmt: skip
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    ex = dualex.explain(tt, x, torch.randn(3, 6, generator=g, dtype=torch.float64), steps=3)
    path = write_report([ex], tmp_path / "t.html", addons=[concept_panel([ex], d)])
    ctx, pg = _open(browser, path)
    try:
        pg.wait_for_selector("body[data-concepts-ready='0']", timeout=10_000)
        assert pg.is_hidden("#concept-stage") and pg.is_visible("#concept-tokens-b")
        before = pg.eval_on_selector_all(
            "#concept-tokens-b .ctok", "e => e.map(x => x.style.background)"
        )
        pg.locator("#concept-list button").nth(1).click()
        after = pg.eval_on_selector_all(
            "#concept-tokens-b .ctok", "e => e.map(x => x.style.background)"
        )
        assert before != after
        assert pg.errors == []
    finally:
        ctx.close()
    page = atomic_write(tmp_path / "c.html", concepts_page(concepts))
    ctx, pg = _open(browser, page)
    try:
        assert pg.locator("section.concept").count() == concepts.size
        assert EVIL in pg.text_content("#c0 h2"), "a label is shown as text"
        assert pg.errors == [] and pg.dialogs == []
    finally:
        ctx.close()
