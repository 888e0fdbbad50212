"""``[gallery]``: where the gallery is, the photo quality gates, the target FAR and the matcher."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from daemon.config.common import StoreLocation


class GalleryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: StoreLocation | None = Field(None, description="Gallery used by commands that take --gallery: a file, "
                                       "or a postgresql:// URL (no password in it) every host of a site shares.")
    follow_max_s: float = Field(2.0, gt=0, le=60, description="A daemon on a gallery in a database swaps in every "
                                "host's enrol, erase, rename and recalibration within this many seconds "
                                "(LISTEN/NOTIFY, and a revision poll at half this interval).")
    min_face_px: float = Field(40.0, ge=0, description="Reference photos: smallest face side in pixels.")
    min_blur: float = Field(10.0, ge=0, description="Reference photos: lowest Laplacian variance of the "
                            "aligned face (lower is blurrier).")
    min_prob: float = Field(0.95, ge=0, le=1, description="Reference photos: lowest detection probability.")
    target_far: float = Field(0.01, gt=0, lt=1, description="Share of strangers' photos that may be named as "
                              "someone enrolled (open-set false accept rate); every gallery write calibrates to it.")
    matcher: Literal["centroid", "svm"] = Field("centroid", description="Matcher: centroid cosine or linear SVM.")
    augment: bool = Field(False, description="SVM: interpolate embeddings to balance small classes.")
