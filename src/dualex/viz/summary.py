"""What a reader needs to read one explanation: safe labels, modality names, strongest pairs.

Shared by the CLI's summary and the HTML report, so both say the same thing.
"""

from __future__ import annotations

from typing import Any

from dualex.towers.positions import ImagePositions, Positions, TextPositions

__all__ = [
    "UNKNOWN_NOTE",
    "display_text",
    "method_lines",
    "modality_names",
    "position_labels",
    "strongest_interactions",
    "unknown_note",
    "unranked",
]

UNKNOWN_NOTE = "unknown to the model's vocabulary"
"""What greyed tokens are, in every view (report, figure, terminal)."""


def unknown_note(ex: Any) -> str:
    """``"3 words unknown to the model's vocabulary (car, parked, beside): ..."`` for an
    explanation with unknown tokens on a text side, else ``""``. Every view says the same."""
    words: list[str] = []
    for pos in (ex.a, ex.b):
        if isinstance(pos, TextPositions):
            words += [display_text(w) for w in pos.unknown_words()]
    if not words:
        return ""
    shown = ", ".join(words[:5]) + (", ..." if len(words) > 5 else "")
    n = len(words)
    return (
        f"{n} word{'s' if n > 1 else ''} {UNKNOWN_NOTE} ({shown}): the model reads "
        f"{'each' if n > 1 else 'it'} as one generic 'unknown' token, so "
        f"{'they are' if n > 1 else 'it is'} greyed and left out of rankings"
    )


def display_text(text: str) -> str:
    """``text`` with control characters (ANSI escapes, NUL, BEL, newlines...) shown as ``\\xNN``
    escapes, so a caption can never drive the terminal."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def modality_names(ex: Any) -> tuple[str, str]:
    """Column names of the two sides: ``("token", "patch")``, or ``("token A", "token B")``
    for two texts (``("patch A", "patch B")`` for two images)."""
    kinds = [getattr(p, "kind", "text") for p in (ex.a, ex.b)]
    names = ["token" if k == "text" else "patch" for k in kinds]
    if names[0] == names[1]:
        return f"{names[0]} A", f"{names[1]} B"
    return names[0], names[1]


def position_labels(pos: Positions, boxes: bool = True) -> list[str]:
    """A label per position: a text token (control characters escaped), or a patch as
    ``r3c6 [x 96–128, y 48–80]`` with its box in original-image pixels."""
    if isinstance(pos, TextPositions):
        labels = []
        for tok, off in zip(pos.tokens, pos.offsets, strict=True):
            shown = pos.text[off[0] : off[1]] if off is not None and off[1] > off[0] else tok
            labels.append(display_text(shown))
        return labels
    assert isinstance(pos, ImagePositions)
    labels = list(pos.labels)
    if boxes:
        start = pos.patch_slice.start
        for k, (x0, y0, x1, y1) in enumerate(pos.patch_boxes()):
            labels[start + k] += f" [x {x0:.0f}–{x1:.0f}, y {y0:.0f}–{y1:.0f}]"
    return labels


def _special(pos: Positions) -> list[int]:
    if isinstance(pos, TextPositions):
        return [i for i, s in enumerate(pos.special) if s]
    n = len(pos)
    return list(range(pos.prefix)) + list(range(pos.patch_slice.stop, n))


def unranked(pos: Positions, include_special: bool = False) -> list[int]:
    """Positions no ranking lists: unknown tokens (one generic token, whatever the word), and
    special tokens and CLS / register positions unless ``include_special``."""
    out = set(getattr(pos, "unknown", ()))
    if not include_special:
        out |= set(_special(pos))
    return sorted(out)


def strongest_interactions(
    ex: Any, k: int = 5, include_special: bool = False
) -> list[tuple[str, str, float]]:
    """The ``k`` interactions largest in ``|value|``, with their sign, as ``(a, b, value)``.

    Unknown tokens (:attr:`TextPositions.unknown`) are never ranked: the model read them all as
    one generic token, so a row of them says nothing about the word shown.

    Args:
        ex: An :class:`~dualex.explanation.Explanation`.
        k: How many.
        include_special: Also rank special tokens and CLS / register positions.

    Returns:
        Rows ``(label_a, label_b, value)`` sorted by ``|value|`` (labels from
        :func:`position_labels`).
    """
    m = ex.matrix.detach().double().abs().clone()
    ia = [i for i in unranked(ex.a, include_special) if i < m.shape[0]]
    ib = [j for j in unranked(ex.b, include_special) if j < m.shape[1]]
    if ia:
        m[ia] = -1.0
    if ib:
        m[:, ib] = -1.0
    flat = m.flatten()
    k = min(k, int((flat >= 0).sum()))
    _, ids = flat.topk(k)
    la, lb = position_labels(ex.a), position_labels(ex.b)
    nb = m.shape[1]
    values = ex.matrix.detach().double().flatten()
    return [(la[i // nb], lb[i % nb], float(values[i])) for i in ids.tolist()]


def method_lines(ex: Any, k: int = 3) -> list[tuple[str, str]]:
    """What a ``"banzhaf"`` explanation holds besides its matrix, as ``(label, value)`` rows:
    the method and its settings, the sampling error, the coalition prediction of the full pair
    and the strongest first-order terms; ``[]`` for the paper's method (whose completeness
    says it all)."""
    if getattr(ex, "method", "dualex") == "dualex":
        return []
    st = ex.settings
    c = ex.completeness

    def num(v: Any) -> str:
        return f"{float(v):.4g}"

    rows = [
        (
            "method",
            f"{ex.method}: weighted Banzhaf interactions of the masking game (p {st.get('p')}, "
            f"budget {st.get('budget')}, {st.get('estimator')} estimator, masking "
            f"{st.get('masking')}, seed {st.get('seed')})",
        ),
        (
            "sampling error",
            "0 (every coalition enumerated)"
            if st.get("exact")
            else f"{float(st.get('sampling_error', 0.0)):.2e} (relative, from split halves)",
        ),
        ("coalitions", " × ".join(str(v) for v in st.get("coalitions", []))),
        ("v(∅) (all masked)", num(st.get("empty_value", float("nan")))),
        ("order-0 constant", num(c.reference_terms[0])),
        ("Σ first-order " + modality_names(ex)[0], num(c.reference_terms[1])),
        ("Σ first-order " + modality_names(ex)[1], num(c.reference_terms[2])),
        ("Σ interactions", num(c.attribution_sum)),
        ("prediction of the full pair", num(st.get("predicted_value", float("nan")))),
    ]
    for fo, pos, name in (
        (ex.first_order_a, ex.a, modality_names(ex)[0]),
        (ex.first_order_b, ex.b, modality_names(ex)[1]),
    ):
        if fo is None:
            continue
        labels = position_labels(pos, boxes=False)
        top = sorted(range(len(labels)), key=lambda i: -abs(float(fo[i])))[:k]
        shown = ", ".join(f"{labels[i]} {float(fo[i]):+.3g}" for i in top if float(fo[i]) != 0)
        rows.append((f"strongest first-order {name}s", shown or "none"))
    return rows
