"""Dataset specs of the command line (``--data``) → samples.

Specs:
    ``coco:IMAGES,ANN_DIR``            COCO images folder and the folder with one split's
                                       ``captions_*.json`` + ``instances_*.json``.
    ``flickr30k:ROOT[,SPLIT]``         Flickr30k Entities (``SPLIT`` = train / val / test).
    ``hnc:JSON,IMAGES``                HNC JSON file and the images folder.
    ``synthetic:seed=S,n=N,domain=D``  the synthetic world (optional ``image_size=64``,
                                       ``start=0`` and any ``WorldConfig`` field; lists are
                                       joined by ``+``: ``shapes=circle+star``).
    ``synthetic-grid:seed=S,n=N[,domain=D,tile=64,fill=all]``
                                       2×2 grids of one-object synthetic scenes (FIxLIP's
                                       pointing game; :mod:`dualex.data.grid`).
    ``grid:FOLDER[,n=N,seed=S,tile=224]``
                                       2×2 grids of a folder with one sub-folder of images per
                                       class (ImageNet layout).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualex.data.types import Sample
from dualex.errors import SettingError

__all__ = ["DataSource", "parse_data_spec"]

KINDS = ("coco", "flickr30k", "hnc", "synthetic", "synthetic-grid", "grid")


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

    def check(self) -> DataSource:
        """Check every part of the spec now (paths exist, options are valid), before any output
        is written; :meth:`samples` would otherwise fail only when iterated.

        Returns:
            ``self``.

        Raises:
            SettingError: on a bad synthetic option (unknown key, wrong type, out of range).
            FileFormatError: on a missing dataset folder or file.
        """
        from dualex.errors import FileFormatError

        if self.kind == "synthetic":
            _synthetic_args(self.options, self.spec)
            return self
        if self.kind in ("synthetic-grid", "grid"):
            _grid_args(self.kind, self.options, self.spec)
            if self.kind == "grid":
                from dualex.data.grid import folder_classes

                folder_classes(self.args[0])
            return self

        def need(path: str, what: str, folder: bool) -> None:
            p = Path(path)
            ok = p.is_dir() if folder else p.is_file()
            if not ok:
                kind = "folder" if folder else "file"
                state = "is not a " + kind if p.exists() else "does not exist"
                raise FileFormatError(
                    f"the {what} {path!r} in --data {self.spec!r} {state}; pass the {what} {kind}"
                )

        if self.kind == "coco":
            from dualex.data.coco import find_annotation_files

            need(self.args[0], "COCO images", folder=True)
            find_annotation_files(self.args[1])
        elif self.kind == "flickr30k":
            root = Path(self.args[0])
            need(self.args[0], "Flickr30k Entities root", folder=True)
            for sub in ("Sentences", "Annotations"):
                need(str(root / sub), f"Flickr30k {sub}", folder=True)
            if len(self.args) > 1:
                need(str(root / f"{self.args[1]}.txt"), "Flickr30k split", folder=False)
        elif self.kind == "hnc":
            need(self.args[0], "HNC JSON", folder=False)
            need(self.args[1], "HNC images", folder=True)
        return self

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
        if self.kind == "synthetic-grid":
            from dualex.data.grid import iter_synthetic_grids

            return iter_synthetic_grids(**_grid_args(self.kind, self.options, self.spec))
        if self.kind == "grid":
            from dualex.data.grid import iter_folder_grids

            return iter_folder_grids(self.args[0], **_grid_args(self.kind, self.options, self.spec))
        from dualex.data.synthetic import iter_samples

        n, seed, domain, opts = _synthetic_args(self.options, self.spec)
        return iter_samples(n, seed, domain, **opts)

    @property
    def total(self) -> int | None:
        """Number of samples, when known without reading the data (synthetic: ``n`` × captions
        per image)."""
        if self.kind in ("synthetic-grid", "grid"):
            return int(_grid_args(self.kind, self.options, self.spec)["n"])
        if self.kind != "synthetic":
            return None
        n, _, _, opts = _synthetic_args(self.options, self.spec)
        return n * int(opts.get("captions_per_image", 1))


_INT_OPTIONS = ("n", "seed", "image_size", "start")


def _synthetic_args(options: dict[str, Any], spec: str) -> tuple[int, int, str, dict[str, Any]]:
    """``(n, seed, domain, world options)`` of a synthetic spec, all checked.

    Raises:
        SettingError: naming the option and what it accepts.
    """
    import dataclasses

    from dualex.data.synthetic import DOMAINS, WorldConfig, _make_config

    opts = dict(options)
    for key in _INT_OPTIONS:
        if key in opts and (isinstance(opts[key], bool) or not isinstance(opts[key], int)):
            raise SettingError(
                f"{key}={opts[key]!r} in --data {spec!r} is not an integer; pass e.g. {key}=10"
            )
    n = opts.pop("n", 100)
    seed = opts.pop("seed", 0)
    domain = str(opts.pop("domain", "plain"))
    if n < 1:
        raise SettingError(f"n={n} in --data {spec!r}: pass a positive number of images")
    if opts.get("start", 0) < 0:
        raise SettingError(f"start={opts['start']} in --data {spec!r}: pass start >= 0")
    if opts.get("image_size", 64) < 32:
        raise SettingError(f"image_size={opts['image_size']} in --data {spec!r}: pass >= 32")
    if domain not in (*DOMAINS, "mixed"):
        raise SettingError(
            f"domain={domain!r} in --data {spec!r} is unknown; choose from "
            f"{', '.join((*DOMAINS, 'mixed'))}"
        )
    for key in ("shapes", "colours", "negative_kinds", "clutter"):
        if isinstance(opts.get(key), str | int):  # lists are written with "+": shapes=circle+star
            parts = str(opts[key]).split("+")
            opts[key] = tuple(_value(p) for p in parts) if key == "clutter" else tuple(parts)
    world = {k: v for k, v in opts.items() if k not in ("image_size", "start")}
    known = {f.name for f in dataclasses.fields(WorldConfig)}
    bad = sorted(set(world) - known)
    if bad:
        raise SettingError(
            f"unknown option(s) {', '.join(bad)} in --data {spec!r}; use n, seed, domain, "
            f"image_size, start or a world option ({', '.join(sorted(known))})"
        )
    try:
        _make_config(None, dict(world))
    except (TypeError, ValueError) as err:
        raise SettingError(f"bad synthetic option in --data {spec!r}: {err}") from err
    return n, seed, domain, opts


def _grid_args(kind: str, options: dict[str, Any], spec: str) -> dict[str, Any]:
    """Keyword arguments of a grid source's iterator, all checked.

    Raises:
        SettingError: naming the option and what it accepts.
    """
    from dualex.data.synthetic import DOMAINS

    allowed = {"n", "seed", "tile", "start"} | (
        {"domain", "fill"} if kind == "synthetic-grid" else set()
    )
    bad = sorted(set(options) - allowed)
    if bad:
        raise SettingError(
            f"unknown option(s) {', '.join(bad)} in --data {spec!r}; use {', '.join(sorted(allowed))}"
        )
    out: dict[str, Any] = {"n": 100, "seed": 0, "tile": 64 if kind == "synthetic-grid" else 224}
    for key in ("n", "seed", "tile", "start"):
        if key in options:
            v = options[key]
            if isinstance(v, bool) or not isinstance(v, int):
                raise SettingError(
                    f"{key}={v!r} in --data {spec!r} is not an integer; pass e.g. {key}=10"
                )
            out[key] = v
    if out["n"] < 1:
        raise SettingError(f"n={out['n']} in --data {spec!r}: pass a positive number of grids")
    if out["tile"] < 16:
        raise SettingError(f"tile={out['tile']} in --data {spec!r}: pass a tile of >= 16 pixels")
    if out.get("start", 0) < 0:
        raise SettingError(f"start={out['start']} in --data {spec!r}: pass start >= 0")
    if kind == "synthetic-grid":
        domain = str(options.get("domain", "plain"))
        if domain not in (*DOMAINS, "mixed"):
            raise SettingError(
                f"domain={domain!r} in --data {spec!r} is unknown; choose from "
                f"{', '.join((*DOMAINS, 'mixed'))}"
            )
        out["domain"] = domain
        from dualex.data.grid import FILLS

        fill = str(options.get("fill", "named"))
        if fill not in FILLS:
            raise SettingError(
                f"fill={fill!r} in --data {spec!r} is unknown; choose from {', '.join(FILLS)}"
            )
        out["fill"] = fill
    return out


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _key_values(parts: list[str], spec: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for p in parts:
        key, eq, val = p.partition("=")
        if not eq:
            raise SettingError(f"cannot read {p!r} in --data {spec!r}; pass key=value pairs")
        options[key.strip()] = _value(val.strip())
    return options


def parse_data_spec(spec: str) -> DataSource:
    """Parse a ``--data`` spec (see the module docstring).

    Raises:
        SettingError: on an unknown kind or a wrong number of parts.
    """
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    usage = (
        "use coco:IMAGES,ANN_DIR | flickr30k:ROOT[,SPLIT] | hnc:JSON,IMAGES | "
        "synthetic:seed=S,n=N,domain=D | synthetic-grid:seed=S,n=N | grid:FOLDER[,n=N]"
    )
    if kind not in KINDS or (not sep and kind not in ("synthetic", "synthetic-grid")):
        raise SettingError(f"cannot read --data {spec!r}; {usage}")
    parts = [p.strip() for p in rest.split(",") if p.strip()] if rest else []
    if kind == "grid":
        if not parts or "=" in parts[0]:
            raise SettingError(f"--data {spec!r} names no folder; {usage}")
        return DataSource(kind, (parts[0],), _key_values(parts[1:], spec), spec)
    if kind in ("synthetic", "synthetic-grid"):
        return DataSource(kind, (), _key_values(parts, spec), spec)
    need = {"coco": (2,), "flickr30k": (1, 2), "hnc": (2,)}[kind]
    if len(parts) not in need:
        raise SettingError(f"--data {spec!r} has {len(parts)} path(s); {usage}")
    return DataSource(kind, tuple(parts), {}, spec)
