"""The model-family registry: how ``dualex.load`` and ``dualex.wrap`` find a family.

Each family module in ``dualex.towers`` declares one :class:`Family` as ``FAMILY``: everything
family-specific in one record -- its spec forms for :func:`dualex.load`, ``can_wrap(obj)`` and
``wrap(obj, parts)`` for :func:`dualex.wrap`, where its towers' blocks are
(:class:`TowerDescription`), its attention access, its training adapter, where a spec's weights
come from and what it requires. Every :class:`~dualex.towers.base.DualEncoder` a family makes
carries it (``DualEncoder.family``), so no caller rediscovers it. A family outside dualex (one
file of yours) joins with :func:`register_family`.

The registry imports dualex's own family modules by name when first asked, so nothing here
imports a family (and no family imports this registry's callers): the package has no import
cycle.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dualex.errors import UnknownModelError

__all__ = [
    "FAMILY_MODULES",
    "Family",
    "Parts",
    "TowerDescription",
    "families",
    "family_of",
    "register",
    "register_family",
    "resolve",
]


@dataclass(frozen=True)
class TowerDescription:
    """Where a tower's blocks are: what the family's code reads to split a tower at a layer.

    Everything else about a tower (its layout, pooling, special positions, grid) is the tower
    class's behaviour, written once in its family module.

    Attributes:
        blocks: Attribute path from the model object to its list of blocks (layer ``L`` is the
            input of block ``L``), e.g. ``"text_model.encoder.layers"``.
    """

    blocks: str


@dataclass(frozen=True)
class Parts:
    """What :func:`dualex.wrap` was given beside the model object, read the same way for every
    family.

    Attributes:
        processor: A transformers processor, or (open_clip, OpenAI clip) the image transform.
        tokenizer: The tokenizer, when given apart.
        image_processor: The image processor, when given apart.
        preprocess: The image transform (open_clip / OpenAI clip).
    """

    processor: Any = None
    tokenizer: Any = None
    image_processor: Any = None
    preprocess: Any = None

    def text(self) -> Any:
        """The tokenizer: the one given, else the processor's."""
        return self.tokenizer or getattr(self.processor, "tokenizer", None)

    def image(self) -> Any:
        """The transformers image processor: the one given, else the processor's."""
        return self.image_processor or getattr(self.processor, "image_processor", None)

    def transform(self) -> Any:
        """The image transform (open_clip / OpenAI clip): ``preprocess``, else ``processor``,
        else ``image_processor``."""
        if self.preprocess is not None:
            return self.preprocess
        return self.processor or self.image_processor


@dataclass(frozen=True)
class Family:
    """A model family dualex can load by spec and wrap as an object.

    Attributes:
        name: Short name (``"hf"``, ``"openclip"``, ...).
        summary: One line on what the family covers.
        prefixes: Spec prefixes this family loads (``"hf"`` for ``"hf:<id-or-path>"``); a spec
            without a colon (``"builtin"``, ``"builtin-clip"``) is matched whole, and its loader
            is given that name as the rest of the spec.
        spec_forms: The spec forms shown to users, with a note each.
        can_wrap: ``obj -> bool``: whether :func:`dualex.wrap` should hand ``obj`` to this family.
            Must not import heavy packages (check type names and modules).
        wrap: ``(obj, parts, *, name=None, **kwargs) -> DualEncoder``, ``parts`` the
            :class:`Parts` given beside the object; called through :meth:`adopt`.
        load: ``(rest_of_spec, **kwargs) -> DualEncoder`` or ``None`` if the family has no spec.
        towers: Where the blocks of each tower variant are (``"text"``, ``"image-vit"``...).
        requires: The distributions (pip names) the family needs: ``dualex models`` reports the
            family available when all are installed.
        install: How to install what ``requires`` names (``"pip install 'dualex[openclip]'"``).
        vision_access: ``DualEncoder -> VisionAccess`` opening the family's ViT image tower up
            for attention-based methods (:mod:`dualex.towers.access`; it raises
            ``VisionAccessError`` for towers it cannot open, e.g. CNNs), or ``None``.
        modalities: What towers a and b take: ``("text", "image")``, or ``("text", "text")``
            for a text–text family (known from the spec, before loading).
        vision_towers: The image towers :attr:`vision_access` opens, for messages (``"HF CLIP,
            SigLIP, SigLIP-2"``).
        weights_of: ``rest_of_spec -> str``: where the weights of a spec come from
            (``"pretrained"``, ``"random"``, ``"builtin"``), without loading it.
        status: ``spec_form -> str``: what ``dualex models`` says of a form, when more than
            whether :attr:`requires` is installed (e.g. which built-in weights are present).
        trainable: ``(encoder, module, name) -> Trainable``: the family's training adapter
            (:class:`dualex.towers.trainable.Trainable`) over ``module`` (the encoder's module or
            a private copy of it), or ``None`` if the family cannot be fine-tuned.
    """

    name: str
    summary: str
    prefixes: tuple[str, ...] = ()
    spec_forms: dict[str, str] = field(default_factory=dict)
    can_wrap: Callable[[Any], bool] = lambda obj: False
    wrap: Callable[..., Any] | None = None
    load: Callable[..., Any] | None = None
    towers: dict[str, TowerDescription] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    vision_access: Callable[[Any], Any] | None = None
    modalities: tuple[str, str] = ("text", "image")
    vision_towers: str = ""
    install: str = ""
    weights_of: Callable[[str], str] = lambda rest: "pretrained"
    status: Callable[[str], str] | None = None
    trainable: Callable[[Any, Any, str], Any] | None = None

    def missing(self) -> list[str]:
        """The distributions in :attr:`requires` that are not installed."""
        from importlib.metadata import PackageNotFoundError, distribution

        out = []
        for name in self.requires:
            try:
                distribution(name)
            except PackageNotFoundError:
                out.append(name)
        return out

    def status_of(self, form: str) -> str:
        """What ``dualex models`` says of one of :attr:`spec_forms`: ``"available"``, or what
        is missing and how to install it (or the family's own :attr:`status`)."""
        missing = self.missing()
        if missing:
            how = f" ({self.install})" if self.install else ""
            return f"not available: needs {', '.join(missing)}{how}"
        return self.status(form) if self.status is not None else "available"

    def open(self, rest: str, **kwargs: Any) -> Any:
        """Load the spec whose part after this family's prefix is ``rest``; the result carries
        this family (``DualEncoder.family``) unless its loader set a more specific one.

        Raises:
            UnknownModelError: if the family loads no specs.
        """
        if self.load is None:
            raise UnknownModelError(f"the {self.name} family loads no spec strings")
        return _stamp(self.load(rest, **kwargs), self)

    def adopt(
        self,
        obj: Any,
        processor: Any = None,
        *,
        tokenizer: Any = None,
        image_processor: Any = None,
        preprocess: Any = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Wrap ``obj`` with the pieces :func:`dualex.wrap` takes; the result carries this
        family.

        Raises:
            UnknownModelError: if the family wraps no objects.
        """
        if self.wrap is None:
            raise UnknownModelError(f"the {self.name} family wraps no model objects")
        parts = Parts(processor, tokenizer, image_processor, preprocess)
        return _stamp(self.wrap(obj, parts, name=name, **kwargs), self)


def _stamp(encoder: Any, family: Family) -> Any:
    if getattr(encoder, "family", None) is None:
        encoder.family = family
    return encoder


FAMILY_MODULES = (
    "dualex.towers.builtin",
    "dualex.towers.hf",
    "dualex.towers.hf_align",
    "dualex.towers.openclip",
    "dualex.towers.openai_clip",
    "dualex.towers.sentence_transformers",
    "dualex.towers.random_clip",
)
"""The modules that declare dualex's own families (each has a module-level ``FAMILY``)."""

_LOCK = threading.Lock()
_REGISTERED: list[Family] = []
_LOADED = False


def register(family: Family) -> Family:
    """Add a family (a third-party one, or one of dualex's own) to the registry.

    A family registered under a name already taken replaces the earlier one (re-running a
    notebook cell, or a test planting its own family, registers it again).
    """
    with _LOCK:
        _REGISTERED[:] = [f for f in _REGISTERED if f.name != family.name] + [family]
    return family


register_family = register
"""The public name of :func:`register` (``dualex.towers.register_family``)."""


def families() -> list[Family]:
    """Every registered family, dualex's own first."""
    global _LOADED
    if not _LOADED:
        own = [importlib.import_module(m).FAMILY for m in FAMILY_MODULES]
        with _LOCK:
            names = {f.name for f in own}
            extra = [f for f in _REGISTERED if f.name not in names]
            _REGISTERED[:] = [*own, *extra]
            _LOADED = True
    return list(_REGISTERED)


def spec_forms() -> dict[str, str]:
    """Every spec form of every family, with a note each."""
    out: dict[str, str] = {}
    for f in families():
        out.update(f.spec_forms)
    return out


def for_spec(spec: str) -> tuple[Family, str]:
    """The family that loads ``spec`` and the rest of the spec after its prefix (for a spec
    matched whole, such as ``"builtin-clip"``, the matched name).

    Raises:
        UnknownModelError: naming the forms that exist.
    """
    text = spec.strip() if isinstance(spec, str) else ""
    kind, colon, rest = text.partition(":")
    kind = kind.strip().lower()
    for f in families():
        if f.load is None:
            continue
        for prefix in f.prefixes:
            if not colon and kind == prefix and ":" not in prefix and not rest:
                return f, prefix
            if colon and kind == prefix and rest.strip():
                return f, rest.strip()
    forms = "; ".join(f"{k} ({v})" for k, v in spec_forms().items())
    raise UnknownModelError(f"unknown model spec {spec!r}; use one of: {forms}")


def for_object(obj: Any) -> Family:
    """The family that wraps ``obj``.

    Raises:
        UnknownModelError: listing what can be wrapped.
    """
    for f in families():
        if f.wrap is not None and f.can_wrap(obj):
            return f
    kinds = "; ".join(f"{f.name}: {f.summary}" for f in families() if f.wrap is not None)
    raise UnknownModelError(
        f"dualex cannot wrap a {type(obj).__module__}.{type(obj).__name__}; it wraps {kinds}; "
        "or build a DualEncoder from two dualex towers (dualex.towers.custom.CustomTower)"
    )


def modalities_of(spec: str) -> tuple[str, str] | None:
    """What the towers of a spec's model take (``("text", "image")``...), from its family,
    before loading it; ``None`` for a spec no family loads."""
    try:
        return for_spec(spec)[0].modalities
    except UnknownModelError:
        return None


def image_families() -> list[str]:
    """Names of the registered families whose second tower takes images."""
    return [f.name for f in families() if f.modalities[1] == "image"]


def image_families_text() -> str:
    """The image–text families for messages: ``"builtin, hf, ..., custom image towers"``."""
    return ", ".join([*image_families(), "custom image towers"])


def family_of(model: Any) -> Family | None:
    """The family of a :class:`~dualex.towers.base.DualEncoder`: the one it carries, else the
    family that wraps its module (for an encoder built by a family's own ``wrap_*`` function),
    else ``None`` (custom towers)."""
    family = getattr(model, "family", None)
    if family is not None:
        return family
    module = getattr(model, "module", None)
    if module is None:
        return None
    try:
        return for_object(module)
    except UnknownModelError:
        return None


def deferred(module: str, name: str) -> Callable[..., Any]:
    """``module.name`` as a function that imports ``module`` on its first call (a family hook
    that borrows another family's code without importing it at registration)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{module}.{name}``, imported when first called."
    return call


def resolve(obj: Any, path: str) -> Any:
    """Follow a dotted attribute path (``"text_model.encoder.layers"``) from ``obj``."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def type_is(obj: Any, module_prefix: str, *names: str) -> bool:
    """Whether ``obj``'s class (or a base class) comes from ``module_prefix`` (and has one of
    ``names``, if given), without importing that package."""
    for cls in type(obj).__mro__:
        if cls.__module__.startswith(module_prefix) and (not names or cls.__name__ in names):
            return True
    return False
