"""``gallery migrate SRC DST``: a gallery copied to another backend, so a site can start on one box (a SQLite
file) and grow into a database every host shares (PostgreSQL), or come back.

Everything that decides a match is copied as stored, not recomputed: each identity's centroid, its templates
in order with their outlier flags and quality, the photos offered for it, the threshold, margin and
calibration figures; and the embedding cache, so a rebuild at the destination embeds nothing again. A
destination that already holds people is refused before anything is written there (a migration never merges
two galleries). The people and their photos land in one transaction, after the cache and the calibration: an
interrupted run leaves a destination with nobody in it, which a second run fills.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.gallery.store import Gallery, GalleryError, is_url

CACHE_BATCH = 500


def _is_new_file(dst: str | Path) -> bool:
    return not is_url(dst) and not Path(dst).expanduser().exists()


def migrate(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Copy the gallery at ``src`` into ``dst`` (a new file, or a database without people); returns counts."""
    source = Gallery.open(src if is_url(src) else Path(src).expanduser())
    try:
        if not is_url(dst):
            dst = Path(dst).expanduser()
            if dst.exists() and not dst.is_file():
                raise GalleryError(f"cannot migrate into {dst}: it is not a file")
        created = _is_new_file(dst)
        target = Gallery.create(dst, source.model_id, source.dim)
        try:
            return _copy(source, target)
        except BaseException:
            target.close()
            if created and isinstance(dst, Path):
                dst.unlink(missing_ok=True)  # a file this run made and could not fill is not left behind
            raise
        finally:
            target.close()
    finally:
        source.close()


def _copy(source: Gallery, target: Gallery) -> dict[str, Any]:
    if n := target.counts()[0]:
        raise GalleryError(f"cannot migrate into {target.path}: it already holds a gallery of {n} identit"
                           f"{'y' if n == 1 else 'ies'} (migrate into a new file or an empty database)")
    people = source.identities()
    sources = source.sources()
    cached = 0
    batch: list[tuple[str, str, Any]] = []
    cache = target.cache()
    for row in source.cache().rows():
        batch.append(row)
        if len(batch) >= CACHE_BATCH:
            cache.put_many(batch)
            cached, batch = cached + len(batch), []
    if batch:
        cache.put_many(batch)
        cached += len(batch)
    target.set_calibration(source.threshold, source.margin, source.calibration, bump=False)
    target.copy_identities(people, sources)
    for name, vecs in source.negatives().items():  # "not this person" faces, with the calibration they raised
        for vec in vecs:
            target.add_negative(name, vec, f"migrated from {source.path.name}", source.calibration)
    n_id, n_t, n_out = target.counts()
    if (n_id, n_t) != source.counts()[:2]:
        raise GalleryError(f"migration into {target.path} wrote {n_id} identities and {n_t} templates; the "
                           f"source holds {source.counts()[0]} and {source.counts()[1]}")
    return {"from": str(source.path), "to": str(target.path), "model": target.model_id, "identities": n_id,
            "templates": n_t, "outliers": n_out, "photos_offered": sum(len(v) for v in sources.values()),
            "cached_embeddings": cached, "negatives": sum(len(v) for v in target.negatives().values()),
            "threshold": target.threshold, "margin": target.margin,
            "version": target.version}
