"""Screenshots of the concept panel, the dictionary page and the figure's concept row for
docs/concepts.md (Playwright + Debian's chromium; the built-in model and a trained dictionary).

    python -m benchmarks.concepts_screens --dict DIR [--out docs/concepts]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import dualex
from dualex import Concepts
from dualex.data.synthetic import generate
from dualex.io import atomic_write
from dualex.viz.concepts import concept_figure, concept_panel, concepts_page
from dualex.viz.figure import save_figure
from dualex.viz.report import write_report

FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dict", required=True)
    ap.add_argument("--out", default="docs/concepts")
    ap.add_argument("--seed", type=int, default=901)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = dualex.load("builtin")
    concepts = Concepts.load(args.dict)
    sample = generate(3, seed=args.seed)[2]
    ex = dualex.explain(model, sample.caption, sample.image)
    save_figure(concept_figure(ex, concepts, n=4), out / "row.png")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        report = write_report(
            [ex], Path(tmp) / "r.html", names=["scene.png"], addons=[concept_panel([ex], concepts)]
        )
        page = atomic_write(Path(tmp) / "c.html", concepts_page(concepts))
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
            pg = b.new_page(viewport={"width": 1280, "height": 1500})
            pg.goto(report.as_uri())
            pg.wait_for_selector("body[data-concepts-ready='0']", timeout=20_000)
            pg.locator("#concept-list button").nth(1).click()
            pg.locator("#concept-tokens .ctok").last.click()
            pg.wait_for_timeout(300)
            pg.locator("#concept-panel").screenshot(path=str(out / "panel.png"))
            pg.set_viewport_size({"width": 1280, "height": 900})
            pg.goto(page.as_uri())
            pg.screenshot(path=str(out / "dictionary.png"))
            b.close()
    print(f"wrote {out}/row.png, panel.png, dictionary.png")


if __name__ == "__main__":
    main()
