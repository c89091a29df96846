"""Second-order attributions of a dual encoder: :func:`explain` and :func:`project`.

The method of Moeller et al., "Explaining Caption-Image Interactions in CLIP Models with
Second-Order Attributions" (TMLR 2025, https://arxiv.org/abs/2408.14153): each tower is split at a
layer; the integrated Jacobian of its suffix along the straight path from a reference hidden state,
contracted with the hidden-state difference, gives a projection ``P: [E, S]`` per input; the
interactions of a pair are ``M = P_aᵀ P_b`` and, with three reference terms, add up to the score.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dualex.encoder import DualEncoder
from dualex.engine.interactions import interactions, pair_scale
from dualex.engine.lastblock import last_block_nodes
from dualex.engine.projection import (
    DEFAULT_MEMORY_BUDGET,
    integrated_projection,
    node_totals,
)
from dualex.engine.quadrature import Level, canonical_rule, nested_levels, nodes_and_weights
from dualex.errors import InvalidInputError, SettingError
from dualex.explanation import Explanation
from dualex.towers.base import Tower, TowerInput
from dualex.towers.positions import Positions, TextPositions

DEFAULT_TOL = 1e-3
"""Per-tower relative quadrature error that adaptive steps aim for."""

DEFAULT_MAX_STEPS = 64
"""Most quadrature nodes adaptive steps will use (see :func:`dualex.engine.quadrature.nested_levels`:
Gauss–Legendre 4, then Kronrod–Patterson 9, 19, 39, then Gauss–Legendre 64)."""


DEFAULT_BATCH_SIZE = 16
"""Inputs of one shape that share a prefix pass and a projection pass."""


@dataclass
class Projection:
    """The projection of one input through one tower; reusable for any pair.

    Attributes:
        P: ``[E, S]`` projection: ``Σ_s P[:, s] ≈ e − ē``.
        embedding: ``e``, ``[E]``: the embedding of the input.
        reference_embedding: ``ē``, ``[E]``: the suffix at the reference hidden state.
        positions: Metadata of the S positions.
        layer: Split layer.
        steps: Quadrature nodes used.
        rule: Quadrature rule.
        error: ``‖Σ_s P[:, s] − (e − ē)‖ / ‖e − ē‖``.
        raw: The original input (text, PIL image or tensor), kept for display.
    """

    P: Tensor
    embedding: Tensor
    reference_embedding: Tensor
    positions: Positions
    layer: int
    steps: int
    rule: str
    error: float
    raw: Any = None


def _check_settings(steps: int | None, tol: float, max_steps: int, rule: str) -> None:
    from dualex.limits import check_steps

    check_steps(steps, max_steps, rule=rule)  # bounds, before anything is allocated
    if not tol > 0:
        raise SettingError(f"tol must be positive, got {tol}")


def tower_items(tower: Tower, x: Any) -> list[Any]:
    """Split a batched tensor ``[B, …]`` into B single inputs; lists pass through.

    A token-id tensor is ``[S]`` (one text) or ``[B, S]``; a pixel tensor is ``[C, H, W]`` (one
    image) or ``[B, C, H, W]``.

    Towers that do not take tensors (``tensor_inputs`` false: custom towers whose raw input may
    itself be a tensor) get the input as it is.

    Raises:
        InvalidInputError: for a tensor of another shape or dtype.
    """
    if isinstance(x, Tensor) and tower.tensor_inputs:
        if x.is_floating_point():
            if x.dim() == 3:
                return [x]
            if x.dim() == 4:
                return list(x)
            raise InvalidInputError(
                f"a pixel tensor must be [C, H, W] or [B, C, H, W], got {tuple(x.shape)}"
            )
        if x.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            if x.dim() == 1:
                return [x]
            if x.dim() == 2:
                return list(x)
        raise InvalidInputError(
            f"cannot use a {x.dtype} tensor of shape {tuple(x.shape)} as {tower.modality} input; "
            "pass token ids as an integer tensor [S] or [B, S], or pixels as a float tensor "
            "[C, H, W] or [B, C, H, W]"
        )
    if isinstance(x, str | Tensor) or not isinstance(x, list | tuple):
        return [x]
    return list(x)


def project_one(
    tower: Tower,
    x: Any,
    *,
    layer: int | None = None,
    steps: int | None = None,
    rule: str | None = None,
    reference: Any = None,
    mode: str = "auto",
    tol: float = DEFAULT_TOL,
    max_steps: int = DEFAULT_MAX_STEPS,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Projection:
    """Project one input through one tower (see :func:`explain` for the arguments).

    Returns:
        The input's :class:`Projection`.
    """
    return project_many(
        tower,
        [x],
        layer=layer,
        steps=steps,
        rule=rule,
        reference=reference,
        mode=mode,
        tol=tol,
        max_steps=max_steps,
        memory_budget=memory_budget,
    )[0]


def project_many(
    tower: Tower,
    items: Sequence[Any],
    *,
    layer: int | None = None,
    steps: int | None = None,
    rule: str | None = None,
    reference: Any = None,
    mode: str = "auto",
    tol: float = DEFAULT_TOL,
    max_steps: int = DEFAULT_MAX_STEPS,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Any = None,
) -> list[Projection]:
    """Project many inputs through one tower, B inputs of one shape per pass.

    Inputs are prepared, grouped by shape, and each group runs its prefix, its reference
    (input-independent references are cached per model) and its projection together, with
    inputs × nodes × tangents chunked to ``memory_budget``. The result for each input equals
    projecting it alone (to float round-off).

    Args:
        tower: The tower (``model.tower_a`` or ``model.tower_b``).
        items: Raw inputs (texts, images, or tensors: see :func:`tower_items`).
        batch_size: Inputs per pass.
        progress: A tqdm-like bar to ``update(n)`` as inputs finish, or None.
        Other arguments: as in :func:`explain`.

    Returns:
        One :class:`Projection` per input, in order.
    """
    rule = canonical_rule(rule)
    _check_settings(steps, tol, max_steps, rule)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SettingError(f"batch_size must be a positive integer, got {batch_size!r}")
    layer = tower.check_layer(layer)
    inps = [tower.prepare(x) for item in items for x in tower_items(tower, item)]
    groups: dict[tuple, list[int]] = {}
    for i, inp in enumerate(inps):
        groups.setdefault(tower.batch_key(inp), []).append(i)
    out: list[Projection | None] = [None] * len(inps)
    with torch.no_grad(), tower.session():  # torch.func transforms still differentiate inside
        for idx in groups.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                done = _project_group(
                    tower,
                    [inps[i] for i in chunk],
                    layer,
                    steps,
                    rule,
                    reference,
                    mode,
                    tol,
                    max_steps,
                    memory_budget,
                )
                for i, p in zip(chunk, done, strict=True):
                    out[i] = p
                if progress is not None:
                    progress.update(len(chunk))
    return out  # type: ignore[return-value]


def _adapt(
    levels: list[Level],
    values: Any,
    errors: Any,
    count: int,
    tol: float,
) -> tuple[list[int], Tensor]:
    """The one adaptive loop: try ``levels`` in turn, evaluating only nodes not seen before.

    Args:
        levels: Nested rules, fewest nodes first (:func:`nested_levels`); a node that an earlier
            level has (the same float) is not evaluated again.
        values: ``(alphas [n], items) -> [len(items), n, ...]``: the integrand at new nodes.
        errors: ``(combined [len(items), ...], items) -> [len(items)]``: each input's relative
            tower error of the level's weighted sum.
        count: Number of inputs.
        tol: An input stops at the first level whose error is at most ``tol`` (or the last level).

    Returns:
        ``(level index per input, the weighted sums [count, ...] in float64)``.
    """
    store: dict[float, Tensor] = {}
    chosen = [len(levels) - 1] * count
    result: Tensor | None = None
    pending = list(range(count))
    for k, level in enumerate(levels):
        nodes = level.alphas.tolist()
        new = [a for a in nodes if a not in store]
        if new:
            vals = values(torch.tensor(new, dtype=torch.float64), pending)  # [p, n_new, ...]
            for j, a in enumerate(new):
                slot = vals.new_zeros(count, *vals.shape[2:])
                slot[pending] = vals[:, j]
                store[a] = slot
        idx = torch.as_tensor(pending, device=next(iter(store.values())).device)
        combined = None
        for a, w in zip(nodes, level.weights.tolist(), strict=True):
            term = store[a][idx].double() * w
            combined = term if combined is None else combined + term
        assert combined is not None
        if result is None:
            result = combined.new_zeros(count, *combined.shape[1:])
        last = k == len(levels) - 1
        errs = errors(combined, pending).tolist()
        left = []
        for row, (i, err) in enumerate(zip(pending, errs, strict=True)):
            if last or err <= tol:
                chosen[i] = k
                result[i] = combined[row]
            else:
                left.append(i)
        pending = left
        if not pending:
            break
    assert result is not None
    return chosen, result


def _project_group(
    tower: Tower,
    inps: list[TowerInput],
    layer: int,
    steps: int | None,
    rule: str,
    reference: Any,
    mode: str,
    tol: float,
    max_steps: int,
    memory_budget: int,
) -> list[Projection]:
    """Projections of inputs of one shape (one prefix pass, one batched projection).

    Given ``steps``, one rule; otherwise the nested levels of :func:`nested_levels` in one loop
    (:func:`_adapt`). On the last-block fast path the integrand is each node's P, so the level
    that meets the tolerance is already the result; on the generic path the integrand is each
    node's column sum (one whole-Δ JVP per node) and P is computed once at the level chosen.
    """
    B = len(inps)
    H = tower.hidden_batch(inps, layer)  # [B, S, D]
    H_ref = tower.reference_hidden_batch(inps, layer, reference)
    suffix = tower.suffix_batch(inps, layer)
    everyone = list(range(B))
    e = suffix(H, everyone).detach()  # [B, E]
    e_ref = tower.reference_embedding_batch(inps, layer, H_ref, suffix)
    diff = (e - e_ref).double()
    diff_norm = diff.norm(dim=1)

    def rel(total: Tensor, sel: list[int]) -> Tensor:
        err = (total.double() - diff[sel]).norm(dim=1)
        d = diff_norm[sel]
        return torch.where(d > 0, err / torch.where(d > 0, d, 1.0), err)

    fast = tower.fast_path(inps, layer) if mode == "auto" else None
    if steps is not None:
        levels = [Level(*nodes_and_weights(rule, steps), rule)]
    else:
        # the generic path tries levels by cheap column sums, so a 1-node trial costs nothing
        levels = nested_levels(rule, max_steps, midpoint=fast is None)
    S = H.shape[1]
    if fast is not None:
        # Last-block structure: each node's P costs about one block pass.
        Hf, Rf = fast.pad(H), fast.pad(H_ref)

        def node_P(a: Tensor, sel: list[int]) -> Tensor:
            keys = None if fast.keys is None else fast.keys[sel]
            return last_block_nodes(
                fast.block, Hf[sel], Rf[sel], fast.rows[sel], a, S, memory_budget, keys
            )

        chosen, found = _adapt(levels, node_P, lambda P, sel: rel(P.sum(2), sel), B, tol)
        P = found.to(H.dtype)
    else:
        if len(levels) == 1:
            chosen = [0] * B
        else:

            def totals(a: Tensor, sel: list[int]) -> Tensor:
                chunk = max(1, min(len(a), 16))
                return node_totals(suffix, H[sel], H_ref[sel], a, chunk, items=sel)

            chosen, _ = _adapt(levels, totals, rel, B, tol)
        P = H.new_empty(B, e.shape[1], S)
        for k in sorted(set(chosen)):
            sel = [i for i in everyone if chosen[i] == k]
            P[sel] = integrated_projection(
                suffix,
                H[sel],
                H_ref[sel],
                levels[k].alphas,
                levels[k].weights,
                mode=mode,
                embed_dim=e.shape[1],
                memory_budget=memory_budget,
                items=sel,
            ).detach()
    errs = (P.double().sum(2) - diff).norm(dim=1) / torch.where(diff_norm > 0, diff_norm, 1.0)
    P, e, e_ref = P.cpu(), e.cpu(), e_ref.cpu()  # results live on the CPU, whatever the model
    return [
        Projection(
            P=P[i],
            embedding=e[i],
            reference_embedding=e_ref[i],
            positions=tower.positions_at(inps[i], layer),
            layer=layer,
            steps=levels[chosen[i]].steps,
            rule=levels[chosen[i]].rule,
            error=float(errs[i]),
            raw=inps[i].raw,
        )
        for i in everyone
    ]


def _pair(value: Any, name: str) -> tuple[Any, Any]:
    if name == "rule" and isinstance(value, str) and " / " in value:
        first, _, second = value.partition(" / ")  # as a completeness record reports two rules
        return first, second
    if isinstance(value, list | tuple) and len(value) == 2 and name != "reference":
        return value[0], value[1]
    if name == "reference" and isinstance(value, tuple) and len(value) == 2:
        return value
    return value, value


def check_layers(model: DualEncoder, layers: Any) -> tuple[int, int]:
    """Each tower's split layer for ``layers`` (one for both towers, a ``(a, b)`` pair, or
    ``None`` for the defaults), checked against the towers.

    Raises:
        InvalidLayerError: if a layer is not an int or out of a tower's range.
    """
    la, lb = _pair(layers, "layers")
    return model.tower_a.check_layer(la), model.tower_b.check_layer(lb)


def combine_projections(
    model: DualEncoder, a: Projection, b: Projection, logit_scale: float | None
) -> Explanation:
    """The explanation of two projections: ``M = P_aᵀ P_b`` with its completeness record
    (``a`` and ``b`` may come from either tower, e.g. two images of a search gallery).

    Args:
        model: The model both projections came from.
        a: Projection of the first input (``P [E, S_a]``).
        b: Projection of the second input (``P [E, S_b]``).
        logit_scale: Multiply the score by it, or ``None``.
    """
    M, comp = interactions(
        a.P,
        b.P,
        a.embedding,
        a.reference_embedding,
        b.embedding,
        b.reference_embedding,
        similarity=model.similarity,
        logit_scale=logit_scale,
        steps=(a.steps, b.steps),
        rule=a.rule if a.rule == b.rule else f"{a.rule} / {b.rule}",
    )
    return Explanation(
        matrix=M,
        a=a.positions,
        b=b.positions,
        completeness=comp,
        layers=(a.layer, b.layer),
        model=model.name,
        raw_a=a.raw,
        raw_b=b.raw,
        weights=model.weights,
        projections=(a.P, b.P),
        factor=pair_scale(a.embedding, b.embedding, model.similarity, logit_scale),
    )


def _check_order(model: DualEncoder, a: Any, b: Any) -> None:
    from PIL import Image

    def looks_image(x: Any) -> bool:
        return isinstance(x, Image.Image) or (
            isinstance(x, str) and x.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        )

    text_image = model.tower_a.modality == "text" and model.tower_b.modality == "image"
    if text_image and isinstance(b, str) and not looks_image(b) and looks_image(a):
        raise InvalidInputError(
            "the arguments look swapped: this model takes (text, image); call "
            "explain(model, caption, image)"
        )


def method_settings(
    method: Any,
    budget: Any,
    p: Any,
    masking: Any,
    estimator: Any,
    seed: Any,
    grid: Any,
    layers: Any,
    steps: Any,
) -> dict[str, Any] | None:
    """The ``banzhaf`` settings (defaults filled in), or ``None`` for ``method="dualex"``.

    Raises:
        SettingError: for an unknown method, settings of the other method, or a setting out of
            range.
    """
    from dualex.faithful import DEFAULT_BUDGET, check_settings

    given = {
        k: v
        for k, v in dict(
            budget=budget, p=p, masking=masking, estimator=estimator, seed=seed, grid=grid
        ).items()
        if v is not None
    }
    if method == "dualex":
        if given:
            raise SettingError(
                f"{', '.join(given)} set(s) method='banzhaf'; pass method='banzhaf' or drop them"
            )
        return None
    st = dict(budget=DEFAULT_BUDGET, p=0.5, masking="reference", estimator="regression", seed=0)
    st.update(given)
    check_settings(method, st["budget"], st["p"], st["masking"], st["estimator"], st["seed"])
    if layers is not None or steps is not None:
        raise SettingError(
            "layers and steps set method='dualex'; method='banzhaf' masks inputs instead"
        )
    st.setdefault("grid", None)
    return st


def explain(
    model: DualEncoder | Any,
    a: Any,
    b: Any,
    layers: int | Sequence[int] | None = None,
    steps: int | Sequence[int] | None = None,
    rule: str | None = None,
    reference: Any = None,
    *,
    scale: bool = False,
    mode: str = "auto",
    tol: float = DEFAULT_TOL,
    max_steps: int = DEFAULT_MAX_STEPS,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    method: str = "dualex",
    budget: int | None = None,
    p: float | None = None,
    masking: str | None = None,
    estimator: str | None = None,
    seed: int | None = None,
    grid: tuple[int, int] | None = None,
) -> Explanation:
    """Explain the similarity of one pair by token × patch (or token × token) interactions.

    Implements the second-order attributions of Moeller et al., TMLR 2025
    (https://arxiv.org/abs/2408.14153).

    Args:
        model: A :class:`DualEncoder` (from :func:`dualex.load` / :func:`dualex.wrap`).
        a: Input of the first tower (a caption for CLIP-like models).
        b: Input of the second tower (an image path / PIL image, or a second text).
        layers: Split layer, one int for both towers or ``(layer_a, layer_b)``; ``None``: the
            input of each tower's last block. Negative values count from the end.
        steps: Quadrature nodes (int or per-tower pair); ``None``: adaptive — nested rules of
            more and more nodes (Gauss–Legendre 4, Kronrod–Patterson 9, 19, 39, each reusing
            every node already evaluated, then Gauss–Legendre ``max_steps``) until each tower's
            relative error ≤ ``tol``.
        rule: ``"gauss-legendre"`` (default), ``"riemann"`` (the paper's code),
            ``"trapezoid"`` or ``"kronrod-patterson"``; or a per-tower pair, also as a
            completeness record reports one (``"gauss-legendre / kronrod-patterson"``), so that
            ``steps=ex.completeness.steps, rule=ex.completeness.rule`` reproduces an adaptive
            result.
        reference: Reference spec for both towers or ``(ref_a, ref_b)``; ``None``: each tower's
            default (exCLIP-compatible for CLIP: ``[BOS, 0, EOS, 0…]`` text, all-zero image).
        scale: Multiply the score by the model's logit scale.
        mode: ``"auto"``, ``"forward"`` or ``"reverse"`` mode AD.
        tol: Target per-tower relative error of adaptive steps.
        max_steps: Cap of adaptive steps.
        memory_budget: Bytes one chunk of work may use (approximately).
        method: ``"dualex"`` (the paper's method: exact completeness, about three forward
            passes per input) or ``"banzhaf"`` (sampled cross-modal weighted Banzhaf
            interactions of the masking game, :mod:`dualex.faithful`: faithful to what the
            model does with parts of the inputs removed, at ``budget`` tower passes; image–text
            models only).
        budget: ``"banzhaf"``: tower passes, ``budget // 2`` coalitions per input (default
            2048).
        p: ``"banzhaf"``: probability of each player being present (default 0.5).
        masking: ``"banzhaf"``: how an absent token is masked, ``"reference"`` (default: the
            pad reference's filler token), ``"remove"`` or ``"attention"``.
        estimator: ``"banzhaf"``: ``"regression"`` (default) or ``"sign"``.
        seed: ``"banzhaf"``: sampling seed (default 0).
        grid: ``"banzhaf"``: ``(rows, cols)`` image regions (default: every patch up to 64).

    Returns:
        An :class:`Explanation` whose ``matrix`` is ``[S_a, S_b]`` over every position.
    """
    from dualex.model import wrap

    model = wrap(model)
    _check_order(model, a, b)
    banzhaf = method_settings(method, budget, p, masking, estimator, seed, grid, layers, steps)
    if banzhaf is not None:
        from dualex.faithful import project_banzhaf

        return project_banzhaf(model, [a], [b], scale=scale, **banzhaf).explanation(0, 0)
    la, lb = _pair(layers, "layers")
    sa, sb = _pair(steps, "steps")
    ra, rb = _pair(reference, "reference")
    qa, qb = _pair(rule, "rule")
    opts = dict(mode=mode, tol=tol, max_steps=max_steps, memory_budget=memory_budget)
    for side, x, tower in (("a", a, model.tower_a), ("b", b, model.tower_b)):
        if isinstance(x, Tensor) and len(tower_items(tower, x)) != 1:
            raise InvalidInputError(
                f"explain() takes one pair, but input {side} is a batch {tuple(x.shape)}; pass one "
                "item, or use dualex.project() for batches"
            )
    a, b = (_known(tower, x) for tower, x in ((model.tower_a, a), (model.tower_b, b)))
    with model.session():
        pa = project_one(model.tower_a, a, layer=la, steps=sa, rule=qa, reference=ra, **opts)
        pb = project_one(model.tower_b, b, layer=lb, steps=sb, rule=qb, reference=rb, **opts)
        return combine_projections(model, pa, pb, model.current_logit_scale() if scale else None)


def _known(tower: Tower, x: Any) -> Any:
    """A text input prepared and checked to hold at least one word the model knows (so a
    caption of unknown words is refused before any work); other inputs as they are.

    Raises:
        InvalidInputError: naming the words, if the model knows none of them.
    """
    from dualex.towers.inputs import check_known

    if getattr(tower, "modality", "") != "text" or isinstance(x, TowerInput):
        return x
    with warnings.catch_warnings(record=True) as caught:  # a refusal says it all in one line
        warnings.simplefilter("always")
        inp = tower.prepare(x)
    if isinstance(inp.positions, TextPositions):
        check_known(inp.positions)
    for w in caught:  # known words: the input's warnings (truncation, ...) as they came
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return inp


@dataclass
class Projections:
    """Cached per-item projections of many inputs; any pair is one matrix product.

    Attributes:
        model: The dual encoder.
        a: Projections of the first tower's inputs.
        b: Projections of the second tower's inputs.
        scale: Whether scores include the logit scale.
        logit_scale: The model's logit scale when the projections were made (if ``scale``).
    """

    model: DualEncoder
    a: list[Projection]
    b: list[Projection]
    scale: bool = False
    logit_scale: float | None = None

    def explanation(self, i: int, j: int) -> Explanation:
        """The :class:`Explanation` of pair ``(a[i], b[j])``, equal to :func:`explain`'s."""
        return combine_projections(
            self.model, self.a[i], self.b[j], self.logit_scale if self.scale else None
        )

    def matrix(self, i: int, j: int) -> Tensor:
        """Interaction matrix ``[S_a, S_b]`` of pair ``(a[i], b[j])``."""
        return self.explanation(i, j).matrix

    def scores(self) -> Tensor:
        """Model scores of every pair, ``[len(a), len(b)]``."""
        ea = torch.stack([p.embedding.double() for p in self.a])
        eb = torch.stack([p.embedding.double() for p in self.b])
        s = ea @ eb.T
        if self.model.similarity == "cosine":
            s = s / ea.norm(dim=1, keepdim=True) / eb.norm(dim=1).unsqueeze(0)
        if self.scale and self.logit_scale is not None:
            s = s * self.logit_scale
        return s


def project(
    model: DualEncoder | Any,
    texts: Sequence[Any] | Tensor | None = None,
    images: Sequence[Any] | Tensor | None = None,
    *,
    a: Sequence[Any] | Tensor | None = None,
    b: Sequence[Any] | Tensor | None = None,
    layers: int | Sequence[int] | None = None,
    steps: int | Sequence[int] | None = None,
    rule: str | None = None,
    reference: Any = None,
    scale: bool = False,
    mode: str = "auto",
    tol: float = DEFAULT_TOL,
    max_steps: int = DEFAULT_MAX_STEPS,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    method: str = "dualex",
    budget: int | None = None,
    p: float | None = None,
    masking: str | None = None,
    estimator: str | None = None,
    seed: int | None = None,
    grid: tuple[int, int] | None = None,
) -> Projections | Any:
    """Project many inputs once each, so n × m pairs cost n + m projections.

    Inputs of one shape are projected ``batch_size`` at a time (one prefix pass, one batched
    projection); input-independent reference hidden states are computed once per model.

    Args:
        model: A :class:`DualEncoder`, or a model object :func:`dualex.wrap` accepts.
        texts: Inputs of the text tower (CLIP-like models): strings, or token ids ``[B, S]``;
        images: inputs of the image tower: paths, PIL images, arrays, or pixels
            ``[B, C, H, W]``. For two-text models pass ``a=`` and ``b=``.
        batch_size: Inputs per pass.
        progress: Show a progress bar (``None``: when stderr is a terminal).
        method: ``"dualex"`` or ``"banzhaf"`` (per-input Banzhaf terms, see :func:`explain`).
        Other arguments: as in :func:`explain`.

    Returns:
        :class:`Projections` (``method="banzhaf"``:
        :class:`dualex.faithful.BanzhafProjections`); ``.explanation(i, j)`` equals
        ``explain(model, a[i], b[j], ...)`` with the same settings.
    """
    from dualex.model import wrap

    model = wrap(model)

    def given(x: Any, y: Any) -> Any:
        return x if x is not None else y

    raw_a, raw_b = given(a, texts), given(b, images)
    items_a = [] if raw_a is None else tower_items(model.tower_a, raw_a)
    items_b = [] if raw_b is None else tower_items(model.tower_b, raw_b)
    if not items_a or not items_b:
        raise InvalidInputError(
            "project() needs at least one input on each side (texts= and images=, or a= and b=)"
        )
    banzhaf = method_settings(method, budget, p, masking, estimator, seed, grid, layers, steps)
    la, lb = _pair(layers, "layers")
    sa, sb = _pair(steps, "steps")
    ra, rb = _pair(reference, "reference")
    qa, qb = _pair(rule, "rule")
    opts = dict(
        mode=mode,
        tol=tol,
        max_steps=max_steps,
        memory_budget=memory_budget,
        batch_size=batch_size,
    )
    from tqdm.auto import tqdm

    if banzhaf is not None:
        from dualex.faithful import project_banzhaf

        with tqdm(
            total=len(items_a) + len(items_b),
            disable=None if progress is None else not progress,
            desc="fitting banzhaf terms",
        ) as bar:
            return project_banzhaf(
                model, items_a, items_b, scale=scale, batch_size=batch_size, progress=bar, **banzhaf
            )
    with (
        tqdm(
            total=len(items_a) + len(items_b),
            disable=None if progress is None else not progress,
            desc="projecting",
        ) as bar,
        model.session(),
    ):
        out_a = project_many(
            model.tower_a, items_a, layer=la, steps=sa, rule=qa, reference=ra, progress=bar, **opts
        )
        out_b = project_many(
            model.tower_b, items_b, layer=lb, steps=sb, rule=qb, reference=rb, progress=bar, **opts
        )
        logit_scale = model.current_logit_scale() if scale else None
    return Projections(model=model, a=out_a, b=out_b, scale=scale, logit_scale=logit_scale)
