"""``facestream search --photo P [--photo P2 ...] --index DIR... [--top N] [--json]``: where does this person
appear across analysed archives, best first.

The photos are embedded with the index's own embedder (a different one gives incomparable scores, so a
mismatch is refused) and averaged into one unit query, as the gallery averages a person's photos. What is
shown is decided by the same-person threshold the analysis matched at (stored in the index), or that of
``--gallery G``; ``--top`` only caps the list.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from daemon.cli.common import model_opts, settings_from
from daemon.cli.printing import CliError, print_result


def _indexes(dirs: list[str]) -> list[Any]:
    from pipeline.face_index import FaceIndex

    indexes = [FaceIndex.open(Path(d).expanduser()) for d in dirs]
    models = {ix.meta.model_id for ix in indexes}
    if len(models) > 1:
        got = ", ".join(f"{ix.folder} {ix.meta.model_id}" for ix in indexes)
        raise CliError(f"the indexes were made with different embedders ({got}): search them separately")
    return indexes


def _threshold(args: argparse.Namespace, settings: Any, indexes: list[Any], model_id: str) -> tuple[float, str]:
    """The gallery's threshold with ``--gallery``, else the strictest one the analyses matched at."""
    if not args.gallery:
        ix = max(indexes, key=lambda i: i.meta.threshold)
        return ix.meta.threshold, f"analysis {ix.folder}: {ix.meta.threshold_source}"
    from pipeline.gallery import Gallery
    from pipeline.gallery.operating_point import gallery_point

    if "://" not in args.gallery and not Path(args.gallery).is_file():
        raise CliError(f"gallery file {args.gallery} does not exist")
    g = Gallery.open(args.gallery if "://" in args.gallery else Path(args.gallery))
    try:
        if g.model_id and g.model_id != model_id:
            raise CliError(f"gallery {args.gallery} was built with {g.model_id}, the index with {model_id}: "
                           "their thresholds do not compare")
        gs = settings.gallery
        point = gallery_point(g, g.identities(), gs.matcher, gs.target_far, settings.pipeline.threshold)
    finally:
        g.close()
    return point.threshold, f"gallery {args.gallery}: {point.source}"


def cmd_search(args: argparse.Namespace) -> int:
    import numpy as np

    from daemon.engines import engine_for_gallery
    from models.registry import model_id_for

    if args.top < 1:
        raise CliError(f"--top must be at least 1, got {args.top}")
    settings = settings_from(args)
    indexes = _indexes(args.index)
    model_id = indexes[0].meta.model_id
    if args.model and (asked := model_id_for(args.model, args.flip)) != model_id:
        raise CliError(f"index {indexes[0].folder} was made with {model_id}, --model asks for {asked}: "
                       "search with the index's embedder")
    threshold, source = _threshold(args, settings, indexes, model_id)
    missing = [p for p in args.photo if not Path(p).is_file()]
    if missing:
        raise CliError(f"photo {missing[0]} does not exist")
    engine = engine_for_gallery(settings, model_id, None, "largest", f"index {indexes[0].folder}")
    found = engine.embed_files([Path(p) for p in args.photo])
    for r in found:
        if not r.ok:
            raise CliError(f"{r.path}: {r.reason}")
    q = np.mean([r.vec for r in found], axis=0)
    q = (q / np.linalg.norm(q)).astype(np.float32)
    hits = []
    for ix in indexes:
        idx, scores = ix.search(q, args.top)
        for i, s in zip(idx.tolist(), scores.tolist(), strict=True):
            if s >= threshold:
                r = ix.rows[i]
                hits.append({"score": round(float(s), 4), "video": r["video"], "from_s": r["start_s"],
                             "to_s": r["end_s"], "best_frame": r["best_frame"], "decision": r["decision"],
                             "identity": r["identity"], "group": r["cluster"], "path": r["path"],
                             "index": str(ix.folder)})
    hits.sort(key=lambda h: -h["score"])
    hits = hits[:args.top]
    result = {"photos": args.photo, "model": model_id, "threshold": round(threshold, 6), "threshold_source": source,
              "searched": sum(len(ix.rows) for ix in indexes), "appearances": hits}
    if args.json:
        print_result(result, True)
        return 0
    print(f"{len(hits)} appearance(s) at similarity >= {threshold:.4f} ({source}), "
          f"{result['searched']} track(s) searched")
    for h in hits:
        who = h["identity"] or h["group"] or h["decision"]
        print(f"{h['score']:.4f}  {h['video']}  {h['from_s']:.2f}-{h['to_s']:.2f} s  best frame {h['best_frame']}  "
              f"({who})  {h['index']}")
    return 0


def add_commands(sub: Any) -> None:
    sp = sub.add_parser("search", help="where does the person in these photos appear across analysed videos "
                        "(faces.index of 'facestream analyze' folders)")
    sp.add_argument("--photo", action="append", required=True, help="a photo of the person (repeatable: their "
                    "embeddings are averaged)")
    sp.add_argument("--index", nargs="+", required=True, metavar="DIR", help="analysis folders (or their "
                    "faces.index files)")
    sp.add_argument("--top", type=int, default=20, help="most appearances listed (default 20)")
    sp.add_argument("--gallery", help="decide with this gallery's threshold instead of the analyses' own")
    sp.add_argument("--json", action="store_true")
    model_opts(sp)
    sp.set_defaults(func=cmd_search)
