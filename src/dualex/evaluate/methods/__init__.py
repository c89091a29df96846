"""Evaluation methods, one file each, all behind the interface of :mod:`.base`.

=============  =====  ==============================================================  ==========
name           order  method                                                          families
=============  =====  ==============================================================  ==========
``dualex``     2      dualex's interactions of the whole caption, phrases sliced       every
``dualex-span`` 2     dualex with each phrase as the whole text                        every
``banzhaf``    2      sampled cross-modal weighted Banzhaf interactions (FIxLIP-like)  image–text
``banzhaf-sign`` 2    banzhaf with the sign-weighted Monte-Carlo estimator             image–text
``ig``         1      Integrated Gradients on pixels, target cosine                    every image
``gae``        1      Chefer et al. 2021 generic attention explainability             ViT
``maskclip``   1      MaskCLIP (value path of the last block)                          ViT
``gradeclip``  1      Grad-ECLIP (last block, pooled query)                            ViT
``surgery``    1      CLIP Surgery (v–v attention in the last blocks)                  ViT
``legrad``     1      LeGrad (gradients of per-layer scores w.r.t. attention)          ViT
``random``     1      uniform noise: the floor                                         every image
=============  =====  ==============================================================  ==========

Each module defines ``METHOD`` (a :class:`~dualex.evaluate.methods.base.Method`); modules are
imported on first use, so listing the methods imports no model code.
"""

from __future__ import annotations

import importlib

from dualex.errors import SettingError
from dualex.evaluate.methods.base import Attribution, Method, UnsupportedMethodError

__all__ = ["METHODS", "Attribution", "Method", "UnsupportedMethodError", "get"]

METHODS: dict[str, str] = {
    "dualex": "dualex_method",
    "dualex-span": "dualex_method",
    "banzhaf": "banzhaf",
    "banzhaf-sign": "banzhaf",
    "ig": "ig",
    "gae": "gae",
    "maskclip": "maskclip",
    "gradeclip": "gradeclip",
    "surgery": "surgery",
    "legrad": "legrad",
    "random": "random_map",
}
"""``--methods`` name → module of this package that defines it."""


def get(name: str) -> Method:
    """The :class:`Method` called ``name``.

    Raises:
        SettingError: for an unknown name (the message lists the known ones).
    """
    if name not in METHODS:
        raise SettingError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    module = importlib.import_module(f"{__name__}.{METHODS[name]}")
    found = getattr(module, "METHODS", None)
    if isinstance(found, dict):
        return found[name]
    return module.METHOD
