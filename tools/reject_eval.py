"""``python -m tools.reject_eval``: what "not this person" does on LFW (issue 23, docs/benchmarks.md).

The gallery is the identification split's gallery photos (158 people); the enrolled people's probes are the
split's probe photos. Strangers are LFW people outside the split (``--strangers`` of them chosen with
``random.Random(0)``, as the open-set benchmark does; 0: all of them), every photo of each. Before: which
stranger photos the gallery names. Then each stranger it names is rejected once (their first named photo
becomes a negative of the identity it named, which raises that identity's own threshold), and after: how
many of the *other* photos of those same strangers are still named (by anyone, and by the identity they
were rejected for), how many strangers' photos are named overall, and the enrolled people's TAR before and
after. Embeddings are cached (``$XDG_CACHE_HOME/facestream/embeddings.sqlite``, as ``eval identify`` keeps
them), so a second run embeds nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np

from pipeline.gallery import Gallery
from pipeline.gallery.operating_point import gallery_point
from pipeline.match import decide, make_matcher

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _engine(cache_path: Path, policy: str, cache=None):
    from models.detector import DetectorSettings, MTCNNDetector
    from models.embedder import load_embedder
    from pipeline.gallery.cache import EmbeddingCache
    from pipeline.gallery.stills import StillEmbedder

    return StillEmbedder(MTCNNDetector(DetectorSettings(max_side=1600)), load_embedder("dlib-resnet-v1", "onnx"),
                         cache if cache is not None else EmbeddingCache(cache_path), policy=policy)


def _gallery(data: Path, out: Path, cache_path: Path, target_far: float) -> Path:
    """The split's gallery, built once into ``out`` (its own cache makes a rebuild cheap)."""
    from pipeline.gallery.enrol import QualityGates, build
    from pipeline.gallery.photo_list import collect_sources

    path = out / "lfw_full.db"
    if path.exists():
        return path
    g = Gallery.create(path, "dlib-resnet-v1", 128)
    build(_engine(cache_path, "dominant", g.cache()), g, collect_sources(str(data / "lfw" / "identification_split.csv"),
                                                                          "gallery"),
          QualityGates(), None, target_far=target_far, progress=False)
    g.close()
    return path


def _people(data: Path, n: int) -> tuple[list[tuple[Path, str]], dict[str, list[Path]]]:
    root = data / "lfw"
    rows = list(csv.DictReader((root / "identification_split.csv").open()))
    probes = [(root / r["filename"], r["identity"]) for r in rows if r["role"] == "probe"]
    split = {r["identity"] for r in rows}
    others = sorted(d.name for d in (root / "deepfunneled").iterdir() if d.is_dir() and d.name not in split)
    chosen = sorted(random.Random(0).sample(others, n)) if n else others
    return probes, {name: sorted((root / "deepfunneled" / name).glob("*.jpg")) for name in chosen}


def _embed(engine, paths: list[Path]) -> dict[Path, np.ndarray]:
    return {r.path: r.vec for r in engine.embed_files(paths) if r.vec is not None}


def _decisions(g: Gallery, vecs: dict[Path, np.ndarray], target_far: float) -> dict[Path, str | None]:
    people = g.identities()
    point = gallery_point(g, people, "centroid", target_far)
    matcher = make_matcher("centroid", people)
    keys = list(vecs)
    cands = matcher.topk(np.stack([vecs[k] for k in keys]), 5)
    return {k: decide(c, point.threshold, point.margin, point.own).identity for k, c in zip(keys, cands, strict=True)}


def _tar(named: dict[Path, str | None], probes: list[tuple[Path, str]]) -> float:
    known = [(p, who) for p, who in probes if p in named]
    return round(sum(named[p] == who for p, who in known) / len(known), 5)


def measure(data: Path, out: Path, strangers: int, target_far: float, cache_path: Path) -> dict:
    from pipeline.gallery.negatives import reject

    out.mkdir(parents=True, exist_ok=True)
    built = _gallery(data, out, cache_path, target_far)
    work = out / "lfw_rejects.db"
    shutil.copy(built, work)
    probes, photos = _people(data, strangers)
    engine = _engine(cache_path, "center")
    probe_vecs = _embed(engine, [p for p, _ in probes])
    stranger_vecs = _embed(engine, [p for ps in photos.values() for p in ps])
    g = Gallery.open(work)
    try:
        before_p, before_s = _decisions(g, probe_vecs, target_far), _decisions(g, stranger_vecs, target_far)
        rejected: dict[str, tuple[Path, str]] = {}  # stranger -> (the photo rejected, the identity it named)
        for name, ps in photos.items():
            first = next((p for p in ps if before_s.get(p)), None)
            if first is not None:
                rejected[name] = (first, before_s[first])  # type: ignore[assignment]
        raised = {}
        for name, (photo, identity) in rejected.items():
            r = reject(g, identity, stranger_vecs[photo], f"reject_eval {name}")
            raised[identity] = r
        after_p, after_s = _decisions(g, probe_vecs, target_far), _decisions(g, stranger_vecs, target_far)
        own = g.info()["own_thresholds"]
        threshold = g.threshold
    finally:
        g.close()
    others = [(p, rejected[n][1]) for n, ps in photos.items() if n in rejected for p in ps
              if p != rejected[n][0] and p in stranger_vecs]
    affected = {ident for _, ident in rejected.values()}
    return {
        "gallery_threshold": threshold, "strangers": len(photos), "stranger_photos": len(stranger_vecs),
        "stranger_photos_named_before": sum(v is not None for v in before_s.values()),
        "stranger_photos_named_after": sum(v is not None for v in after_s.values()),
        "strangers_named_before": len(rejected), "rejects": len(rejected), "identities_raised": len(affected),
        "rejected_photos_named_after": sum(after_s[p] is not None for p, _ in rejected.values()),
        "other_photos_of_rejected_strangers": len(others),
        "other_photos_named_before": sum(before_s[p] is not None for p, _ in others),
        "other_photos_named_after": sum(after_s[p] is not None for p, _ in others),
        "other_photos_named_as_rejected_before": sum(before_s[p] == who for p, who in others),
        "other_photos_named_as_rejected_after": sum(after_s[p] == who for p, who in others),
        "probes": len(probe_vecs), "tar_before": _tar(before_p, probes), "tar_after": _tar(after_p, probes),
        "raised_identities_probes": sum(who in affected for p, who in probes if p in probe_vecs),
        "raised_identities_tar_before": _tar(before_p, [x for x in probes if x[1] in affected]) if affected else None,
        "raised_identities_tar_after": _tar(after_p, [x for x in probes if x[1] in affected]) if affected else None,
        "own_thresholds": own,
        "bounded": sorted(i for i, r in raised.items() if r["bounded"]),
    }


def main(argv: list[str] | None = None) -> int:
    from models.paths import default_cache_dir

    ap = argparse.ArgumentParser(prog="python -m tools.reject_eval", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--out", type=Path, required=True, help="folder for the gallery files")
    ap.add_argument("--strangers", type=int, default=1500, help="LFW people outside the split (0: all)")
    ap.add_argument("--target-far", type=float, default=0.01)
    ap.add_argument("--cap-quantile", type=float, help="the bound's quantile of the identity's own scores "
                    "(pipeline/gallery/negatives.py CAP_QUANTILE) for this run")
    args = ap.parse_args(argv)
    if args.cap_quantile is not None:
        from pipeline.gallery import negatives

        negatives.CAP_QUANTILE = args.cap_quantile
    print(json.dumps(measure(args.data, args.out, args.strangers, args.target_far,
                             default_cache_dir() / "embeddings.sqlite"), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
