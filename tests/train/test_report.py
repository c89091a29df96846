"""The fine-tuning report and timeline plot say what the numbers say: a change that prints as
0.000 is not green, a change in the 7th digit is not drawn as a cliff, equal series stay visible."""

from __future__ import annotations

import re

from dualex.train.report import timeline_figure, write_report


def _row(step, group, cls, metric, value):
    return {"step": step, "group": group, "cls": cls, "metric": metric, "value": value,
            "lo": value - 0.1, "hi": value + 0.1, "n": 5}  # fmt: skip


def test_a_change_that_prints_as_zero_is_neither_green_nor_red(tmp_path):
    timeline = []
    for cls, a, b in (("star", 0.5, 0.50004), ("heart", 0.4, 0.6), ("moon", 0.6, 0.4)):
        timeline += [_row(0, "class", cls, "pointing", a), _row(10, "class", cls, "pointing", b)]
    summary = {"monitor_share": 0.05, "first": {}, "last": {}}
    html = write_report(timeline, summary, tmp_path, [], title="m").read_text()
    cells = dict(re.findall(r"<tr><td>(\w+)</td>.*?<td class='(\w+)'>", html))
    assert cells == {"star": "same", "heart": "up", "moon": "down"}
    assert "<td class='same'>0.000</td>" in html


def test_timeline_keeps_a_tiny_change_flat_and_equal_series_visible():
    timeline = [_row(0, "global", "", "temperature", 0.07),
                _row(10, "global", "", "temperature", 0.07 + 7e-7)]  # fmt: skip
    for step in (0, 10, 20):
        for cls in ("heart", "star", "moon"):
            timeline.append(_row(step, "class", cls, "pointing", 1.0))  # all three equal
    fig = timeline_figure(timeline)
    panels = {ax.get_title(): ax for ax in fig.axes}
    lo, hi = panels["temperature"].get_ylim()
    assert lo < 0.07 < 0.07 + 7e-7 < hi
    assert hi - lo > 0.049  # a change of 1e-5 of the value is drawn flat, not as a cliff
    lines = panels["pointing per class"].get_lines()
    assert len(lines) == 3
    xs = [tuple(line.get_xdata()) for line in lines]
    assert len(set(xs)) == 3  # dodged side by side, none hidden under another
    assert len({line.get_marker() for line in lines}) == 3
