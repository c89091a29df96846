"""Embedding diagnostics of a dual encoder: modality gap, alignment, uniformity.

All functions take *L2-normalised* embeddings, ``img`` and ``txt`` of shape ``[N, E]`` where
row ``i`` of both is a positive pair (a caption and its image).

* **modality gap** (Liang et al. 2022): ``‖mean(img) − mean(txt)‖`` and how well a logistic
  regression tells the two modalities apart (held-out accuracy; 0.5 = inseparable);
* **alignment** (Wang & Isola 2020): ``E ‖f(x) − g(y)‖²`` over positive pairs;
* **uniformity** (Wang & Isola 2020): ``log E exp(−2 ‖u − v‖²)`` over distinct pairs of one
  modality's embeddings (more negative = more uniform on the sphere).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["alignment", "diagnostics", "gap_separability", "modality_gap", "uniformity"]


def _check(img: Tensor, txt: Tensor | None = None) -> None:
    if img.ndim != 2 or (txt is not None and txt.shape != img.shape):
        shape = None if txt is None else tuple(txt.shape)
        raise ValueError(f"need [N, E] embeddings of equal shape, got {tuple(img.shape)}, {shape}")


def modality_gap(img: Tensor, txt: Tensor) -> float:
    """Distance between the mean image and the mean text embedding, ``‖μ_img − μ_txt‖``."""
    _check(img, txt)
    return float((img.double().mean(0) - txt.double().mean(0)).norm())


def alignment(img: Tensor, txt: Tensor) -> float:
    """Mean squared distance of positive pairs, ``E ‖img_i − txt_i‖²`` (Wang & Isola, α = 2)."""
    _check(img, txt)
    return float(((img.double() - txt.double()) ** 2).sum(1).mean())


def uniformity(x: Tensor, t: float = 2.0) -> float:
    """``log E_{i<j} exp(−t ‖x_i − x_j‖²)`` over the distinct pairs of rows (NaN for < 2 rows)."""
    _check(x)
    n = x.shape[0]
    if n < 2:
        return float("nan")
    d2 = torch.pdist(x.double(), p=2).pow(2)
    return float(torch.logsumexp(-t * d2, 0) - math.log(len(d2)))


def gap_separability(img: Tensor, txt: Tensor, seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression that tells image from text embeddings.

    The pairs are split in two halves by a seeded permutation (a pair's image and caption fall
    in the same half); the regression (scikit-learn, L2, C = 1) is fit on one half and scored
    on the other. 1.0: the modalities live in separate regions; 0.5: indistinguishable.
    """
    from sklearn.linear_model import LogisticRegression

    _check(img, txt)
    n = img.shape[0]
    if n < 4:
        return float("nan")
    perm = np.random.default_rng(seed).permutation(n)
    fit, test = perm[: n // 2], perm[n // 2 :]
    a, b = img.double().cpu().numpy(), txt.double().cpu().numpy()

    def xy(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([a[idx], b[idx]])
        y = np.concatenate([np.ones(len(idx)), np.zeros(len(idx))])
        return x, y

    clf = LogisticRegression(C=1.0, max_iter=1000)
    clf.fit(*xy(fit))
    x, y = xy(test)
    return float((clf.predict(x) == y).mean())


def diagnostics(img: Tensor, txt: Tensor, seed: int = 0) -> dict[str, float]:
    """Every diagnostic of normalised positive pairs ``img[i] ↔ txt[i]`` (``[N, E]`` each).

    Returns:
        ``gap``, ``gap_logreg``, ``alignment``, ``uniformity_image``, ``uniformity_text``.
    """
    return {
        "gap": modality_gap(img, txt),
        "gap_logreg": gap_separability(img, txt, seed),
        "alignment": alignment(img, txt),
        "uniformity_image": uniformity(img),
        "uniformity_text": uniformity(txt),
    }
