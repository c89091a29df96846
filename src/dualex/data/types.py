"""The sample type every dataset loader yields.

A sample is an image, a caption, and the caption's grounded *mentions*: character spans of the
caption that name something, each with the boxes (``(x0, y0, x1, y1)`` in original image pixels,
exclusive right/bottom edges) where that thing is and a class label. Hard negatives are captions that
differ from the true one in one marked span.

Loaders index a dataset without decoding it: a sample's image is an :class:`ImageRef` (a file path,
or the recipe of a synthetic scene) that is decoded the first time ``sample.image`` is read, so a
shard of a dataset run decodes only its own images, in the worker that runs it.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from dualex.errors import InvalidInputError
from dualex.towers.positions import Box  # defined with the geometry it indexes

SYNTHETIC_SCHEME = "synthetic:"
"""Prefix of an :class:`ImageRef` path that names a synthetic scene (JSON recipe follows)."""


RENDERERS = {SYNTHETIC_SCHEME: "dualex.data.synthetic", "grid:": "dualex.data.grid"}
"""Reference schemes of generated images and the module whose ``render_reference(recipe)``
renders one (looked up by name: the generator imports this module, not the other way round)."""


def is_generated(path: str) -> bool:
    """Whether an image path is the recipe of a generated image (a :data:`RENDERERS` scheme),
    not a file."""
    return path.startswith(tuple(RENDERERS))


class ImageRef:
    """A lazy reference to one image: decoded by :meth:`open`, not when it is created.

    ``path`` is a file path, or ``"synthetic:" + JSON`` naming a scene of the synthetic world
    (``seed``, ``index``, ``domain``, ``image_size``, ``options``), which :meth:`open` renders
    again. References compare and hash by ``path``; the decoded image is cached on the object
    (never serialised), so captions that share one reference decode their image once.

    Args:
        path: The file path or synthetic recipe.
        image: An already decoded image to cache (e.g. a scene that was rendered while indexing).
        hint: What to tell the user when the file cannot be read (appended to the error).
    """

    __slots__ = ("_image", "hint", "path")

    def __init__(self, path: str, image: Image.Image | None = None, hint: str = "") -> None:
        self.path = str(path)
        self.hint = hint
        self._image = image

    @classmethod
    def synthetic(
        cls,
        seed: int,
        index: int,
        domain: str,
        image_size: int,
        options: dict[str, Any] | None = None,
        image: Image.Image | None = None,
    ) -> ImageRef:
        """The reference of scene ``index`` of a synthetic world (see :mod:`dualex.data.synthetic`)."""
        recipe = {
            "seed": int(seed),
            "index": int(index),
            "domain": str(domain),
            "image_size": int(image_size),
            "options": options or {},
        }
        return cls(SYNTHETIC_SCHEME + json.dumps(recipe, sort_keys=True), image=image)

    @property
    def loaded(self) -> bool:
        """Whether the image is decoded (cached) already."""
        return self._image is not None

    def open(self) -> Image.Image:
        """The decoded RGB image (cached after the first call).

        Raises:
            InvalidInputError: if the file cannot be read as an image.
        """
        if self._image is None:
            self._image = self._decode()
        return self._image

    def release(self) -> None:
        """Drop the cached image (it is decoded again on the next :meth:`open`)."""
        self._image = None

    def _decode(self) -> Image.Image:
        for scheme, module in RENDERERS.items():
            if self.path.startswith(scheme):  # a generated image: its module renders it again
                render = importlib.import_module(module).render_reference
                return render(json.loads(self.path[len(scheme) :]))
        from dualex.towers.inputs import load_image

        try:  # the one image policy; boxes are in the stored pixel layout: no EXIF rotation
            return load_image(self.path, exif=False)
        except InvalidInputError as err:
            hint = f"; {self.hint}" if self.hint else "; check the dataset's image folder"
            raise InvalidInputError(f"cannot read image {self.path!r} ({err}){hint}") from err

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageRef) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"ImageRef({self.path!r}{', loaded' if self.loaded else ''})"


@dataclass(frozen=True)
class Mention:
    """A caption span that refers to image regions.

    Attributes:
        span: ``(start, end)`` character offsets into the caption (``caption[start:end]``).
        boxes: Ground-truth boxes of the referred object(s), ``(x0, y0, x1, y1)`` pixels.
        label: Class label (e.g. ``"circle"`` or a COCO category name).
    """

    span: tuple[int, int]
    boxes: tuple[Box, ...]
    label: str


@dataclass(frozen=True)
class Negative:
    """A hard-negative caption that differs from the true caption in one span.

    Attributes:
        caption: The negative caption text.
        kind: What was changed (``"colour"``, ``"shape"``, ``"relation"``, ``"absent"``, or a
            dataset's own label).
        span: ``(start, end)`` of the mismatched words in ``caption``.
        original_span: ``(start, end)`` of the words they replaced in the true caption.
    """

    caption: str
    kind: str
    span: tuple[int, int]
    original_span: tuple[int, int] | None = None


class _LazyImage:
    """Descriptor of :attr:`Sample.image`: stores an image or an :class:`ImageRef`, and reads as
    the decoded image (decoding a reference on first access)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return None  # dataclass default: an image must be passed
        value = obj.__dict__[self._slot]
        return value.open() if isinstance(value, ImageRef) else value

    def __set__(self, obj: Any, value: Any) -> None:
        if value is None or isinstance(value, _LazyImage):
            raise TypeError("Sample needs an image (a PIL image or an ImageRef)")
        obj.__dict__[self._slot] = value


@dataclass
class Sample:
    """One image with one caption and its grounded mentions.

    The image may be given decoded or as an :class:`ImageRef`; reading ``sample.image`` always
    gives the decoded image, and :attr:`image_ref` the reference without decoding it.

    Attributes:
        image: The original image (RGB); an :class:`ImageRef` is decoded on first access.
        caption: The caption text.
        mentions: Grounded spans of the caption.
        negatives: Hard negatives of the caption (may be empty).
        image_id: Identifier of the image within its dataset.
        caption_id: Identifier of the caption within its dataset.
        meta: Free-form extra information (domain, split, ...), JSON-serialisable.
    """

    image: Image.Image = field(default=_LazyImage(), repr=False)  # type: ignore[assignment]
    caption: str = ""
    mentions: list[Mention] = field(default_factory=list)
    negatives: list[Negative] = field(default_factory=list)
    image_id: str = ""
    caption_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def image_ref(self) -> ImageRef | None:
        """The lazy reference of the image (``None`` when the sample holds a decoded image)."""
        value = self.__dict__["_image"]
        return value if isinstance(value, ImageRef) else None

    @property
    def image_path(self) -> str:
        """Where the image comes from: its reference's path, or ``""`` for an in-memory image."""
        ref = self.image_ref
        return ref.path if ref is not None else ""
