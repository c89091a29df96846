"""``dualex serve`` as a real server (subprocess, uvicorn) and in headless Chromium (Debian's,
driven by Playwright): type a query, see k hits with heatmaps, click a word, upload an image
query; bad requests get a 4xx with a clear message and the server keeps serving."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from dualex.data.sources import parse_data_spec
from dualex.search import Index
from dualex.search.serve import MAX_UPLOAD
from dualex.viz.tokens import token_labels
from tests.scale.helpers import SRC

CHROMIUM = os.environ.get("DUALEX_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
DATA = "synthetic:seed=3,n=8"
K = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``dualex serve IDX --port P`` in a subprocess, on an index of 8 synthetic scenes."""
    root = tmp_path_factory.mktemp("serve")
    Index.build("builtin", root / "g.idx", data=DATA, steps=2)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=SRC)
    cmd = [sys.executable, "-m", "dualex.cli", "serve", str(root / "g.idx"), "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"dualex serve ended:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as res:
                assert json.load(res) == {"ok": True, "items": 8}
                break
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)
    yield url, root
    proc.terminate()
    proc.wait(timeout=30)


def _post(url: str, body: bytes = b"", **headers: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(server):
    url, _ = server
    code, out = _post(url + "/api/search?q=%20&k=3")
    assert code == 400 and "empty" in out["error"]
    code, out = _post(
        url + "/api/search?q=a&k=3", b"not an image at all", **{"Content-Type": "image/png"}
    )
    assert code == 400 and "not an image" in out["error"]
    code, out = _post(url + "/api/search?q=a&k=0")
    assert code == 400 and "k must be" in out["error"]
    # an oversized upload is refused from its declared length, before its bytes are read
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    conn.putrequest("POST", "/api/search?q=a")
    conn.putheader("Content-Length", str(MAX_UPLOAD + 1))
    conn.putheader("Content-Type", "image/png")
    conn.endheaders()
    res = conn.getresponse()
    assert res.status == 413 and "too large" in json.load(res)["error"]
    conn.close()
    code, out = _post(url + "/api/search?q=a%20red%20circle&k=3")
    assert code == 200 and [h["rank"] for h in out["hits"]] == [1, 2, 3]
    scores = [h["score"] for h in out["hits"]]
    assert scores == sorted(scores, reverse=True)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.skip(f"no chromium at {CHROMIUM} or on PATH; run `make browser-deps` (apt chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        yield b
        b.close()


def _pixels(pg, selector: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    url = pg.eval_on_selector(selector, "c => c.toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))), dtype=int)


def _search(pg, expect: int) -> None:
    # (selectors, not wait_for_function: the page's CSP forbids the eval that one needs)
    pg.evaluate("document.body.dataset.busy = 'wait'")
    pg.click("#go")
    pg.wait_for_selector("body[data-busy='0']", timeout=120_000)
    if expect:
        pg.wait_for_selector(f"body[data-ready='{expect}']", timeout=10_000)


@pytest.mark.browser
def test_the_web_app_in_chromium(server, browser, tmp_path):
    url, root = server
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(url)
    pg.wait_for_selector("#search-form:not([hidden])")
    # a text query: k hits, each with a heatmap over its image
    pg.fill("#q", "a red circle")
    pg.fill("#k", str(K))
    _search(pg, K)
    assert pg.locator(".hit").count() == K
    for i in range(1, K + 1):
        pg.wait_for_selector(f".hit:nth-of-type({i}) canvas[data-drawn]")
    first = _pixels(pg, ".hit canvas")
    assert first.reshape(-1, 4)[:, :3].std(0).max() > 5, "the heatmap is drawn over the image"
    scores = [float(t.split()[1]) for t in pg.locator(".hit .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    # click a word: every hit shows where it matched (the maps change)
    pg.locator(".word", has_text="red").first.click()
    assert pg.locator(".word.selected").inner_text() == "red"
    pg.wait_for_selector(".hit:nth-of-type(1) canvas[data-drawn='1']")
    assert np.abs(_pixels(pg, ".hit canvas") - first).max() > 0
    assert "matched in every hit" in pg.locator("#query .note").inner_text()
    # drag a box on a hit: the per-word scores of the patches under it
    box = pg.locator(".hit canvas").first.bounding_box()
    pg.mouse.move(box["x"] + 2, box["y"] + 2)
    pg.mouse.down()
    pg.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2)
    pg.mouse.up()
    text = pg.locator(".hit .boxwords").first.inner_text()
    ex = Index.load(root / "g.idx").search("a red circle", k=1)[0].explanation
    rows, cols = ex.grid
    assert text.startswith(f"box ({rows * cols} patches)"), text  # every patch
    shown = dict(part.rsplit(" ", 1) for part in text.split(": ", 1)[1].split("; "))
    want = ex.text_scores()  # the whole image, as the page sums it
    labels = token_labels(ex.text_positions)
    for word in ("red", "circle"):
        assert abs(float(shown[word]) - float(want[labels.index(word)])) <= 1e-4
    # why A above B: the difference map and a row per word
    assert pg.locator("#why").is_visible()
    rows = pg.locator("#why-table tr").all_inner_texts()
    assert any(r.startswith("circle") for r in rows) and any("reference" in r for r in rows)
    # an image query: the uploaded scene finds itself first
    scene = next(iter(parse_data_spec(DATA).samples())).image
    png = tmp_path / "query.png"
    scene.save(png)
    pg.fill("#q", "")
    pg.set_input_files("#qimage", str(png))
    pg.wait_for_selector(f"body[data-ready='{K}']")
    pg.evaluate("document.body.dataset.ready = 'old'")
    _search(pg, K)
    top = float(pg.locator(".hit .score").first.inner_text().split()[1])
    assert top > 0.999, "an image is its own nearest neighbour"
    assert pg.locator(".hit canvas").count() == K
    # a bad upload: the message, and the page keeps working
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a picture")
    pg.set_input_files("#qimage", str(bad))
    _search(pg, 0)
    assert pg.locator("#error").is_visible()
    assert "not an image" in pg.locator("#error").inner_text()
    pg.set_input_files("#qimage", [])
    pg.fill("#q", "a blue square")
    pg.evaluate("document.body.dataset.ready = 'old'")
    _search(pg, K)
    assert not pg.locator("#error").is_visible()
    assert pg.locator(".hit").count() == K
    # the only console error is the browser's own line about the refused upload's 400
    unexpected = [e for e in errors if "status of 400" not in e]
    assert not unexpected, unexpected
    assert len(errors) <= 1
    ctx.close()


@pytest.mark.browser
def test_the_search_report_in_chromium(server, browser, tmp_path):
    """``dualex search --out report.html``: the hits side by side; a word's map in every hit;
    why A above B: its per-word differences add up to the score difference."""
    from dualex.search.page import write_page

    _, root = server
    idx = Index.load(root / "g.idx")
    hits = idx.search("a red circle", k=K)
    path = write_page(hits, tmp_path / "report.html", "a red circle")
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(path.as_uri())
    pg.wait_for_selector(f"body[data-ready='{K}']")
    assert not pg.locator("#search-form").is_visible(), "a report has no search box"
    assert pg.locator(".hit").count() == K
    pg.locator(".word", has_text="circle").first.click()
    pg.wait_for_selector(f".hit:nth-of-type({K}) canvas[data-drawn]")
    # why #1 above #2: word rows + special tokens + reference terms = the score difference
    diffs = [
        float(r.split("\t")[3].split()[0])
        for r in pg.locator("#why-table tr").all_inner_texts()[1:]
    ]
    gap = hits[0].score - hits[1].score
    assert abs(sum(diffs) - gap) <= 1e-3 * len(diffs) + 2 * (
        hits[0].explanation.completeness.absolute_error
        + hits[1].explanation.completeness.absolute_error
    )
    assert pg.locator("#why-map").count() == 1
    assert not errors, errors
    ctx.close()
