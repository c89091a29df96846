"""``dualex index``, ``dualex search`` and ``dualex serve`` (registered on the main CLI by
:func:`register`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from dualex.errors import InvalidInputError

__all__ = ["register"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InvalidInputError(
            f"--images {str(folder)!r} is not a folder; pass a folder of images"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidInputError(
            f"--images {str(folder)!r} has no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def _texts(path: Path) -> list[str]:
    if not path.is_file():
        raise InvalidInputError(f"--texts {str(path)!r} is not a file; pass one caption per line")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InvalidInputError(f"--texts {str(path)!r} has no lines")
    return lines


def index_command(
    out: Annotated[Path, typer.Option("--out", help="The index folder (resumes if it exists).")],
    model: Annotated[str, typer.Option(help="Model spec (builtin, hf:PATH, ...).")] = "builtin",
    images: Annotated[
        Path | None, typer.Option(help="A folder of images (hit ids: positions, sorted by name).")
    ] = None,
    texts: Annotated[
        Path | None, typer.Option(help="A file of captions, one per line (image → text search).")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="A dataset spec (synthetic:seed=1,n=16, coco:..., ...).")
    ] = None,
    captions: Annotated[bool, typer.Option(help="Index the captions of --data too.")] = False,
    dtype: Annotated[str, typer.Option(help="Storage of projections: float32 or float16.")] = (
        "float32"
    ),
    layers: Annotated[str | None, typer.Option(help="Split layer(s): L or LA,LB.")] = None,
    steps: Annotated[int | None, typer.Option(help="Quadrature nodes (default adaptive).")] = None,
    shard_size: Annotated[int, typer.Option(help="Fewest samples per shard.")] = 32,
    limit: Annotated[int | None, typer.Option(help="Most samples of --data.")] = None,
    backend: Annotated[str, typer.Option(help="local, ray or ray:ADDRESS.")] = "local",
    workers: Annotated[int, typer.Option(help="Ray actors.")] = 1,
) -> None:
    """Index a gallery: each item's projection is stored once, so every later search explains its
    hits by one matrix product each."""
    from dualex.cli_args import parse_layers
    from dualex.search.index import Index

    if images is None and texts is None and data is None:
        raise InvalidInputError("nothing to index; pass --images DIR, --texts FILE or --data SPEC")
    start = time.perf_counter()
    idx = Index.build(
        model,
        out,
        images=[str(p) for p in _image_files(images)] if images is not None else None,
        texts=_texts(texts) if texts is not None else None,
        data=data,
        captions=captions,
        layers=parse_layers(layers),
        steps=steps,
        dtype=dtype,
        shard_size=shard_size,
        limit=limit,
        backend=backend,
        workers=workers,
        progress=True,
    )
    counts = idx.meta["counts"]
    what = ", ".join(f"{n} {k}s" for k, n in counts.items() if n)
    extra = ""
    if dtype == "float16":
        extra = f"; float16 storage, relative error of P ≤ {idx.meta['float16_error']:.2e}"
    print(f"indexed {what} into {out} in {time.perf_counter() - start:.1f} s{extra}")
    if idx.meta["failed"]:
        print(f"{idx.meta['failed']} items failed (see {out / 'items.parquet'}, column error)")


def _load(index: Path, model: str | None) -> Any:
    from dualex.search.index import Index

    if model is None:
        return Index.load(index)
    from dualex.cli_args import resolve_model
    from dualex.search.index import check_index_folder

    check_index_folder(index)
    return Index.load(index, model=resolve_model(model))


def search_command(
    index: Annotated[Path, typer.Argument(help="The index folder (from `dualex index`).")],
    query: Annotated[str, typer.Argument(help="The query text ('' with --image).")] = "",
    image: Annotated[Path | None, typer.Option(help="A query image (with a text: fused).")] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Number of hits.")] = 10,
    weights: Annotated[
        str | None, typer.Option(help="Weights of a fused query's parts: TEXT,IMAGE.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Search image or text items.")] = None,
    model: Annotated[
        str | None, typer.Option(help="The model (default: the index's own spec).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the HTML report of the hits.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the hits as JSON.")] = None,
) -> None:
    """Search an index: the ranked hits, each with its score and the query words that matched
    most, and where."""
    from dualex.io import atomic_write
    from dualex.search.serve import _parse_weights
    from dualex.towers.inputs import load_image

    if out is not None and out.suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(f"--out {str(out)!r} must be an .html file")
    idx = _load(index, model)
    qimage = load_image(image) if image is not None else None
    hits = idx.search(query, k, image=qimage, weights=_parse_weights(weights), target=target)
    from dualex.data.types import is_generated

    for h in hits:
        label = h.caption if h.kind == "text" else h.path
        if is_generated(label):
            label = "(generated scene)"
        print(f"#{h.rank:<3} id {h.id!s:<8} score {h.score:+.4f}  {label}")
        words = "; ".join(
            f"{w['word']} {w['score']:+.4f} at {w['where']} "
            f"({', '.join(str(round(v)) for v in w['box'])})"
            for w in h.words()
        )
        if words:
            print(f"     {words}")
    if json_out is not None:
        atomic_write(json_out, json.dumps([h.to_json() for h in hits], indent=1) + "\n")
        print(f"wrote {json_out}")
    if out is not None:
        from dualex.search.page import write_page

        write_page(hits, out, query, qimage, model=idx.meta["model"], weights=idx.meta["weights"])
        print(f"wrote {out}")


def serve_command(
    index: Annotated[Path, typer.Argument(help="The index folder (from `dualex index`).")],
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind (default: this machine only).")] = (
        "127.0.0.1"
    ),
    model: Annotated[
        str | None, typer.Option(help="The model (default: the index's own spec).")
    ] = None,
) -> None:
    """Serve a search page for an index: type a query or upload an image, see the hits and
    where each word matched."""
    from dualex.search.serve import serve

    idx = _load(index, model)
    print(
        f"serving {index} ({len(idx)} items) at http://{host}:{port}  (Ctrl+C to stop)", flush=True
    )
    serve(idx, host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add ``index``, ``search`` and ``serve`` to the ``dualex`` app."""
    app.command("index")(index_command)
    app.command("search")(search_command)
    app.command("serve")(serve_command)
