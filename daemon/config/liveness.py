"""``[liveness]``: passive liveness (MiniFASNet) for the decisions a photo or a phone must not win: the door."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# pipeline.liveness.PUBLISHED_THRESHOLD (a test keeps them equal): importing it would load OpenCV in every
# command that reads settings, the light ones included.
PUBLISHED_THRESHOLD = 0.5


class LivenessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(None, description="Judge liveness before a door grant. Empty: on whenever the "
                                 "door profile is (door.audit set); false turns it off (a printed photo can then "
                                 "open the door). Nothing is computed, and no model is loaded, without a door.")
    threshold: float = Field(PUBLISHED_THRESHOLD, ge=0, le=1, description="A track is live when the mean live "
                             "score of its judged faces reaches this (0.5: the models' published operating point).")
    min_frames: int = Field(3, ge=1, description="Judged faces a track needs scored before a grant or a "
                            "'presentation attack' denial.")
    runtime: str = Field("onnx", pattern="^(onnx|torch)$", description="Runtime of the liveness models.")
    weights_dir: Path | None = Field(None, description="Folder holding the published MiniFASNet .pth files "
                                     "(empty: the cache, then the checksummed download).")

    def active(self, door: bool) -> bool:
        return self.enabled if self.enabled is not None else door
