"""The search page's data: what the script sums adds up to each hit's score, for a text query,
a fused query and an image → caption query."""

from __future__ import annotations

import html
import json

import pytest

import dualex
from dualex.data.sources import parse_data_spec
from dualex.search import Index
from dualex.search.page import page_data, page_html

QUERY = "a red circle"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    samples = list(parse_data_spec("synthetic:seed=6,n=4").samples())
    images, captions = [s.image for s in samples], [s.caption for s in samples]
    model = dualex.load("builtin")
    idx = Index.build(
        model, tmp_path_factory.mktemp("p") / "i", images=images, texts=captions, steps=2
    )
    return idx, images


def _dequantise(q):
    import base64

    import numpy as np

    v = np.frombuffer(base64.b64decode(q["data"]), dtype="<i2").astype(float) * q["scale"]
    return v.reshape(q["shape"])


@pytest.mark.parametrize("kind", ["text", "fused", "image"])
def test_each_hit_record_adds_up_to_its_score(setup, kind):
    idx, images = setup
    query, image = {"text": (QUERY, None), "fused": (QUERY, images[1]), "image": (None, images[1])}[
        kind
    ]
    hits = idx.search(query, k=3, image=image)
    data = page_data(hits, query, image)
    json.dumps(data, allow_nan=False)  # plain JSON
    assert len(data["hits"]) == 3
    for h, rec in zip(hits, data["hits"], strict=True):
        tol = 2 * h.explanation.completeness.absolute_error + 1e-6
        if kind == "image":  # image -> captions: the caption's tokens against the query image
            assert rec["kind"] == "text" and rec["caption"] == h.caption
            assert abs(sum(rec["caption_values"]) + rec["refs"] - h.score) <= tol
            assert data["query"]["image"]["grid"] == list(h.explanation.grid)
            continue
        total = (
            rec["refs"] + rec["image_total"] + (sum(rec["row_totals"]) if rec["row_totals"] else 0)
        )
        assert abs(total - h.score) <= tol
        if kind == "fused":
            assert rec["rows"] is not None and rec["image_part"] is not None
            # the query words' rows over the hit's patches, as the text part's matrix
            text_part = h.explanation.parts[0]
            patches = text_part.matrix[:, text_part.b.patch_slice].double().numpy()
            assert (
                abs(_dequantise(rec["rows"]) - patches).max() <= 1e-4 * abs(patches).max() + 1e-12
            )
    page = page_html(data)
    assert "connect-src 'none'" in html.unescape(page), "a report makes no requests"
