"""``ig``: Integrated Gradients on the image's pixels, target ``cos(image embedding, text
embedding)``.

Integrated in the tower's normalised pixel space from the all-zeros baseline (the dataset-mean
image) with a quadrature over ``α ∈ [0, 1]`` (Gauss–Legendre by default); attribution ×
``(x − baseline)``, summed over the colour channels, then sum-pooled into the image tower's grid
cells: the patches of a ViT (SigLIP-2: the real patches of its NaFlex sequence), the cells of the
feature map a CNN's positions describe (open_clip / OpenAI ResNets, ALIGN's EfficientNet; pixel
rows and columns are split evenly over the cells). The map is in score units: it sums to
``cos(x) − cos(baseline)`` up to the quadrature error.

It only needs the image tower's own forward on pixels, so it runs on every image–text family.
Text–text models (sentence transformers) raise :class:`UnsupportedMethodError`: this method
explains an image; use ``dualex`` for token × token explanations of two texts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dualex.engine.quadrature import nodes_and_weights
from dualex.evaluate.methods._vit import attributions
from dualex.evaluate.methods.base import (
    Attribution,
    Method,
    UnsupportedMethodError,
    needs_image_tower,
    timed,
)
from dualex.towers.positions import ImagePositions
from dualex.towers.registry import image_families, image_families_text

__all__ = ["IG_STEPS", "METHOD", "integrated_gradients", "pool_cells"]

IG_STEPS = 16
"""Default quadrature nodes."""

IMAGE_FAMILIES = tuple(image_families())
"""Families with an image tower that takes pixels."""


def _edges(n_pixels: int, n_cells: int, patch: int | None) -> list[int]:
    """Pixel boundaries of ``n_cells`` cells along one axis (patches when they fit)."""
    if patch and n_cells * patch <= n_pixels:
        return [i * patch for i in range(n_cells + 1)]
    return [round(i * n_pixels / n_cells) for i in range(n_cells + 1)]


def pool_cells(attr: Tensor, pos: ImagePositions, patch: int | None = None) -> Tensor:
    """Sum-pool a per-pixel map into the tower's grid cells.

    Args:
        attr: ``[H, W]`` per-pixel values, or ``[N]`` per-patch values of a patch sequence
            (SigLIP-2: the grid's patches first, padding after).
        pos: The image positions (``grid = (rows, cols)``).
        patch: Patch size of a ViT (cells are exact patches); ``None``: split evenly.

    Returns:
        ``[rows, cols]``.
    """
    rows, cols = pos.grid
    if attr.dim() == 1:
        return attr[: rows * cols].reshape(rows, cols)
    H, W = attr.shape
    ys, xs = _edges(H, rows, patch), _edges(W, cols, patch)
    row_sums = torch.stack([attr[ys[i] : ys[i + 1]].sum(0) for i in range(rows)])  # [rows, W]
    return torch.stack([row_sums[:, xs[j] : xs[j + 1]].sum(1) for j in range(cols)], dim=1)


def _patch_size(tower: Any) -> int | None:
    if getattr(tower, "kind", "vit") == "cnn":
        return None
    p = getattr(tower, "patch", None)
    if isinstance(p, tuple | list):
        return int(p[0]) if p[0] == p[1] else None
    return int(p) if p else None


def integrated_gradients(
    model: Any,
    image: Any,
    texts: list[str],
    *,
    steps: int = IG_STEPS,
    rule: str = "gauss-legendre",
) -> list[Attribution]:
    """Integrated Gradients maps of the image for every text.

    The path is evaluated once for all texts: a batch of ``steps`` scaled images, one backward
    per text.

    Args:
        model: A :class:`dualex.DualEncoder` with an image tower.
        image: The image.
        texts: The texts.
        steps: Quadrature nodes.
        rule: Quadrature rule (``"gauss-legendre"``, ``"riemann"``, ``"trapezoid"``).

    Returns:
        One attribution per text: ``image_map [rows, cols]`` in score units, ``score`` =
        ``cos(x)``, ``extra["baseline_score"]`` = ``cos(baseline)``.

    Raises:
        UnsupportedMethodError: for a model without an image tower taking pixels (text–text).
    """
    import dualex
    from dualex.towers.session import model_guard

    model = dualex.wrap(model)
    tb, ta = model.tower_b, model.tower_a
    if tb.modality != "image":
        raise UnsupportedMethodError(
            f"ig explains images; {model.name!r} is text–text (use dualex for token × token "
            f"explanations). ig runs on image–text families: {image_families_text()}"
        )

    def go() -> list[Attribution]:
        module = model.module
        with model_guard([module] if module is not None else []):
            inp = tb.prepare(image)
            if "pixel_values" not in inp.data:
                raise UnsupportedMethodError(
                    f"ig needs an image tower fed with pixel_values; {tb.name} is not "
                    f"(families: {image_families_text()})"
                )
            x = inp.data["pixel_values"]
            with torch.no_grad():
                t = torch.stack([ta.encode(ta.prepare(s).data)[0] for s in texts]).to(x.dtype)
                t = t / t.norm(dim=-1, keepdim=True)

            def cosines(pixels: Tensor) -> Tensor:  # [B, ...] -> [B, T]
                rest = {k: v.expand(len(pixels), *v.shape[1:]) for k, v in inp.data.items()}
                rest["pixel_values"] = pixels
                emb = tb.encode(rest).to(x.dtype)
                return (emb / emb.norm(dim=-1, keepdim=True)) @ t.T

            alphas, weights = nodes_and_weights(rule, steps, dtype=x.dtype)
            shape = (-1,) + (1,) * (x.dim() - 1)
            path = (alphas.to(x.device).view(shape) * x).detach().requires_grad_(True)
            with torch.enable_grad():
                s = cosines(path) * weights.to(x.device).view(-1, 1)  # [steps, T]
                grads = [
                    torch.autograd.grad(s[:, i].sum(), path, retain_graph=i < len(texts) - 1)[0]
                    for i in range(len(texts))
                ]
            with torch.no_grad():
                ends = cosines(torch.cat([x, torch.zeros_like(x)]))  # [2, T]
            patch = _patch_size(tb)
            maps = []
            for g in grads:
                a = (g.sum(0) * x[0]).detach()
                a = a.sum(-1) if a.dim() == 2 else a.sum(0)  # patch sequence [N] / pixels [H, W]
                maps.append(pool_cells(a, inp.positions, patch).reshape(-1))
        out = attributions("ig", inp.positions, maps, scores=ends[0], units="score", steps=steps)
        for a, base in zip(out, ends[1].tolist(), strict=True):
            a.extra.update(rule=rule, baseline_score=base)
        return out

    return timed(go)


METHOD = Method(
    name="ig",
    order=1,
    summary="Integrated Gradients on the pixels, target cosine, sum-pooled per grid cell "
    "(Sundararajan et al., 2017)",
    run=integrated_gradients,
    families=IMAGE_FAMILIES,
    check=needs_image_tower("ig"),
)
"""The ``ig`` method."""
