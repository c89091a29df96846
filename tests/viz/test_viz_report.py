"""The self-contained HTML report: embedded data, escaping, size, no network references."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html import unescape

import numpy as np
import pytest
import torch
from PIL import Image

from dualex.errors import InvalidInputError
from dualex.explanation import Explanation
from dualex.viz.report import report_html, write_report

EVIL_CAPTION = "<img src=x onerror=alert(1)> a red circle"
EVIL_NAME = "</script><script>alert('name')</script>.safetensors"


def embedded(html: str) -> dict:
    m = re.search(r'<script id="dualex-data" type="application/json">(.*?)</script>', html, re.S)
    assert m, "the data block is present"
    return json.loads(m.group(1))


def dequantise(record: dict) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(record["data"]), dtype="<i2").astype(np.float64)
    return q.reshape(record["shape"]) * record["scale"]


def test_report_embeds_the_matrix_and_completeness(tiny_ex, tmp_path):
    path = write_report([tiny_ex], tmp_path / "r.html", names=["scene.png"])
    html = path.read_text(encoding="utf-8")
    data = embedded(html)
    (pair,) = data["pairs"]
    m = tiny_ex.matrix.double().numpy()
    got = dequantise(pair["matrix"])
    assert got.shape == m.shape == (9, 17)
    assert np.abs(got - m).max() <= pair["matrix"]["scale"] / 2 + 1e-15, "int16 quantisation"
    assert pair["grid"] == [4, 4] and pair["prefix"] == 1
    assert pair["geometry"]["original_size"] == [48, 32]
    assert pair["completeness"]["score"] == pytest.approx(tiny_ex.score)
    assert pair["name"] == "scene.png" and pair["model"] == "tiny-random-clip"
    assert "".join(s for s, i in pair["pieces"] if not (i is not None and pair["special"][i])) == (
        tiny_ex.a.text
    )
    assert pair["image"].startswith("data:image/"), "the image is inline"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"], "written atomically, no temp file"


def test_report_is_self_contained_with_a_strict_policy(tiny_ex):
    html = report_html([tiny_ex])
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", html), "no external resources"
    assert "http://" not in html and "https://" not in html
    attr = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    csp = unescape(attr)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp, "only the page's own script may run"
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'", "nothing else may load (no network)"
    assert "unsafe-inline" not in directives["script-src"], "no inline handlers can run"


def test_user_text_is_escaped(make_ex):
    ex = make_ex(EVIL_CAPTION, model="<b>model</b>")
    html = report_html([ex], names=[EVIL_NAME], title="<i>t</i>")
    assert "<img src=x" not in html, "captions never appear as markup"
    assert "</script><script>alert" not in html, "names cannot close the data block"
    assert "<b>model" not in html and "<i>t</i>" not in html
    assert "&lt;i&gt;t&lt;/i&gt;" in html, "the title is HTML-escaped"
    pair = embedded(html)["pairs"][0]
    assert pair["caption"] == EVIL_CAPTION and pair["name"] == EVIL_NAME, "text survives as data"


def test_twenty_vit_b16_sized_pairs_stay_under_5_mb(make_ex):
    rng = np.random.default_rng(0)
    exs = []
    for k in range(20):
        # photo-like content: smooth colour fields plus grain, at a COCO-like 640x480
        low = rng.integers(0, 255, size=(12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((640, 480), Image.BICUBIC)
        grain = rng.normal(0, 12, size=(480, 640, 3))
        img = Image.fromarray(np.clip(np.asarray(img) + grain, 0, 255).astype(np.uint8))
        matrix = torch.randn(
            20, 197, dtype=torch.float64, generator=torch.Generator().manual_seed(k)
        )
        exs.append(
            make_ex(
                "a photo of " + " ".join(["word"] * 16),
                grid=14,
                image_size=(640, 480),
                input_size=224,
                matrix=matrix,
                image=img,
            )
        )
    assert exs[0].matrix.shape == (20, 197)
    size = len(report_html(exs).encode("utf-8"))
    assert size < 5_000_000, f"20 ViT-B/16-sized pairs take {size / 1e6:.2f} MB"


def test_bad_input(make_ex, text_pos):
    with pytest.raises(InvalidInputError, match="at least one"):
        report_html([])
    ex = make_ex()
    with pytest.raises(InvalidInputError, match="2 names for 1"):
        report_html([ex], names=["a", "b"])
    two_texts = Explanation(
        matrix=torch.zeros(4, 4),
        a=text_pos("a b"),
        b=text_pos("c d"),
        completeness=ex.completeness,
    )
    with pytest.raises(InvalidInputError, match="1 box lists for 2"):
        report_html([ex, two_texts], boxes=[None])
    with pytest.raises(InvalidInputError, match=r"pair #2: .*need an image side"):
        report_html([ex, two_texts], boxes=[None, [("x", (0, 0, 1, 1))]])


def test_text_pair_record_has_both_texts(make_ex, text_pos):
    ex = make_ex()
    m = torch.arange(16, dtype=torch.float64).reshape(4, 4) - 5
    two_texts = Explanation(
        matrix=m, a=text_pos("a b"), b=text_pos("c d"), completeness=ex.completeness
    )
    pair = embedded(report_html([two_texts]))["pairs"][0]
    assert pair["kind"] == "text" and pair["caption"] == "a b" and pair["caption_b"] == "c d"
    assert [p[0] for p in pair["pieces_b"] if p[1] is not None and not pair["special_b"][p[1]]] == [
        "c",
        "d",
    ]
    assert pair["columns"] == ["token A", "token B"]
    assert pair["reference_names"] == ["e_A·ē_B", "ē_A·e_B", "−ē_A·ē_B"]
    # strongest by |value| among content tokens (rows/cols 1..2): m[2, 2] = 5 beats m[1, 1] = 0
    assert pair["top"][0] == ["b", "d", 5.0]


def test_missing_image_still_renders(make_ex):
    pair = embedded(report_html([make_ex(image=None)]))["pairs"][0]
    assert pair["image"] is None
