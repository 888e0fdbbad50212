"""``facestream gallery build|add|remove|rename|list|info|export|calibrate|migrate`` (and ``reject|merge|split``
from ``gallery_fix.py``): argument wiring only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.cli.common import gallery_location, model_opts, with_settings
from daemon.cli.printing import print_rows
from daemon.config import Settings
from daemon.engines import check_gallery_model, engine_for_gallery


def _gallery_path(args: argparse.Namespace, settings: Settings) -> Path | str:
    path = gallery_location(args, settings)
    if path is None:
        raise ValueError("no gallery given: pass --gallery FILE (or a postgresql:// URL) or set gallery.path in "
                         "the config")
    return path


def _existing(path: Path | str) -> Any:
    """The gallery at ``path``, or None when there is none yet (a file not made, a database without one)."""
    from pipeline.gallery import Gallery, GalleryError

    if isinstance(path, Path):
        return Gallery.open(path) if path.exists() else None
    try:
        return Gallery.open(path)
    except GalleryError as exc:
        if "holds no facestream gallery" in str(exc):
            return None
        raise


def _gates(settings: Settings):
    from pipeline.gallery.enrol import QualityGates

    g = settings.gallery
    return QualityGates(g.min_face_px, g.min_blur, g.min_prob)


def cmd_build(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from models.registry import get_spec, model_id_for
    from pipeline.gallery import Gallery
    from pipeline.gallery.enrol import build
    from pipeline.gallery.photo_list import collect_sources

    sources = collect_sources(args.source, args.role)
    withheld: list[str] = []
    if args.holdout:
        from pipeline.gallery.photo_list import holdout

        sources, withheld = holdout(sources, args.holdout, args.seed)
    e = settings.embedder
    gallery = Gallery.create(args.out, model_id_for(e.model, e.flip), get_spec(e.model).dim)
    engine = engine_for_gallery(settings, None, gallery.cache(), "dominant")
    report = Path(args.report) if args.report else None
    result = build(engine, gallery, sources, _gates(settings), report, target_far=settings.gallery.target_far)
    if withheld:
        result["withheld_identities"] = withheld
    if not args.json:
        for row in result["skipped_files"]:
            print(f"skipped {row['path']} ({row['identity']}): {row['reason']}")
        result = {k: v for k, v in result.items() if k != "skipped_files"}
    out(result, args.json)
    return 0


def cmd_add(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery import Gallery

    images = list(args.images)
    if args.name_opt and args.name:
        images.insert(0, args.name)  # with --name, every positional argument is a photo
    name = args.name_opt or args.name
    if not name:
        raise ValueError("give the person's name: gallery add NAME ... or --name NAME")
    args.images = images
    if args.from_index or args.cluster:
        if args.images or args.video:
            raise ValueError("give photos, --video or --from-index DIR --cluster unknown-N, one of them")
        args.images = _cluster_photos(args.from_index, args.cluster, args.max_faces)
    if bool(args.images) == bool(args.video):
        raise ValueError("give photos (gallery add NAME PHOTO...) or one clip (--video CLIP), not both or neither")
    path = _gallery_path(args, settings)
    gallery = _existing(path) if args.video else Gallery.open(path)  # a bad one fails before torch is imported
    if gallery is not None and gallery.model_id:  # (enrolling from video may start a gallery)
        check_gallery_model(gallery.model_id, f"gallery {gallery.path}")
    from pipeline.gallery.enrol import enrol

    model_id = gallery.model_id if gallery else None
    engine = engine_for_gallery(settings, model_id, gallery.cache() if gallery else None, "dominant",
                                f"gallery {gallery.path if gallery else path}")
    results, summary = None, {}
    if args.video:
        from pipeline.gallery.video import video_faces

        results, summary = video_faces(engine, Path(args.video), args.max_faces, settings.gallery.min_face_px)
        if gallery is None:
            gallery = Gallery.create(path, engine.embedder.model_id, engine.embedder.dim)
    assert gallery is not None
    if results is None:  # embedded first: a shared gallery's write lock is held only for the write
        from pipeline.names import check_new_name

        check_new_name(name, gallery.names())  # a bad name fails before any photo is embedded
        results = engine.embed_files([Path(p) for p in args.images])
    with gallery.writing():
        result = enrol(engine, gallery, name, [], _gates(settings), settings.gallery.target_far, results)
    for row in result.get("shared_photos", []):
        print(f"facestream: warning: {row['path']} is also enrolled for {row['also_enrolled_for']}: one of the two "
              "names is probably wrong", file=sys.stderr)
    out({**result, **summary}, args.json)
    return 0 if result["added"] else 1


def _cluster_photos(folder: str | None, group: str | None, most: int) -> list[str]:
    """The best faces of an unknown group of an analysis (best first): enrolled as photos, through the gates."""
    from pipeline.face_index import FaceIndex

    if not folder or not group:
        raise ValueError("--from-index DIR and --cluster unknown-N go together")
    ix = FaceIndex.open(Path(folder).expanduser())
    groups = ix.clusters()
    if group not in groups:
        raise ValueError(f"{ix.folder} has no group {group!r} (it has {', '.join(sorted(groups)) or 'none'})")
    rows = sorted((r for r in groups[group] if r["face_file"]), key=lambda r: -r["best_quality"])[:most]
    photos = [str(ix.folder / r["face_file"]) for r in rows if (ix.folder / r["face_file"]).is_file()]
    if not photos:
        raise ValueError(f"group {group} of {ix.folder} has no face crops left under faces/")
    return photos


def cmd_remove(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery import Gallery
    from pipeline.gallery.calibration import recalibrate

    location = _gallery_path(args, settings)
    gallery = Gallery.open(location)
    with gallery.writing():
        removed = gallery.remove(args.name)
        cal = recalibrate(gallery, settings.gallery.target_far)
    _drift_follows(settings, location, args.name)
    out({"removed": args.name, "templates": removed, "threshold": cal["threshold"], "margin": cal["margin"]},
        args.json)
    return 0


def cmd_rename(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery import Gallery
    from pipeline.gallery.calibration import recalibrate

    location = _gallery_path(args, settings)
    gallery = Gallery.open(location)
    with gallery.writing():
        new = gallery.rename(args.old, args.new)
        recalibrate(gallery, settings.gallery.target_far)
    _drift_follows(settings, location, args.old, new)
    out({"renamed": args.old, "to": new}, args.json)
    return 0


def _drift_follows(settings: Settings, location: Path | str, name: str, new: str | None = None) -> None:
    """An erased person's scores leave the drift file with them; a renamed one's move (a daemon running on this
    gallery drops or keeps them at its next reload and write)."""
    from daemon.stores.drift import change_identity, drift_location

    try:
        change_identity(drift_location(settings, location), name, new)
    except (OSError, ValueError) as exc:
        print(f"facestream: warning: drift file not updated: {exc}", file=sys.stderr)


def cmd_list(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery import Gallery

    gallery = Gallery.open(_gallery_path(args, settings))
    _warn_bad_names(gallery)
    people = gallery.identities()
    if args.templates:  # the positions gallery split takes
        rows = [{"identity": p.name, "template": i, "photo": path, "outlier": bool(o)}
                for p in people for i, (path, o) in enumerate(zip(p.paths, p.outlier, strict=True), 1)]
        print_rows(rows, args.json, "{identity:<32} {template:>4}  {photo}")
        return 0
    rows = [{"identity": p.name, "templates": len(p.paths), "outliers": int(p.outlier.sum())} for p in people]
    print_rows(rows, args.json, "{identity:<32} {templates:>4} template(s)  {outliers} outlier(s)")
    return 0


def cmd_info(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery import Gallery

    location = _gallery_path(args, settings)
    gallery = Gallery.open(location)
    _warn_bad_names(gallery)
    info = gallery.info()
    figures, flags = _drift(gallery, location, settings, info)
    if args.json:
        out({**info, "drift": {**info.pop("drift"), "identities": figures, "flagged": flags}}, args.json)
        return 0
    out({**info, "drift": info["drift"]["file"] or "not kept", "drifting": len(flags)}, args.json)
    for f in flags:
        print(f"drifting: {f['identity']}: {f['advice']}")
    return 0


def _drift(gallery: Any, location: Path | str, settings: Settings, info: dict) -> tuple[dict, list[dict]]:
    """The drift file a daemon wrote for this gallery (``daemon/stores/drift.py``): every tracked identity's
    figures at the gallery's threshold now, and those whose recent median is within drift.near of it."""
    from daemon.stores.drift import drift_location, flagged, read_drift

    path = drift_location(settings, location)
    info["drift"] = {"file": str(path) if path is not None else None, "updated": None}
    try:
        doc = read_drift(path) if path is not None else None
    except ValueError as exc:
        print(f"facestream: warning: {exc}", file=sys.stderr)
        return {}, []
    if doc is None or gallery.threshold is None:
        return {}, []
    if doc.get("model") != gallery.model_id:
        print(f"facestream: warning: drift file {path} holds scores of model {doc.get('model')}, not the "
              f"gallery's {gallery.model_id}: ignored", file=sys.stderr)
        return {}, []
    import time

    info["drift"]["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(doc.get("updated") or 0)))
    d = settings.drift
    own = info.get("own_thresholds") or {}
    return flagged(doc, gallery.names(), float(gallery.threshold), d.near, d.min_scores, own)


def _warn_bad_names(gallery: Any) -> None:
    """A gallery from before the name rule opens and matches; its bad names are pointed out once per command."""
    from pipeline.names import clip

    for name in gallery.bad_names():
        print(f"facestream: warning: identity {clip(name)!r} does not follow the name rule: rename it with "
              f"'facestream gallery rename OLD NEW --gallery {gallery.path}'", file=sys.stderr)


def cmd_export(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery import Gallery

    gallery = Gallery.open(_gallery_path(args, settings))  # a bad file fails before torch is imported
    from tools.gallery_export import export

    npz, meta = export(gallery, Path(args.out))
    out({"npz": str(npz), "json": str(meta)}, args.json)
    return 0


def cmd_calibrate(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery import Gallery
    from pipeline.gallery.calibration import recalibrate
    from tools.calibrate import save_calibration_png

    gallery = Gallery.open(args.gallery_file)
    people = gallery.identities()
    target = args.target_far if args.target_far is not None else settings.gallery.target_far
    figures = recalibrate(gallery, target, bump=True)
    if args.roc_png:
        save_calibration_png(args.roc_png, people)
    out(figures, args.json)
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery.migrate import migrate

    out(migrate(args.src, args.dst), args.json)
    return 0


def add_commands(sub: Any) -> None:
    """Register the ``gallery`` subcommands."""
    run = with_settings
    gal = sub.add_parser("gallery", help="build and edit identity galleries").add_subparsers(
        dest="action", required=True)

    def common(sp: argparse.ArgumentParser, gallery_opt: bool = True) -> None:
        if gallery_opt:
            sp.add_argument("--gallery", help="gallery file or postgresql:// URL (default: gallery.path from the "
                            "config)")
        sp.add_argument("--json", action="store_true")

    b = gal.add_parser("build", help="build a gallery from a folder per identity or a CSV")
    b.add_argument("source", help="folder of identity folders, or CSV filename,identity[,role]")
    b.add_argument("--out", required=True, help="gallery file (or postgresql:// URL) to create or rebuild")
    b.add_argument("--role", help="with a CSV: only rows whose role column equals this")
    b.add_argument("--report", help="folder for skipped.csv, mislabelled.csv, close_identities.csv")
    b.add_argument("--holdout", type=int, help="leave out this many identities (open-set evaluation)")
    b.add_argument("--seed", type=int, default=0, help="random seed choosing the --holdout identities")
    model_opts(b)
    common(b, gallery_opt=False)
    b.set_defaults(func=run(cmd_build))
    a = gal.add_parser("add", help="enrol photos, or a clip, of one person (no rebuild)")
    a.add_argument("name", nargs="?", help="the person's identity (or --name)")
    a.add_argument("images", nargs="*", help="photos of the person")
    a.add_argument("--name", dest="name_opt", help="the person's identity")
    a.add_argument("--video", help="a clip of the person alone: their best, varied frames are enrolled "
                   "(refused when it shows several people or none)")
    a.add_argument("--max-faces", type=int, default=8, help="with --video or --from-index: most faces enrolled")
    a.add_argument("--from-index", metavar="DIR", help="an analysis folder: enrol the best faces of one group of "
                   "unknown people (with --cluster), after a person has looked at them")
    a.add_argument("--cluster", metavar="unknown-N", help="with --from-index: the group (see the report)")
    common(a)
    a.set_defaults(func=run(cmd_add))
    r = gal.add_parser("remove", help="erase a person, their templates and cached embeddings")
    r.add_argument("name")
    common(r)
    r.set_defaults(func=run(cmd_remove))
    rn = gal.add_parser("rename", help="rename a person")
    rn.add_argument("old")
    rn.add_argument("new")
    common(rn)
    rn.set_defaults(func=run(cmd_rename))
    for name, func, text in (("list", cmd_list, "enrolled people"), ("info", cmd_info, "counts, model, calibration")):
        sp = gal.add_parser(name, help=text)
        if name == "list":
            sp.add_argument("--templates", action="store_true", help="every template with its position (for split)")
        common(sp)
        sp.set_defaults(func=run(func))
    from daemon.cli import gallery_fix

    gallery_fix.add_commands(gal, common, run)
    ex = gal.add_parser("export", help="write PREFIX.npz and PREFIX.json for other tools")
    ex.add_argument("--out", required=True, help="output prefix")
    common(ex)
    ex.set_defaults(func=run(cmd_export))
    c = gal.add_parser("calibrate", help="choose threshold and margin for a target false accept rate")
    c.add_argument("gallery_file")
    c.add_argument("--target-far", type=float)
    c.add_argument("--roc-png")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run(cmd_calibrate))
    m = gal.add_parser("migrate", help="copy a gallery to another backend (a file into PostgreSQL and back): "
                       "templates, calibration and the embedding cache")
    m.add_argument("src", help="gallery file or postgresql://USER@HOST:PORT/DB (never a password in the URL)")
    m.add_argument("dst", help="a new gallery file, or a database holding no gallery yet")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=run(cmd_migrate))
