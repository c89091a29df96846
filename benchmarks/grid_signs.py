"""Where a grid-game map's mass goes, by sign: right quadrant or not, positive or negative.

    python -m benchmarks.grid_signs MODEL [--data synthetic-grid:seed=905,n=40] \\
        [--layers default,2,1,0] [--objects 1]

FIxLIP's mass ratio counts positive values inside a named object's quadrant and negative values
outside it as right. A low ratio can mean two different things: the map's mass is in the wrong
quadrants (it does not localise), or it is in the right quadrant with the wrong sign (it
localises, but the phrase's interactions with its own object's patches partly lower the score).
This splits each phrase map's absolute mass into those four parts (means over the phrases of
grids with ``--objects`` named objects, dualex's own ``image_map`` of the phrase) and prints a
Markdown table per split layer. MODEL.md uses it to say what limits ``builtin-clip`` in the grid
game.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def mass_by_sign(hm: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``[positive inside, negative inside, positive outside, negative outside]`` as shares of
    ``Σ |hm|`` (``hm`` and ``inside``: ``[rows, cols]``)."""
    total = np.abs(hm).sum()
    if not total > 0:
        return np.full(4, np.nan)
    pos, neg = np.clip(hm, 0, None), np.clip(-hm, 0, None)
    return np.array([pos[inside].sum(), neg[inside].sum(), pos[~inside].sum(),
                     neg[~inside].sum()]) / total  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    import dualex
    from dualex.data.sources import parse_data_spec
    from dualex.pointing import box_mask

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--data", default="synthetic-grid:seed=905,n=40")
    p.add_argument("--layers", default="default,2,1,0", help="split layers, comma-separated")
    p.add_argument("--objects", type=int, default=1, help="grids with this many named objects")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = dualex.load(args.model)
    grids = [s for s in parse_data_spec(args.data).samples() if len(s.mentions) == args.objects]
    print(f"{args.model}: {len(grids)} grids with {args.objects} named object(s), "
          f"{sum(len(s.mentions) for s in grids)} phrases\n")  # fmt: skip
    print("| split layer | positive inside | negative inside | positive outside | negative outside "
          "| mass ratio | \\|mass\\| inside |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for text in args.layers.split(","):
        layer = None if text.strip() == "default" else int(text)
        parts = []
        for s in grids:
            ex = dualex.explain(model, s.caption, s.image, layers=layer)
            for m in s.mentions:
                hm = ex.image_map(m.span).numpy()
                parts.append(mass_by_sign(hm, box_mask(ex.image_positions, list(m.boxes))))
        pi, ni, po, no = np.nanmean(np.array(parts), 0)
        print(f"| {text.strip()} | {pi:.2f} | {ni:.2f} | {po:.2f} | {no:.2f} | {pi + no:.2f} "
              f"| {pi + ni:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
