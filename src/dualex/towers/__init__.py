"""Model families: one module each, declared as data in :mod:`dualex.towers.registry`.

``base`` (the Tower abstraction and the DualEncoder), ``session`` (what dualex changes on a model
while it explains, and restores), ``registry`` (the :class:`Family` record: spec forms,
``can_wrap``/``wrap``, loading, where the blocks are, vision access, the training adapter, where
weights come from, what it requires), ``trainable`` (the training adapter's interface),
``access`` (attention access to ViT image towers), ``clip_common`` (CLIP-family parts shared by
open_clip, OpenAI clip and ALIGN), ``inputs`` and ``positions`` (input handling and position
metadata), and the family modules ``hf``, ``hf_align``, ``openclip``, ``openai_clip``,
``sentence_transformers``, ``builtin``, ``random_clip``, plus ``custom`` (towers from callables).

A new family is one module that builds a :class:`Family` and passes it to
:func:`register_family`.
"""

from dualex.towers.registry import Family, TowerDescription, register_family

__all__ = ["Family", "TowerDescription", "register_family"]
