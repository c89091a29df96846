"""``dualex demo``: explain a few synthetic scenes offline and report where the mentions land.

With the built-in model (see ``dualex/models/MODEL.md``) the demo generates a handful of held-out
scenes of the synthetic world, explains each caption, and for every object mention writes the
heatmap over the image as a PNG (box drawn in white) and prints whether the heatmap's peak patch
falls inside the mention's box, next to the explanation's completeness error. An HTML report of all
scenes is written next to the PNGs. Without the built-in model it falls back to a randomly
initialised small CLIP (exactness only, no grounding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import dualex
from dualex.io import atomic_write
from dualex.models import builtin

DEMO_SEED = 4242
"""World seed of the demo scenes (not used in training or evaluation)."""


def _model(console: Console) -> Any:
    if builtin.available():
        return dualex.load("builtin")
    from dualex.models.factory import random_clip

    console.print(
        "[yellow]The built-in model is not available in this installation: explaining with a "
        "randomly initialised small CLIP. The numbers below show exactness, not grounding.[/]"
    )
    m, tok, proc = random_clip(seed=0, image_size=64, patch_size=8)
    return dualex.wrap(m, tokenizer=tok, image_processor=proc, name="random-init CLIP")


def _scenes(n: int) -> list[Any]:
    """``n`` synthetic scenes alternating plain and textured backgrounds."""
    from dualex.data.synthetic import generate

    out = []
    for i in range(n):
        domain = ("plain", "textured")[i % 2]
        out += generate(1, seed=DEMO_SEED, domain=domain, start=i)
    return out


def _peak_inside(ex: dualex.Explanation, span: tuple[int, int], boxes) -> bool:
    heat = ex.image_map(span).detach().flatten()
    x0, y0, x1, y1 = ex.b.patch_boxes()[int(heat.argmax())]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return any(b[0] <= cx < b[2] and b[1] <= cy < b[3] for b in boxes)


def _heatmap_png(ex: dualex.Explanation, span: tuple[int, int], boxes, path: Path) -> Path:
    """The span's heatmap over the image, upscaled 4×, with the mention's boxes outlined."""
    from PIL import Image, ImageDraw

    from dualex.viz import overlay

    img, _ = overlay(ex, span)
    k = max(1, 256 // max(img.size))
    img = img.convert("RGB").resize((img.width * k, img.height * k), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0 * k, y0 * k, x1 * k - 1, y1 * k - 1], outline=(255, 255, 255), width=2)
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def run_demo(
    out: Path, console: Console | None = None, n: int = 4, report: bool = True
) -> list[dualex.Explanation]:
    """Run the demo.

    Args:
        out: Output folder (heatmap PNGs, ``report.html``, one ``.safetensors`` per scene).
        console: Where the table goes (a fresh :class:`rich.console.Console` if ``None``).
        n: Number of scenes.
        report: Also write the HTML report.

    Returns:
        The explanations, one per scene.
    """
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = _model(console)
    table = Table(title=f"dualex demo — {model.name}")
    for col in ("scene", "mention", "box", "peak in box", "completeness error"):
        table.add_column(col)
    explanations, names, hits = [], [], []
    for i, s in enumerate(_scenes(n)):
        ex = dualex.explain(model, s.caption, s.image)
        ex.save(out / f"scene{i}.safetensors")
        explanations.append(ex)
        names.append(f"scene {i}: {s.caption}")
        for j, m in enumerate(s.mentions):
            inside = _peak_inside(ex, m.span, m.boxes)
            hits.append(inside)
            _heatmap_png(ex, m.span, m.boxes, out / f"scene{i}-mention{j}.png")
            box = ", ".join(str(tuple(int(v) for v in b)) for b in m.boxes)
            table.add_row(
                str(i),
                s.caption[slice(*m.span)],
                box,
                "[green]yes[/]" if inside else "[red]no[/]",
                f"{ex.completeness.relative_error:.1e}",
            )
        table.add_section()
    console.print(table)
    if hits:
        console.print(f"peak inside the box for {sum(hits)}/{len(hits)} mentions")
    if report:
        try:
            from dualex.viz import write_report

            path = write_report(explanations, out / "report.html", names=names, title="dualex demo")
            console.print(f"wrote {path} (open it in a browser: click tokens, drag boxes)")
        except ImportError as err:  # pragma: no cover - viz not installed
            console.print(f"[yellow]no HTML report: {err}[/]")
    console.print(f"wrote heatmaps (scene<i>-mention<j>.png) and explanations to {out}/")
    return explanations
