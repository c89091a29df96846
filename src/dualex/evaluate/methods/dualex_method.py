"""dualex's own method: the interaction matrix of each text with the image.

``dualex`` explains each text as given (tasks pass whole captions and slice each mention's rows);
``dualex-span`` is the same computation under the name tasks use when each phrase is explained
as the whole text (the first-order baselines' setting). The image is projected once for every
text (:func:`dualex.project`).

Coalition terms (``Attribution.extra``), used by the faithfulness task to predict the model's
score when only some tokens and patches are present: with the projections ``P_a [E, S_a]``,
``P_b [E, S_b]``, the reference embeddings ``ē_a, ē_b`` and the pair's scale ``c`` (cosine:
``1 / (‖e_a‖ ‖e_b‖)``, times the logit scale if used),

    v̂(T, P) = c · (ē_a + Σ_{i∈T} P_a[:, i]) · (ē_b + Σ_{j∈P} P_b[:, j])
            = constant + Σ_{i∈T} first_order_text[i] + Σ_{j∈P} first_order_image[j]
              + Σ_{i∈T, j∈P} M[i, j],

so ``constant = c ē_a·ē_b``, ``first_order_text = c P_aᵀ ē_b``, ``first_order_image = c ē_aᵀ P_b``.
With every position present, v̂ is the model's score (up to the completeness error); the
three reference terms of :class:`~dualex.engine.interactions.Completeness` are the same
quantities summed.
"""

from __future__ import annotations

from typing import Any

from dualex.engine.interactions import pair_scale
from dualex.evaluate.methods.base import Attribution, Method, as_double, timed

__all__ = ["METHODS", "run_dualex"]


def run_dualex(
    model: Any,
    image: Any,
    texts: list[str],
    *,
    layers: Any = None,
    steps: Any = None,
    name: str = "dualex",
    **project_options: Any,
) -> list[Attribution]:
    """Explain every text against the image with dualex.

    Args:
        model: A :class:`dualex.DualEncoder` (or any model :func:`dualex.wrap` accepts).
        image: The image (or, for text–text models, the second text).
        texts: Texts for the first tower.
        layers: Split layer(s) (``None``: the last block's input).
        steps: Quadrature nodes (``None``: adaptive).
        name: The method name written into each attribution.
        **project_options: Passed to :func:`dualex.project`.

    Returns:
        One :class:`Attribution` per text: ``matrix [S_text, S_image]`` in score units,
        ``explanation`` (the :class:`dualex.Explanation`) and, in ``extra``, the coalition terms
        ``constant``, ``first_order_text [S_text]``, ``first_order_image [S_image]``.
    """
    import dualex

    def go() -> list[Attribution]:
        model_ = dualex.wrap(model)
        proj = dualex.project(
            model_, texts=texts, images=[image], layers=layers, steps=steps, **project_options
        )
        pb = proj.b[0]
        out = []
        for i in range(len(texts)):
            ex = proj.explanation(i, 0)
            pa = proj.a[i]
            c = pair_scale(
                pa.embedding.double(),
                pb.embedding.double(),
                model_.similarity,
                proj.logit_scale if proj.scale else None,
            )
            ra, rb = as_double(pa.reference_embedding), as_double(pb.reference_embedding)
            m, text_pos, image_pos = ex.text_image()
            out.append(
                Attribution(
                    method=name,
                    image=image_pos,
                    matrix=m,
                    text=text_pos,
                    units="score",
                    score=ex.score,
                    completeness=ex.completeness.relative_error,
                    steps=max(ex.completeness.steps),
                    explanation=ex,
                    extra={
                        "constant": float(ra @ rb) * c,
                        "first_order_text": (as_double(pa.P).T @ rb) * c,
                        "first_order_image": (ra @ as_double(pb.P)) * c,
                    },
                )
            )
        return out

    return timed(go)


METHODS = {
    "dualex": Method(
        name="dualex",
        order=2,
        summary="dualex: second-order interactions integrated at a split layer (Moeller et al.)",
        run=run_dualex,
        text_input="caption",
        settings=("layers", "steps"),
    ),
    "dualex-span": Method(
        name="dualex-span",
        order=2,
        summary="dualex with each phrase explained as the whole text",
        run=lambda model, image, texts, **kw: run_dualex(
            model, image, texts, name="dualex-span", **kw
        ),
        text_input="span",
        settings=("layers", "steps"),
    ),
}
"""The two names this module defines."""
