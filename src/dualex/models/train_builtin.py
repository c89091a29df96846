"""Recipe of the built-in model: a small HF CLIP trained contrastively on the synthetic world.

Run::

    python -m dualex.models.train_builtin --out DIR [--steps N] [--resume] [--exclude-class NAME]

``--preset clip`` is the recipe of ``builtin-clip`` (models/MODEL.md): 4 + 4 blocks, the global
contrastive loss only (no patch-phrase term), the ``clip`` world of :data:`WORLDS` (objects from
~1/8 to ~1/2 of the image side, 1-6 objects, occlusion) and a quarter of collages; explicit flags
override it. ``--preset clip-stage2 --init STAGE1_DIR`` is its second stage (the same loss and
data, continued on a fresh schedule: 3 500 steps, lr 5e-4, no curriculum) and ``--preset
clip-stage3 --init STAGE2_DIR`` its third (the same loss with every hard negative a caption has,
twice the images: 2 000 steps, lr 3e-4); the three stages give the shipped weights.
``--max-minutes M`` ends a sitting with a checkpoint after ``M`` minutes; the
schedule depends on ``--steps`` only, so ``--resume`` continues the same run.

``--exclude-class`` trains a copy that never sees or reads one shape or colour (the
never-seen-class experiment of docs/finetuning.md).

The training set (plain + textured domains; cluttered is held out) is rendered once into memory
(and cached in ``DIR/data.safetensors``). The objective is symmetric InfoNCE with a learnable
temperature whose image→text denominator also holds every caption's hard negatives (colour,
shape, relation and absent-object swaps), plus an auxiliary *patch-phrase* contrast used only
during training: each patch token of the last layer, passed through the stock
``post_layernorm`` + ``visual_projection``, is classified against the text embeddings of the 48
phrases "a <colour> <shape>" (target: the object covering the patch). At inference the model is a
stock ``CLIPModel``. The run is seeded, shows a tqdm bar, and writes resumable checkpoints
(:func:`dualex.trainer.save_checkpoint`: safetensors + JSON, atomically) every ``--ckpt-every``
steps; the final model is saved with ``save_pretrained`` (safetensors) together with its
word-level tokenizer and image processor.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dualex.data.synthetic import COLOURS, NEGATIVE_KINDS, SHAPES, WorldConfig
from dualex.trainer import (
    TimeBudget,
    adamw,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_json,
    save_tensors,
    warmup_cosine,
)

__all__ = [
    "COLLAGE_SEEDS",
    "EVAL_SEEDS",
    "PRESETS",
    "TRAIN_SEEDS",
    "WORLDS",
    "TrainConfig",
    "builtin_vocabulary",
    "export_checkpoint",
    "main",
    "render_collages",
    "train",
    "world_config",
]

TRAIN_SEEDS = {"plain": 101, "textured": 102}
"""World seeds of the training images (held-out evaluation uses :data:`EVAL_SEEDS`)."""

EVAL_SEEDS = {"plain": 901, "textured": 902, "cluttered": 903}
"""World seeds of the held-out evaluation images (never used in training)."""

COLLAGE_SEEDS = {"plain": 111, "textured": 112}
"""World seeds of the scenes tiled into training collages (``TrainConfig.collage_share``)."""

WORLDS: dict[str, dict[str, Any]] = {
    "default": {},
    # objects from ~1/8 to ~1/2 of the image side (radius 0.065-0.25), 1-6 objects, boxes may
    # overlap by up to 35 % of the smaller one (occlusion; mentions keep the visible box)
    "clip": {
        "sizes": {"small": (0.065, 0.13), "large": (0.17, 0.25)},
        "max_objects": 6,
        "max_overlap": 0.35,
    },
}
"""Named synthetic worlds (:class:`WorldConfig` overrides) a model is trained and evaluated on:
``default`` for ``builtin``, ``clip`` for ``builtin-clip``."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def world_config(exclude: str = "", world: str = "default", **overrides: Any) -> WorldConfig:
    """The synthetic-world options a built-in model is trained and evaluated on (in-domain).

    Args:
        exclude: A shape (of :data:`SHAPES`) or a colour of the default world to leave out.
        world: A name of :data:`WORLDS` (``"default"``: ``builtin``; ``"clip"``: ``builtin-clip``).
        **overrides: Other :class:`WorldConfig` fields.

    Raises:
        SettingError: if ``exclude`` is neither a shape nor a colour of the world, or ``world`` is
            unknown.
    """
    if world not in WORLDS:
        from dualex.errors import SettingError

        raise SettingError(f"unknown world {world!r}; choose from {', '.join(WORLDS)}")
    cfg = WorldConfig(**{**WORLDS[world], **overrides})
    if not exclude:
        return cfg
    from dataclasses import replace

    from dualex.errors import SettingError

    if exclude in cfg.shapes:
        return replace(cfg, shapes=tuple(s for s in cfg.shapes if s != exclude))
    if exclude in cfg.colours:
        return replace(cfg, colours=tuple(c for c in cfg.colours if c != exclude))
    raise SettingError(
        f"cannot exclude {exclude!r}: it is not a shape or colour of the world; choose from "
        f"{', '.join(cfg.shapes + cfg.colours)}"
    )


def builtin_vocabulary() -> list[str]:
    """Every word the synthetic world's captions and negatives can contain."""
    from dualex.data import synthetic as syn

    words: list[str] = []
    words += list(SHAPES) + [syn._plural(s) for s in SHAPES]
    words += list(COLOURS)
    words += list(syn.SIZES)
    words += list(syn._COUNT_WORDS.values())
    texts = [r for rel in syn._RELATIONS for r in rel[1:]]
    texts += list(syn._LIST_PREFIXES) + list(syn._RELATION_FORMS)
    texts += ["a an and , is there the of an empty picture image scene drawing with"]
    for t in texts:
        words += [w for w in re.findall(r"\w+|[^\w\s]", t.lower()) if w not in ("a", "b", "r")]
    words += ["a"]
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return sorted(seen)


@dataclass
class TrainConfig:
    """Hyper-parameters of the recipe (saved in the checkpoint state and MODEL.md)."""

    steps: int = 6000
    batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    curriculum: float = 0.15
    """Fraction of steps that only sees images with <= 2 objects."""
    negatives: int = 2
    """Hard negatives per image and step (of its up to four)."""
    dense_weight: float = 0.5
    """Weight of the auxiliary patch-phrase contrast (0 disables it)."""
    width: int = 96
    layers: int = 2
    heads: int = 4
    patch_size: int = 8
    image_size: int = 64
    projection_dim: int = 64
    max_text: int = 32
    n_train: int = 50000
    """Training images (half plain, half textured)."""
    relation_share: float = 0.0
    """Fraction of each batch drawn from images whose caption states a relation; those images
    always bring their relation negative. Nothing but relation negatives rewards an image
    embedding for knowing where objects are, so a relation phase raises this share."""
    flip_pairs: bool = False
    """Add, for each relational image of the batch that :func:`relation_flip` can flip, the
    flipped image paired with the relation negative (now true): the batch then holds two
    pairs that only the relation tells apart."""
    init: str = ""
    """Start from the weights of this model folder (a previous stage) instead of random ones."""
    exclude_class: str = ""
    """A shape or colour the run never shows or names (its images, captions, negatives and
    phrases are drawn from a world without it); ``""`` keeps every class. The word stays in the
    vocabulary, so a later fine-tune can teach it."""
    world: str = "default"
    """Which of :data:`WORLDS` the scenes are drawn from."""
    collage_share: float = 0.0
    """Fraction of the training images that are collages: 2-4 scenes of 1-2 objects tiled in a
    2x2 grid (empty quadrants grey), captioned by what they show (:func:`render_collages`)."""
    seed: int = 0
    threads: int = 2
    ckpt_every: int = 100


PRESETS: dict[str, dict[str, Any]] = {
    # Named recipes: --preset NAME sets these TrainConfig fields (explicit flags win).
    # builtin-clip: trained as CLIP is -- global contrastive loss only (no patch-phrase term),
    # deeper towers, objects at every scale, occlusion and collages (see MODEL.md)
    "clip": {
        "layers": 4,
        "width": 96,
        "dense_weight": 0.0,
        "world": "clip",
        "collage_share": 0.25,
        "max_text": 48,
        "n_train": 40000,
        "curriculum": 0.1,
        "steps": 1500,
        "threads": 1,
    },
}
# builtin-clip's stage 2: the same loss and data, continued from stage 1's weights (--init) on a
# fresh schedule: half the peak lr, 2 % warm-up, no curriculum, 3 500 steps
PRESETS["clip-stage2"] = {
    **PRESETS["clip"],
    "steps": 3500,
    "lr": 5e-4,
    "curriculum": 0.0,
    "warmup": 0.02,
}
# builtin-clip's stage 3 (the shipped weights): from stage 2's weights, every hard negative the
# caption has in the denominator (shape negatives were its weak kind), twice the images (each
# domain's and the collages' first half are stages 1-2's), a lower peak lr, 2 000 steps on two
# threads
PRESETS["clip-stage3"] = {
    **PRESETS["clip-stage2"],
    "steps": 2000,
    "lr": 3e-4,
    "negatives": 4,
    "n_train": 80000,
    "threads": 2,
}
NEEDS_INIT = {"clip-stage2", "clip-stage3"}
"""Presets that continue a previous stage: they need ``--init STAGE_DIR``."""


# ------------------------------------------------------------------------------------------
# data


def phrase_texts(cfg: WorldConfig) -> list[str]:
    """The auxiliary objective's phrases, index ``c * len(shapes) + s``."""
    return [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c in cfg.colours for s in cfg.shapes]


def encode_texts(tok: Any, texts: list[str], max_len: int) -> torch.Tensor:
    """Token ids ``[N, max_len]`` (PAD = 0) of texts."""
    enc = tok(texts, padding="max_length", max_length=max_len, truncation=True)
    return torch.tensor(enc["input_ids"], dtype=torch.int32)


def patch_labels(sample: Any, masks: np.ndarray, patch: int, cfg: WorldConfig) -> np.ndarray:
    """Per patch: the phrase index of the object covering most of it (>= 30 %), else -1."""
    objs = sample.meta["objects"]
    k, h, _ = masks.shape
    g = h // patch
    out = np.full(g * g, -1, dtype=np.int64)
    if k == 0:
        return out
    cov = masks.reshape(k, g, patch, g, patch).mean(axis=(2, 4)).reshape(k, -1)
    best = cov.argmax(axis=0)
    ok = cov.max(axis=0) >= 0.3
    ns = len(cfg.shapes)
    for p in np.flatnonzero(ok):
        o = objs[best[p]]
        out[p] = cfg.colours.index(o["colour"]) * ns + cfg.shapes.index(o["shape"])
    return out


def render_split(
    n: int, seed: int, domain: str, tok: Any, tc: TrainConfig, cfg: WorldConfig, desc: str = ""
) -> dict[str, torch.Tensor]:
    """Render ``n`` images of a seed/domain into tensors (images uint8, ids, negatives, labels)."""
    from tqdm.auto import tqdm

    from dualex.data.synthetic import make_scene, samples_for_scene

    images, caps, negs, labels, nobj, flips = [], [], [], [], [], []
    for i in tqdm(range(n), desc=desc or f"render {domain}", mininterval=2.0):
        scene = make_scene(seed, i, domain=domain, image_size=tc.image_size, config=cfg)
        s = samples_for_scene(scene, domain=domain, config=cfg)[0]
        images.append(np.asarray(s.image.convert("RGB"), dtype=np.uint8))
        caps.append(s.caption)
        by_kind = {ng.kind: ng.caption for ng in s.negatives}
        negs.append([by_kind.get(k, "") for k in NEGATIVE_KINDS])
        labels.append(patch_labels(s, scene.masks, tc.patch_size, cfg))
        nobj.append(len(scene.objects))
        flips.append(relation_flip(s))
    return _pack(tok, tc, images, caps, negs, torch.from_numpy(np.stack(labels)), nobj,
                 torch.tensor(flips, dtype=torch.int8))  # fmt: skip


def _pack(tok: Any, tc: Any, images: list[np.ndarray], caps: list[str], negs: list[list[str]],
          labels: torch.Tensor, nobj: list[int], flip: torch.Tensor) -> dict[str, torch.Tensor]:  # fmt: skip
    """One rendered training set as tensors: images, caption and hard-negative ids (an absent
    negative encoded as "a" and masked out by ``neg_ok``), patch labels, object counts, flips."""
    n, k = len(caps), len(NEGATIVE_KINDS)
    flat_negs = [c for row in negs for c in row]
    neg_ids = encode_texts(tok, [c or "a" for c in flat_negs], tc.max_text)
    return {
        "images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        "ids": encode_texts(tok, caps, tc.max_text),
        "neg_ids": neg_ids.view(n, k, tc.max_text),
        "neg_ok": torch.tensor([bool(c) for c in flat_negs]).view(n, k),
        "labels": labels,
        "n_objects": torch.tensor(nobj, dtype=torch.int32),
        "flip": flip,
    }


def _pairs_of(text: str) -> set[tuple[str, str]]:
    """The (colour, shape) pairs a synthetic caption names ("two blue stars" -> blue, star)."""
    from dualex.data.synthetic import _plural

    shape_of = {w: sh for sh in SHAPES for w in (sh, _plural(sh))}
    words = re.findall(r"\w+", text.lower())
    pairs = itertools.pairwise(words)
    return {(a, shape_of[b]) for a, b in pairs if a in COLOURS and b in shape_of}


def render_collages(
    n: int, tok: Any, tc: TrainConfig, cfg: WorldConfig, desc: str = "render collages"
) -> dict[str, torch.Tensor]:
    """Render ``n`` training collages into the tensors of :func:`render_split`.

    Collage ``i`` tiles 2-4 scenes (``i`` alternates plain/textured, seeds
    :data:`COLLAGE_SEEDS`) of 1-2 objects at the default world's sizes into the quadrants of a
    2x2 grid, empty quadrants in the grid game's grey (:data:`dualex.data.grid.EMPTY_RGB`), so a
    tiled grid is in distribution the way web collages are for CLIP. The caption joins the
    scenes' captions (no relations) in a random order with ", "; 30 % of collages are
    captioned tersely, by the shape words of each scene separated by spaces (the label style of
    collage captions). Hard negatives: a scene's colour/shape/absent negative swapped into the
    collage caption when the new colour-shape pair is nowhere in the collage; terse captions get
    a shape absent from the collage. Patch labels are all -1 (no patch supervision).
    """
    from dataclasses import replace

    from PIL import Image
    from tqdm.auto import tqdm

    from dualex.data.grid import EMPTY_RGB
    from dualex.data.synthetic import make_scene, samples_for_scene
    from dualex.models.factory import tokenize_words

    base = world_config(tc.exclude_class)
    tile_cfg = replace(base, min_objects=1, max_objects=2, relation_prob=0.0,
                       shapes=cfg.shapes, colours=cfg.colours)  # fmt: skip
    t = tc.image_size // 2
    images, caps, negs, nobj = [], [], [], []
    for i in tqdm(range(n), desc=desc, mininterval=2.0):
        domain = ("plain", "textured")[i % 2]
        seed = COLLAGE_SEEDS[domain]
        rng = np.random.default_rng([seed, i, 7])
        k = int(rng.integers(2, 5))
        quads = sorted(int(q) for q in rng.choice(4, size=k, replace=False))
        grid = Image.new("RGB", (2 * t, 2 * t), EMPTY_RGB)
        tiles = []
        for q in quads:
            scene = make_scene(seed, 4 * i + q, domain=domain, image_size=t, config=tile_cfg)
            r, c = divmod(q, 2)
            grid.paste(scene.image, (c * t, r * t))
            tiles.append((scene, samples_for_scene(scene, domain=domain, config=tile_cfg)[0]))
        present = {(o.colour, o.shape) for sc, _ in tiles for o in sc.objects}
        order = [int(j) for j in rng.permutation(len(tiles))]
        row = {kind: "" for kind in NEGATIVE_KINDS}
        parts = [tiles[j][1].caption for j in order]
        cap = ", ".join(parts)
        # terse 30 % of the time, and whenever the full caption would not fit max_text tokens
        if rng.random() < 0.3 or len(tokenize_words(cap)) + 4 > tc.max_text:
            words = [" ".join(o.shape for o in tiles[j][0].objects) for j in order]
            cap = " ".join(words)
            absent = [sh for sh in cfg.shapes if sh not in {o for _, o in present}]
            flat = cap.split()
            if absent and flat:
                w = int(rng.integers(len(flat)))
                flat[w] = absent[int(rng.integers(len(absent)))]
                row["shape"] = " ".join(flat)
        else:
            for kind in ("colour", "shape", "absent"):
                opts = []
                for pos, j in enumerate(order):
                    s = tiles[j][1]
                    for ng in s.negatives:
                        new = _pairs_of(ng.caption) - _pairs_of(s.caption)
                        if ng.kind == kind and new and not new & present:
                            opts.append((pos, ng.caption))
                if opts:
                    pos, alt = opts[int(rng.integers(len(opts)))]
                    row[kind] = ", ".join([*parts[:pos], alt, *parts[pos + 1 :]])
        images.append(np.asarray(grid, dtype=np.uint8))
        caps.append(cap)
        negs.append([row[kind] for kind in NEGATIVE_KINDS])
        nobj.append(sum(len(sc.objects) for sc, _ in tiles))
    g = tc.image_size // tc.patch_size
    labels = torch.full((n, g * g), -1, dtype=torch.int64)  # no patch labels for collages
    return _pack(tok, tc, images, caps, negs, labels, nobj, torch.zeros(n, dtype=torch.int8))


MIRROR_SYMMETRIC = ("circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "heart")
"""Shapes that look the same mirrored left-right (all of them; rotation jitter just mirrors)."""

FLIP_SYMMETRIC = ("circle", "square", "cross", "diamond", "hexagon")
"""Shapes that look the same flipped upside down (not triangle, star, heart)."""


def relation_flip(sample: Any) -> int:
    """How to flip a relational sample's image so that its relation negative becomes true.

    Returns 1 (mirror left-right) for a left/right relation, 2 (flip upside down) for an
    above/below one when every object looks the same flipped, else 0. The flipped image keeps
    every object and swaps the stated relation, so (flipped image, relation negative) is a true
    pair that differs from (image, caption) only in where the objects are.
    """
    rel = sample.meta.get("relation")
    if not rel or not any(n.kind == "relation" for n in sample.negatives):
        return 0
    shapes = {o["shape"] for o in sample.meta["objects"]}
    if rel["axis"] == "x":
        return 1 if shapes <= set(MIRROR_SYMMETRIC) else 0
    return 2 if shapes <= set(FLIP_SYMMETRIC) else 0


def load_or_render(out: Path, tok: Any, tc: TrainConfig, cfg: WorldConfig) -> dict:
    """The training set, cached in ``out/data.safetensors``."""
    from safetensors.torch import load_file

    path = out / "data.safetensors"
    key = {"n": tc.n_train, "size": tc.image_size, "patch": tc.patch_size,
           "max_text": tc.max_text, "seeds": TRAIN_SEEDS, "cfg": repr(cfg),
           "vocab": len(tok), "format": 2}  # fmt: skip
    if tc.collage_share:  # the default recipe's key (and cache) stays as it was
        key.update(collage=tc.collage_share, collage_seeds=COLLAGE_SEEDS, format=3)
    key = json.dumps(key)
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return load_file(str(path))
    n_collage = round(tc.collage_share * tc.n_train)
    half = (tc.n_train - n_collage) // 2
    parts = [
        render_split(half, TRAIN_SEEDS[d], d, tok, tc, cfg, desc=f"render {d}")
        for d in ("plain", "textured")
    ]
    if n_collage:
        parts.append(render_collages(n_collage, tok, tc, cfg))
    data = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    save_tensors(data, path, meta={"key": key})
    return data


def to_pixels(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> CLIP-normalised float pixels (the processor's mean/std)."""
    x = images_u8.float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------------------------------
# model


def build(tc: TrainConfig) -> tuple[Any, Any, Any]:
    """A fresh (seeded) model, tokenizer and image processor for a config."""
    from transformers import CLIPImageProcessor, CLIPModel

    from dualex.models.factory import clip_config, word_tokenizer

    tok = word_tokenizer(builtin_vocabulary())
    tok.model_max_length = tc.max_text
    cfg = clip_config(
        len(tok),
        width=tc.width,
        layers=tc.layers,
        heads=tc.heads,
        image_size=tc.image_size,
        patch_size=tc.patch_size,
        projection_dim=tc.projection_dim,
        max_text=tc.max_text,
    )
    torch.manual_seed(tc.seed)
    model = CLIPModel(cfg)
    proc = CLIPImageProcessor(
        size={"shortest_edge": tc.image_size},
        crop_size={"height": tc.image_size, "width": tc.image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return model, tok, proc


def text_embed(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """Normalised text embeddings of padded ids (trimmed to the longest row)."""
    ids = ids.long()
    mask = ids != 0
    n = int(mask.sum(1).max())
    out = model.get_text_features(input_ids=ids[:, :n], attention_mask=mask[:, :n].long())
    if not torch.is_tensor(out):
        out = out.pooler_output
    return F.normalize(out, dim=-1)


def image_embed(model: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised pooled image embeddings ``[B, E]`` and patch embeddings ``[B, P, E]``."""
    vm = model.vision_model
    out = vm(pixel_values=pixels)
    pooled = model.visual_projection(out.pooler_output)
    patches = model.visual_projection(vm.post_layernorm(out.last_hidden_state[:, 1:]))
    return F.normalize(pooled, dim=-1), F.normalize(patches, dim=-1)


def losses(
    model: Any, batch: dict[str, torch.Tensor], phrase_ids: torch.Tensor, dense: bool
) -> dict[str, torch.Tensor]:
    """InfoNCE (hard negatives in the image->text denominator); ``loss`` excludes ``dense``."""
    b = batch["ids"].shape[0]
    k = batch["neg_ids"].shape[1]
    img, patches = image_embed(model, to_pixels(batch["images"]))
    ok = batch["neg_ok"]
    neg_rows = batch["neg_ids"][ok]
    texts = text_embed(model, torch.cat([batch["ids"], neg_ids_or_empty(neg_rows, batch)]))
    txt, neg = texts[:b], texts[b:]
    scale = model.logit_scale.clamp(max=math.log(100.0)).exp()
    li = scale * img @ torch.cat([txt, neg]).T  # [B, B + n_neg]
    t2i = scale * txt @ img.T
    target = torch.arange(b)
    out = {
        "i2t": F.cross_entropy(li, target),
        "t2i": F.cross_entropy(t2i, target),
    }
    # accuracy of the true caption against its own negatives (monitoring)
    with torch.no_grad():
        own = torch.full((b, k), -1e9)
        rows = torch.arange(b).unsqueeze(1).expand(b, k)[ok]
        own[ok] = (img[rows] * neg).sum(-1)
        pos = (img * txt).sum(-1, keepdim=True)
        # over the negatives that exist (flip-pair rows and missing kinds have none)
        out["neg_acc"] = (pos > own)[ok].float().mean() if ok.any() else torch.tensor(1.0)
        out["acc"] = (li.argmax(1) == target).float().mean()
    loss = (out["i2t"] + out["t2i"]) / 2
    if dense:
        ph = text_embed(model, phrase_ids)  # [C, E]
        lab = batch["labels"]
        sel = lab >= 0
        logits = scale * patches[sel] @ ph.T
        out["dense"] = F.cross_entropy(logits, lab[sel])
    out["loss"] = loss
    return out


def neg_ids_or_empty(neg_rows: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return neg_rows if len(neg_rows) else batch["ids"][:0]


# ------------------------------------------------------------------------------------------
# checkpoints


def _checkpoints(out: Path) -> Path:
    """Where a run keeps its checkpoints (:func:`dualex.trainer.save_checkpoint` folders)."""
    return out / "checkpoints"


def _save_ckpt(out: Path, model: Any, opt: torch.optim.Optimizer, step: int, tc: TrainConfig,
               log: list[dict]) -> None:  # fmt: skip
    save_checkpoint(_checkpoints(out), step, model, opt, {"config": asdict(tc), "log": log})
    shutil.rmtree(out / "checkpoint", ignore_errors=True)  # a legacy one is superseded now


def _load_ckpt(out: Path, model: Any, opt: torch.optim.Optimizer | None) -> tuple[int, list]:
    """Restore the newest checkpoint of ``out`` (``opt`` None: weights only): ``(step, log)``.

    Reads :func:`dualex.trainer.save_checkpoint` folders, and the single ``out/checkpoint``
    folder that runs before them wrote (``state.safetensors``: ``model.*`` weights and
    ``opt.<parameter name>.<key>`` optimizer state; ``state.json``), so those runs resume too.
    """
    from safetensors.torch import load_file

    ck = latest_checkpoint(_checkpoints(out))
    if ck is not None:
        info = load_checkpoint(ck, model, opt)
    elif (out / "checkpoint" / "state.json").is_file():
        legacy = out / "checkpoint"
        info = json.loads((legacy / "state.json").read_text())
        tensors = load_file(str(legacy / "state.safetensors"))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        params = dict(model.named_parameters())
        for k, v in tensors.items():
            if opt is not None and k.startswith("opt."):
                name, key = k[4:].rsplit(".", 1)
                opt.state[params[name]][key] = v
    else:
        return 0, []
    return int(info["step"]), list(info.get("log", []))


# ------------------------------------------------------------------------------------------
# training


def _lr(step: int, tc: TrainConfig) -> float:
    """The recipe's schedule: at least one warm-up step, cosine decay to 2 % of ``tc.lr``."""
    return warmup_cosine(step, tc.steps, tc.warmup, peak=tc.lr, floor=0.02, min_warmup=1)


def _batch(step: int, tc: TrainConfig, data: dict, easy: torch.Tensor) -> dict:
    """Deterministic batch of a step (so a resumed run sees the same data).

    Each image brings ``tc.negatives`` of its hard negatives (random available kinds).
    """
    g = torch.Generator().manual_seed(tc.seed * 1_000_003 + step)
    if step < tc.curriculum * tc.steps and len(easy):
        idx = easy[torch.randint(len(easy), (tc.batch,), generator=g)]
    else:
        idx = torch.randint(len(data["ids"]), (tc.batch,), generator=g)
    rel = NEGATIVE_KINDS.index("relation")
    n_rel = round(tc.relation_share * tc.batch)
    if n_rel:
        with_rel = torch.nonzero(data["neg_ok"][:, rel]).flatten()
        if len(with_rel):
            idx[:n_rel] = with_rel[torch.randint(len(with_rel), (n_rel,), generator=g)]
    batch = {k: v[idx] for k, v in data.items() if k not in ("n_objects", "flip")}
    ok = batch["neg_ok"]
    r = torch.rand(ok.shape, generator=g).masked_fill(~ok, -1.0)
    if n_rel:
        r[:, rel] = torch.where(ok[:, rel], 2.0, -1.0)  # a relation negative is always picked
    pick = r.topk(min(tc.negatives, ok.shape[1]), dim=1).indices  # [B, m]
    batch["neg_ids"] = batch["neg_ids"].gather(
        1, pick.unsqueeze(-1).expand(-1, -1, batch["neg_ids"].shape[-1])
    )
    batch["neg_ok"] = ok.gather(1, pick)
    if tc.flip_pairs:
        batch = _add_flip_pairs(batch, data, idx)
    return batch


def _add_flip_pairs(batch: dict, data: dict, idx: torch.Tensor) -> dict:
    """Append (flipped image, relation negative as caption) rows; see ``TrainConfig.flip_pairs``."""
    flip = data["flip"][idx].long()
    rows = torch.nonzero(flip > 0).flatten()
    if not len(rows):
        return batch
    rel = NEGATIVE_KINDS.index("relation")
    imgs = batch["images"][rows]
    labels = batch["labels"][rows]
    g = round(labels.shape[1] ** 0.5)
    labels = labels.view(-1, g, g)
    horizontal = flip[rows] == 1
    imgs = torch.where(horizontal.view(-1, 1, 1, 1), imgs.flip(3), imgs.flip(2))
    labels = torch.where(horizontal.view(-1, 1, 1), labels.flip(2), labels.flip(1))
    new = {
        "images": imgs,
        "ids": data["neg_ids"][idx[rows], rel],
        # the original caption is in the batch already: no extra negatives for these rows
        "neg_ids": batch["neg_ids"][rows],
        "neg_ok": torch.zeros_like(batch["neg_ok"][rows]),
        "labels": labels.reshape(len(rows), -1),
    }
    return {k: torch.cat([batch[k], new[k]]) for k in batch}


def train(
    out: str | os.PathLike, tc: TrainConfig, resume: bool = False, max_minutes: float = 0.0
) -> bool:
    """Train the built-in model into ``out`` (final files via ``save_pretrained``).

    Args:
        out: Output folder (checkpoints in ``out/checkpoints``, data cache
            ``out/data.safetensors``).
        tc: Hyper-parameters.
        resume: Continue from the newest checkpoint of ``out`` if there is one (also the
            ``out/checkpoint`` folder of runs before :mod:`dualex.trainer`).
        max_minutes: Wall-clock budget of this sitting (0: none). When it is spent the run saves
            a checkpoint and stops; ``resume=True`` continues it. The schedule is defined by
            ``tc.steps`` alone, so a run cut into sittings equals one uninterrupted run.

    Returns:
        True when the run finished (the model is saved), False when the budget stopped it.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(tc.threads)
    wcfg = world_config(tc.exclude_class, tc.world)
    model, tok, proc = build(tc)
    if tc.init:
        from transformers import CLIPModel

        # same architecture as the config (a mismatch raises here, not at export time)
        model.load_state_dict(CLIPModel.from_pretrained(tc.init).state_dict())
    data = load_or_render(out, tok, tc, wcfg)
    easy = torch.nonzero(data["n_objects"] <= 2).flatten()
    phrase_ids = encode_texts(tok, phrase_texts(wcfg), tc.max_text)

    opt = adamw(model.named_parameters(), tc.lr, tc.weight_decay)
    start, log = _load_ckpt(out, model, opt) if resume else (0, [])
    model.train()
    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, desc="train", mininterval=5)
    budget = TimeBudget(max_minutes)
    t_before = float(log[-1]["time"]) if log else 0.0  # earlier sittings' seconds
    ema: dict[str, float] = {}
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, tc)
        batch = _batch(step, tc, data, easy)
        res = losses(model, batch, phrase_ids, dense=tc.dense_weight > 0)
        loss = res["loss"]
        if "dense" in res:
            loss = loss + tc.dense_weight * res["dense"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for key in ("loss", "acc", "neg_acc", "dense"):
            if key in res:
                v = float((res[key] if key != "loss" else loss).detach())
                ema[key] = v if key not in ema else 0.95 * ema[key] + 0.05 * v
        bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()}, refresh=False)
        if (step + 1) % 50 == 0:
            log.append({"step": step + 1, "time": round(t_before + budget.elapsed(), 1), **ema,
                        "temp": float(model.logit_scale.exp())})  # fmt: skip
            print(json.dumps(log[-1]), flush=True)
        stop = budget.spent()
        if (step + 1) % tc.ckpt_every == 0 or step + 1 == tc.steps or stop:
            _save_ckpt(out, model, opt, step + 1, tc, log)
        if stop and step + 1 < tc.steps:
            bar.close()
            print(f"time budget spent at step {step + 1} of {tc.steps}; continue with --resume")
            return False
    bar.close()
    model.eval()
    save_model(out, model, tok, proc)
    save_json({"config": asdict(tc), "log": log}, out / "training.json")
    return True


def save_model(out: Path, model: Any, tok: Any, proc: Any) -> None:
    """The HF folder users load: config, model.safetensors, tokenizer files, processor."""
    model.config._attn_implementation = "eager"
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    proc.save_pretrained(str(out))


def export_checkpoint(out: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write the model of ``out``'s newest checkpoint as a loadable HF folder ``dest``."""
    out, dest = Path(out), Path(dest)
    ck = latest_checkpoint(_checkpoints(out))
    if ck is None and not (out / "checkpoint" / "state.json").is_file():
        from dualex.errors import SettingError

        raise SettingError(f"{str(out)!r} holds no checkpoint; pass the --out of a recipe run")
    info = json.loads(((ck or out / "checkpoint") / "state.json").read_text())
    model, tok, proc = build(TrainConfig(**info["config"]))
    _load_ckpt(out, model, None)
    save_model(dest, model.eval(), tok, proc)
    return dest


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m dualex.models.train_builtin --out DIR [--preset clip]
    [--steps N] [--resume] [--max-minutes M]``."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default=None)
    preset = pre.parse_known_args(argv)[0].preset
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named recipe (its settings; explicit flags win)")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from DIR's newest checkpoint")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop (with a checkpoint) after this many minutes; --resume continues")  # fmt: skip
    for f, v in asdict(TrainConfig()).items():
        if isinstance(v, bool):
            p.add_argument("--" + f.replace("_", "-"), action=argparse.BooleanOptionalAction,
                           default=v)  # fmt: skip
        else:
            p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    if preset:
        p.set_defaults(**{k.replace("-", "_"): v for k, v in PRESETS[preset].items()})
    args = vars(p.parse_args(argv))
    out, resume, minutes = args.pop("out"), args.pop("resume"), args.pop("max_minutes")
    args.pop("preset")
    if preset in NEEDS_INIT and not args["init"]:
        p.error(f"--preset {preset} continues a previous stage: pass --init STAGE_DIR")
    tc = TrainConfig(**args)
    if train(out, tc, resume=resume, max_minutes=minutes):
        print(f"saved the model to {out}")


if __name__ == "__main__":
    main()
