"""``[unknowns]``: the faces of tracks that ended unknown, kept a few days and grouped into visitors, so an
operator can see who the strangers are, name one (enrol) or erase one."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class UnknownsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(None, description="Keep unknown visitors. Empty: on whenever 'facestream run' "
                                 "uses a gallery file (off, silently, for a gallery in PostgreSQL, which this store "
                                 "does not support yet; true there is an error); false turns it off.")
    path: Path | None = Field(None, description="The visitors' SQLite file (0600). Empty: beside the gallery, "
                              "'<gallery>.unknowns.db'; a relative path is under paths.state_dir.")
    keep_days: float = Field(7.0, gt=0, description="Days an appearance is kept after it was last seen; a visitor "
                             "with none left is erased (its faces overwritten, secure_delete).")
    max_faces: int = Field(5, ge=1, le=50, description="Best faces (JPEG, by quality) kept per visitor; an enrolment "
                           "sends them all through the photo quality gates.")
    same_person_threshold: float | None = Field(None, ge=-1.0, le=1.0, description="Cosine similarity of a track's "
                                                "embedding to a visitor's centroid at which it is that visitor. "
                                                "Empty: the gallery's calibrated threshold.")
    crop_margin: float = Field(0.5, ge=0.1, le=2.0, description="Context kept around a face, as a share of its "
                               "box on each side, so that the stored JPEG can be detected again when enrolled.")

    def active(self, gallery_is_url: bool) -> bool:
        """Whether to keep visitors; a ValueError of one line when enabled where this store cannot live."""
        if gallery_is_url:
            if self.enabled and self.path is None:
                raise ValueError("unknowns.enabled: unknown visitors are kept beside a gallery file; for a gallery "
                                 "in PostgreSQL set unknowns.path to a file, or unknowns.enabled = false")
            return bool(self.enabled) and self.path is not None
        return self.enabled is not False
