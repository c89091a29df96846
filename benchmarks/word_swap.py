"""Does a model tell a word from its alternatives? Swap it in held-out captions and score.

    python -m benchmarks.word_swap MODEL [MODEL ...] --data SPEC --words pink red \\
        [--alternatives red,green,blue,yellow,purple,orange,pink] [--per-caption 3]

For every caption that contains a word, up to ``--per-caption`` alternatives that the caption
does not already name are swapped in; a swap counts as told apart when the model's cosine
prefers the true caption for the image. Prints a Markdown table (accuracy and number of swaps
per model and word). Used in docs/finetuning.md to ask whether a fine-tuned model learnt a
colour it never saw, beside what the monitor's maps say about the same word.
"""

from __future__ import annotations

import argparse

import torch


def swap_accuracy(
    model, samples, word: str, alternatives: list[str], per_caption: int
) -> tuple[float, int]:
    """``(share of swaps told apart, number of swaps)`` for ``word`` over ``samples``."""
    a, b = model.tower_a, model.tower_b

    def unit(tower, x):
        e = tower.embed(tower.prepare(x))
        return e / e.norm()

    told = n = 0
    with torch.no_grad():
        for s in samples:
            padded = f" {s.caption} "
            if f" {word} " not in padded:
                continue
            others = [c for c in alternatives if c != word and f" {c} " not in padded]
            image = unit(b, s.image)
            true = float(unit(a, s.caption) @ image)
            for alt in others[:per_caption]:
                swapped = padded.replace(f" {word} ", f" {alt} ").strip()
                told += true > float(unit(a, swapped) @ image)
                n += 1
    return (told / n if n else float("nan")), n


def main() -> None:
    import dualex
    from dualex.data.sources import parse_data_spec

    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--words", nargs="+", required=True)
    ap.add_argument("--alternatives", default="red,green,blue,yellow,purple,orange,pink")
    ap.add_argument("--per-caption", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    samples = list(parse_data_spec(args.data).samples())
    alternatives = args.alternatives.split(",")
    print("| model | " + " | ".join(args.words) + " |")
    print("|---|" + "---|" * len(args.words))
    for spec in args.models:
        model = dualex.load(spec)
        cells = []
        for word in args.words:
            acc, n = swap_accuracy(model, samples, word, alternatives, args.per_caption)
            cells.append(f"{acc:.3f} ({n})")
        print(f"| {spec} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
