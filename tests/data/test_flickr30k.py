"""Flickr30k Entities loader: a hand-written Sentences/Annotations fixture."""

from __future__ import annotations

import pytest
from PIL import Image

from dualex.data.flickr30k import load_flickr30k, parse_sentence
from dualex.errors import FileFormatError

XML = """<annotation>
<filename>42.jpg</filename>
<size><width>100</width><height>80</height><depth>3</depth></size>
<object><name>7</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>
<object><name>7</name><name>9</name><bndbox><xmin>51</xmin><ymin>11</ymin><xmax>60</xmax><ymax>40</ymax></bndbox></object>
<object><name>8</name><nobndbox>1</nobndbox></object>
<object><name>10</name><scene>1</scene></object>
</annotation>
"""
SENTENCES = (
    "[/EN#7/people Two young men] play [/EN#8/other cards] in [/EN#10/scene the park] .\n"
    "[/EN#0/notvisual Someone] watches [/EN#9/people/other a man] .\n"
)


@pytest.fixture
def root(tmp_path):
    for d in ("Sentences", "Annotations", "flickr30k-images"):
        (tmp_path / d).mkdir()
    (tmp_path / "Sentences" / "42.txt").write_text(SENTENCES)
    (tmp_path / "Annotations" / "42.xml").write_text(XML)
    Image.new("RGB", (100, 80)).save(tmp_path / "flickr30k-images" / "42.jpg")
    (tmp_path / "test.txt").write_text("42\n")
    return tmp_path


def test_parse_sentence_offsets():
    cap, phrases = parse_sentence("[/EN#1/people A man] rides [/EN#2/animals a horse] .")
    assert cap == "A man rides a horse ."
    assert [(cap[a:b], c, t) for (a, b), c, t in phrases] == [
        ("A man", "1", ["people"]),
        ("a horse", "2", ["animals"]),
    ]


def test_flickr_fixture(root):
    samples = list(load_flickr30k(root, split="test"))
    assert len(samples) == 2
    s0, s1 = samples
    assert s0.caption == "Two young men play cards in the park ."
    # chain 8 and the scene chain have no box: skipped; chain 7 has two boxes, 1-based -> 0-based
    assert [(s0.caption[slice(*m.span)], m.label) for m in s0.mentions] == [
        ("Two young men", "people")
    ]
    assert s0.mentions[0].boxes == ((0.0, 0.0, 20.0, 30.0), (50.0, 10.0, 60.0, 40.0))
    # notvisual skipped; a box shared by two chains belongs to both
    assert [(s1.caption[slice(*m.span)], m.label) for m in s1.mentions] == [("a man", "people")]
    assert s1.mentions[0].boxes == ((50.0, 10.0, 60.0, 40.0),)
    assert s1.caption_id == "42-1" and s1.image_id == "42"


def test_flickr_errors(root, tmp_path):
    with pytest.raises(FileFormatError):
        list(load_flickr30k(root, split="val"))
    (root / "Annotations" / "42.xml").write_text("<annotation><size>")
    with pytest.raises(FileFormatError):
        list(load_flickr30k(root))
