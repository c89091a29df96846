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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import dualex
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


def _heatmap_png(
    ex: dualex.Explanation, span: tuple[int, int], boxes, path: Path, title: str
) -> Path:
    """The span's heatmap over the image with a title, a colour bar and the mention's boxes."""
    from matplotlib.patches import Rectangle

    from dualex.viz.figure import _pyplot, plot_image_map, save_figure, weights_note

    fig, ax = _pyplot().subplots(figsize=(3.6, 3.2), dpi=120)
    plot_image_map(ex, span, ax=ax)
    for x0, y0, x1, y1 in boxes:
        for lw, color in ((3.5, "black"), (1.8, "#00e5ff")):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=lw, ec=color))
    note = weights_note(ex)
    ax.set_title(title + ("\n" + note.strip(" ·") if note else ""), fontsize=9)
    return save_figure(fig, path)


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
    weights = "builtin" if builtin.available() else "random"
    explanations, names, hits, truth = [], [], [], []
    scenes = _scenes(n)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(f"explaining {len(scenes)} scenes", total=len(scenes))
        for i, s in enumerate(scenes):
            ex = dualex.explain(model, s.caption, s.image)
            ex.weights = weights
            ex.save(out / f"scene{i}.safetensors")
            explanations.append(ex)
            names.append(f"scene {i}: {s.caption}")
            truth.append([(s.caption[slice(*m.span)], b) for m in s.mentions for b in m.boxes])
            for j, m in enumerate(s.mentions):
                mention = s.caption[slice(*m.span)]
                _heatmap_png(
                    ex,
                    m.span,
                    m.boxes,
                    out / f"scene{i}-mention{j}.png",
                    f"“{mention}” (scene {i})",
                )
            bar.advance(task)
    for i, (s, ex) in enumerate(zip(scenes, explanations, strict=True)):
        for m in s.mentions:
            inside = _peak_inside(ex, m.span, m.boxes)
            hits.append(inside)
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

            path = write_report(
                explanations, out / "report.html", names=names, title="dualex demo", boxes=truth
            )
            console.print(f"wrote {path} (open it in a browser: click tokens, drag boxes)")
        except ImportError as err:  # pragma: no cover - viz not installed
            console.print(f"[yellow]no HTML report: {err}[/]")
    console.print(f"wrote heatmaps (scene<i>-mention<j>.png) and explanations to {out}/")
    return explanations
