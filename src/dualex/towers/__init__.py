"""Model families: one module each, declared as data in :mod:`dualex.towers.registry`.

``base`` (the Tower abstraction), ``session`` (what dualex changes on a model while it explains,
and restores), ``registry`` (spec prefixes, ``can_wrap``/``wrap``, tower descriptions),
``clip_common`` (CLIP-family parts shared by open_clip, OpenAI clip and ALIGN), ``inputs`` and
``positions`` (input handling and position metadata), and the family modules ``hf``,
``hf_align``, ``openclip``, ``openai_clip``, ``sentence_transformers``, ``builtin``, ``custom``.
"""
