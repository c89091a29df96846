"""What a reader sees is true: the report read in Chromium (Playwright), the terminal summary.

Unknown words greyed and unranked, the crop bands explained, text A before text B, a narrow
window without overflow, the sidebar's background the page's full height, and the report of a
dataset run titled and named in words a reader understands.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dualex.explanation import Explanation
from dualex.viz.report import pair_data, write_report
from dualex.viz.summary import strongest_interactions

pytestmark = pytest.mark.browser


def _open(browser, path, width=1280, height=900):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    pg = ctx.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(Path(path).as_uri())
    pg.wait_for_selector("body[data-ready='0']", timeout=10_000)
    return ctx, pg


def with_unknown(make_ex, words=("circle",)):
    """A caption–image explanation whose ``words`` are unknown tokens holding its largest value."""
    ex = make_ex()
    text = ex.a
    unk = tuple(i for i, t in enumerate(text.tokens) if t in words)
    m = ex.matrix.clone()
    m[list(unk)] *= 50.0  # the unknown rows dominate: a ranking or colour range must skip them
    return replace(ex, matrix=m, a=replace(text, unknown=unk)), unk


def test_unknown_words_are_greyed_unranked_and_counted(browser, make_ex, tmp_path):
    ex, unk = with_unknown(make_ex)
    rec = pair_data(ex)
    assert rec["unknown"] == list(unk)
    assert all(row[0] != "circle" for row in rec["top"]), "an unknown word is never ranked"
    assert strongest_interactions(ex, 3)[0][0] != "circle"
    assert all(a != "circle" for a, _, _ in ex.top_interactions(5))

    path = write_report([ex], tmp_path / "u.html")
    ctx, pg = _open(browser, path)
    tok = pg.locator("#tokens .tok", has_text="circle")
    assert "unk" in tok.get_attribute("class")
    assert tok.evaluate("e => e.style.background") == ""  # no score colour
    assert tok.evaluate("e => getComputedStyle(e).textDecorationLine") == "line-through"
    assert "unknown to the model's vocabulary" in tok.get_attribute("title")
    # the token colour range comes from the known words only
    scores = pg.evaluate("dualexReport.tokenScores()")
    known = [i for i, sp in enumerate(ex.a.special) if not sp and i not in unk]
    vmax = max(abs(scores[i]) for i in known)
    hi = pg.locator("#token-colorbar .hi").inner_text()
    assert float(hi) == pytest.approx(vmax, rel=1e-3)
    note = pg.locator("#unknown-note")
    assert note.is_visible() and "1 word unknown to the model's vocabulary (circle)" in (
        note.inner_text()
    )
    assert "1 (struck through; not ranked)" in pg.locator("#completeness").inner_text()
    assert "circle" not in pg.locator("#strongest tbody").inner_text()
    assert pg.errors == [], pg.errors
    ctx.close()


def test_crop_bands_are_explained_only_when_the_image_is_cropped(browser, make_ex, tmp_path):
    cropped, square = make_ex(image_size=(48, 32)), make_ex(image_size=(32, 32))
    path = write_report([cropped, square], tmp_path / "c.html")
    ctx, pg = _open(browser, path)
    note = pg.locator("#crop-note")
    assert note.is_visible()
    assert "centre crop" in note.inner_text() and "x 8–40" in note.inner_text()
    pg.evaluate("dualexReport.show(1)")
    pg.wait_for_selector("body[data-ready='1']")
    assert not note.is_visible()
    ctx.close()


def test_text_a_comes_before_text_b(browser, make_ex, text_pos, tmp_path):
    a, b = text_pos("a man plays guitar"), text_pos("someone makes music")
    m = torch.randn(len(a), len(b), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ex = Explanation(matrix=m, a=a, b=b, completeness=make_ex().completeness, model="st:toy")
    ctx, pg = _open(browser, write_report([ex], tmp_path / "tt.html"))
    box_a = pg.locator("#tokens").bounding_box()
    box_b = pg.locator("#tokens-b").bounding_box()
    first_a = (box_a["y"], box_a["x"]) < (box_b["y"], box_b["x"])
    assert first_a, f"text A at {box_a}, text B at {box_b}"
    assert pg.locator("#label-a").inner_text() == "text A"
    assert pg.locator("#label-b").inner_text() == "text B"
    ctx.close()


def test_a_700_px_window_does_not_overflow_and_the_sidebar_is_full_height(
    browser,
    tiny_ex,
    make_ex,
    tmp_path,
):
    long_name = "a_very_long_file_name_" * 6 + ".png"
    path = write_report([tiny_ex, make_ex(seed=2)], tmp_path / "n.html", names=[long_name, "b"])
    ctx, pg = _open(browser, path, width=700)
    assert pg.evaluate("document.documentElement.scrollWidth") <= 700
    for sel in ("#heatmap", "#tokens", "#completeness", "#strongest", "header"):
        right = pg.locator(sel).bounding_box()
        assert right["x"] + right["width"] <= 700 + 0.5, sel
    ctx.close()
    # wide: the page is taller than the window, and the sidebar's background reaches its end
    ctx, pg = _open(browser, path, width=1280, height=500)
    page_h = pg.evaluate("document.documentElement.scrollHeight")
    assert page_h > 600
    nav = pg.evaluate("(() => { const r = document.getElementById('pairs')"
                      ".getBoundingClientRect(); return r.bottom + scrollY; })()")  # fmt: skip
    assert nav >= page_h - 1, (nav, page_h)
    ctx.close()


def test_dataset_report_title_and_names_say_what_they_are(browser, make_ex, tmp_path):
    from dualex.scale.explain import report_dataset

    out = tmp_path / "run"
    exs = {f"p{k}": replace(make_ex(seed=k), weights="builtin") for k in range(3)}
    Explanation.save_many(exs, out / "explanations" / "shard-000000.safetensors")
    rows = [
        {
            "idx": k,
            "pair_id": f"p{k}",
            "image_id": f"img{k}",
            "caption": ex.a.text,
            "image_path": str(tmp_path / f"photo{k}.jpg"),
            "score": ex.score,
            "completeness": [3e-5, 1e-4, 2e-6][k],
            "abs_error": 0.0,
            "file": "explanations/shard-000000.safetensors",
            "key": f"p{k}",
            "error": "",
        }
        for k, ex in enumerate(exs.values())
    ]
    pq.write_table(pa.Table.from_pylist(rows), out / "index.parquet")
    html, n = report_dataset(out, out / "report.html", limit=2)
    assert n == 2
    ctx, pg = _open(browser, html)
    assert (
        pg.title() == "dualex: 2 of the 3 explained pairs of run, largest completeness error first"
    )
    names = pg.eval_on_selector_all("#pair-list button", "els => els.map(e => e.title)")
    caption = rows[1]["caption"]
    assert names[0] == f"“{caption}” (photo1.jpg, relative completeness error 1.00e-04)"
    assert names[1].endswith("(photo0.jpg, relative completeness error 3.00e-05)")
    assert pg.locator("#pair-name").inner_text() == names[0]
    assert "builtin" in pg.locator("#completeness").inner_text()  # the pair's weights, kept
    ctx.close()
