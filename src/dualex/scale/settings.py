"""Typed job settings: a task's settings dataclass ↔ the JSON object ``Job.settings``.

A task's settings are a frozen dataclass; :func:`to_settings` writes one into the job (and so
into the manifest) and :func:`from_settings` reads it back, for every task, by the same rules:

- a field's JSON key is its name, or ``metadata["job_key"]`` (:func:`job_field`);
- a field with ``metadata["job"] = False`` is not part of the job (the caller passes it back
  to :func:`from_settings` when it has it, e.g. the methods that live in ``Job.methods``);
- ``to_settings(..., omit=...)`` leaves out fields the job does not use (their defaults come
  back on reading);
- JSON lists come back as tuples (a layer pair, a shard), so a setting read from a manifest
  equals the one written in-process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

__all__ = ["from_settings", "job_field", "to_settings"]

T = TypeVar("T")


def job_field(default: Any, *, key: str | None = None, job: bool = True) -> Any:
    """A settings field whose JSON key is ``key`` (default: its name), or that is not part of
    the job at all (``job=False``)."""
    meta: dict[str, Any] = {"job": job}
    if key is not None:
        meta["job_key"] = key
    return dataclasses.field(default=default, metadata=meta)


def _key(f: dataclasses.Field) -> str:
    return str(f.metadata.get("job_key", f.name))


def to_settings(settings: Any, *, omit: Collection[str] = ()) -> dict[str, Any]:
    """The JSON object of a settings dataclass (``Job.settings``), in field order.

    Args:
        settings: A dataclass instance.
        omit: Field names to leave out (settings the job does not use).
    """
    return {
        _key(f): getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if f.metadata.get("job", True) and f.name not in omit
    }


def _typed(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_typed(v) for v in value)
    return value


def from_settings(cls: type[T], settings: Mapping[str, Any], **given: Any) -> T:
    """The settings dataclass ``cls`` of a job's JSON settings (inverse of :func:`to_settings`).

    Keys the class does not know are ignored; missing ones take the field's default.

    Args:
        cls: The settings dataclass.
        settings: ``Job.settings``.
        **given: Fields known from elsewhere (e.g. ``methods=job.methods``).
    """
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            kwargs[f.name] = _typed(given[f.name])
        elif f.metadata.get("job", True) and _key(f) in settings:
            kwargs[f.name] = _typed(settings[_key(f)])
    return cls(**kwargs)
