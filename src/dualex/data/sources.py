"""Dataset specs of the command line (``--data``) → samples.

Specs:
    ``coco:IMAGES,ANN_DIR``            COCO images folder and the folder with one split's
                                       ``captions_*.json`` + ``instances_*.json``.
    ``flickr30k:ROOT[,SPLIT]``         Flickr30k Entities (``SPLIT`` = train / val / test).
    ``hnc:JSON,IMAGES``                HNC JSON file and the images folder.
    ``synthetic:seed=S,n=N,domain=D``  the synthetic world (optional ``image_size=64``,
                                       ``start=0`` and any integer/float ``WorldConfig`` field).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dualex.data.types import Sample
from dualex.errors import SettingError

__all__ = ["DataSource", "parse_data_spec"]

KINDS = ("coco", "flickr30k", "hnc", "synthetic")


@dataclass(frozen=True)
class DataSource:
    """A parsed ``--data`` spec.

    Attributes:
        kind: One of :data:`KINDS`.
        args: Positional parts (paths).
        options: ``key=value`` parts.
        spec: The original spec string.
    """

    kind: str
    args: tuple[str, ...]
    options: dict[str, Any]
    spec: str

    def samples(self) -> Iterator[Sample]:
        """Iterate the samples (lazily, in a fixed order)."""
        if self.kind == "coco":
            from dualex.data.coco import find_annotation_files, load_coco

            caps, inst = find_annotation_files(self.args[1])
            return load_coco(self.args[0], caps, inst)
        if self.kind == "flickr30k":
            from dualex.data.flickr30k import load_flickr30k

            return load_flickr30k(self.args[0], self.args[1] if len(self.args) > 1 else None)
        if self.kind == "hnc":
            from dualex.data.hnc import load_hnc

            return load_hnc(self.args[0], self.args[1])
        from dualex.data.synthetic import iter_samples

        opts = dict(self.options)
        n = int(opts.pop("n", 100))
        seed = int(opts.pop("seed", 0))
        domain = str(opts.pop("domain", "plain"))
        try:
            return iter_samples(n, seed, domain, **opts)
        except (TypeError, ValueError) as err:
            raise SettingError(f"bad synthetic option in {self.spec!r}: {err}") from err


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_data_spec(spec: str) -> DataSource:
    """Parse a ``--data`` spec (see the module docstring).

    Raises:
        SettingError: on an unknown kind or a wrong number of parts.
    """
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    usage = (
        "use coco:IMAGES,ANN_DIR | flickr30k:ROOT[,SPLIT] | hnc:JSON,IMAGES | "
        "synthetic:seed=S,n=N,domain=D"
    )
    if kind not in KINDS or (not sep and kind != "synthetic"):
        raise SettingError(f"cannot read --data {spec!r}; {usage}")
    parts = [p.strip() for p in rest.split(",") if p.strip()] if rest else []
    if kind == "synthetic":
        options: dict[str, Any] = {}
        for p in parts:
            key, eq, val = p.partition("=")
            if not eq:
                raise SettingError(f"cannot read {p!r} in --data {spec!r}; pass key=value pairs")
            options[key.strip()] = _value(val.strip())
        return DataSource(kind, (), options, spec)
    need = {"coco": (2,), "flickr30k": (1, 2), "hnc": (2,)}[kind]
    if len(parts) not in need:
        raise SettingError(f"--data {spec!r} has {len(parts)} path(s); {usage}")
    return DataSource(kind, tuple(parts), {}, spec)
