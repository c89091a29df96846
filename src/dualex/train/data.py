"""Training and held-out data of a fine-tune: specs → samples → tensors.

Data specs are those of ``dualex eval`` (:func:`dualex.data.sources.parse_data_spec`). The
training set is held in memory as tensors (pixels through the family's own preprocessing,
token ids through its tokenizer), so a step costs only the forward and backward pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from dualex.data.types import Sample
from dualex.errors import SettingError

__all__ = ["TrainData", "load_samples", "parse_relabel", "relabel", "tensorise"]


def load_samples(spec: str, what: str = "--train") -> list[Sample]:
    """Every sample of a data spec, in order.

    Raises:
        SettingError: on a bad spec, unreadable data, or an empty dataset.
    """
    from dualex.data.sources import parse_data_spec
    from dualex.errors import DualexError

    source = parse_data_spec(spec)
    try:
        samples = list(source.samples())
    except DualexError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SettingError(f"cannot read {what} {spec!r}: {err}") from err
    if not samples:
        raise SettingError(f"{what} {spec!r} holds no samples; point it at a non-empty dataset")
    return samples


def parse_relabel(text: str) -> dict[str, str]:
    """``"star=heart,red=blue"`` → ``{"star": "heart", "red": "blue"}`` ("" → {}).

    Raises:
        SettingError: on a part that is not ``word=word``.
    """
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        src, eq, dst = (x.strip().lower() for x in part.partition("="))
        if not eq or not re.fullmatch(r"\w+", src) or not re.fullmatch(r"\w+", dst):
            raise SettingError(f"cannot read --relabel {part!r}; pass WORD=WORD, e.g. star=heart")
        out[src] = dst
    return out


def _plural(word: str) -> str:
    from dualex.data.synthetic import _plural as plural

    return plural(word)


def relabel(samples: list[Sample], mapping: dict[str, str]) -> list[Sample]:
    """Label noise: every caption (and hard negative) names ``dst`` where it named ``src``.

    Whole words only, singular and plural (``star``/``stars`` → ``heart``/``hearts``). Mentions
    keep their boxes and labels (the noise is in the text the model is trained on); spans are
    dropped, as the words moved. Negatives that became equal to their caption are dropped.
    """
    if not mapping:
        return samples
    pairs = [(_plural(s), _plural(d)) for s, d in mapping.items()] + list(mapping.items())
    pattern = re.compile(r"\b(" + "|".join(re.escape(s) for s, _ in pairs) + r")\b", re.I)
    table = {s: d for s, d in pairs}

    def sub(text: str) -> str:
        return pattern.sub(lambda m: table[m.group(1).lower()], text)

    out = []
    for s in samples:
        cap = sub(s.caption)
        negs = [replace(n, caption=sub(n.caption)) for n in s.negatives]
        negs = [n for n in negs if n.caption != cap]
        out.append(replace(s, caption=cap, negatives=negs, mentions=[] if cap != s.caption
                           else s.mentions))  # fmt: skip
    return out


@dataclass
class TrainData:
    """A dataset as tensors.

    Attributes:
        pixels: ``[I, 3, H, W]`` preprocessed images (one per distinct image).
        image_of: ``[N]`` index into ``pixels`` of each caption.
        ids: ``[N, T]`` caption token ids; ``mask``: their attention mask.
        neg_ids: ``[N, K, T]`` hard-negative token ids (``K`` = most negatives of a sample, may
            be 0); ``neg_mask`` their attention masks; ``neg_ok``: ``[N, K]`` which exist.
        texts: The captions.
    """

    pixels: Tensor
    image_of: Tensor
    ids: Tensor
    mask: Tensor
    neg_ids: Tensor
    neg_mask: Tensor
    neg_ok: Tensor
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_negatives(self) -> bool:
        """Whether any sample has a hard negative."""
        return bool(self.neg_ok.any())


def _pad(ids: Tensor, width: int) -> Tensor:
    if ids.shape[1] >= width:
        return ids
    return torch.nn.functional.pad(ids, (0, width - ids.shape[1]))


def tensorise(samples: list[Sample], trainable: Any, chunk: int = 256) -> TrainData:
    """Preprocess samples once: distinct images → pixels, captions and negatives → ids."""
    index: dict[Any, int] = {}
    images: list[Any] = []
    image_of = []
    for s in samples:
        key = s.image_id or id(s.image)
        if key not in index:
            index[key] = len(images)
            images.append(s.image)
        image_of.append(index[key])
    pixels = torch.cat(
        [trainable.pixels(images[i : i + chunk]) for i in range(0, len(images), chunk)]
    )
    ids, mask = trainable.tokenize([s.caption for s in samples])
    k = max((len(s.negatives) for s in samples), default=0)
    flat = [(s.negatives[j].caption if j < len(s.negatives) else "") for s in samples
            for j in range(k)]  # fmt: skip
    n = len(samples)
    if k:
        nid, nmask = trainable.tokenize([c or "a" for c in flat])
        width = max(ids.shape[1], nid.shape[1])
        ids, mask, nid, nmask = (_pad(t, width) for t in (ids, mask, nid, nmask))
        neg_ids, neg_mask = nid.view(n, k, -1), nmask.view(n, k, -1)
    else:
        neg_ids = torch.zeros(n, 0, ids.shape[1], dtype=ids.dtype)
        neg_mask = torch.zeros_like(neg_ids)
    neg_ok = torch.tensor([[bool(c) for c in flat[i * k : (i + 1) * k]] for i in range(n)],
                          dtype=torch.bool).view(n, k)  # fmt: skip
    return TrainData(pixels, torch.tensor(image_of), ids, mask, neg_ids, neg_mask, neg_ok,
                     [s.caption for s in samples])  # fmt: skip
