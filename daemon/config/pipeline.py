"""``[pipeline]``: queues, tracking, judging, reconnects and stopping of the streaming pipeline."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue_size: int = Field(8, ge=1, description="Bounded queue length between stages.")
    iou_threshold: float = Field(0.3, gt=0, lt=1, description="Minimum IoU to continue a track.")
    max_track_age_s: float = Field(1.0, gt=0, description="Seconds a track survives unseen before it ends (longer "
                                   "than detector.scan_interval_s, so a face missed by one scan keeps its track).")
    embed_interval_s: float = Field(0.2, ge=0, description="Seconds between embeddings of one track (when the face "
                                    "is as good as most of what was seen).")
    scene_cut_threshold: float = Field(20.0, ge=0, description="Mean grey-level change (0-255) of a 32x18 "
                                       "thumbnail that counts as a shot cut and ends all tracks (0 = off).")
    confirm_hits: int = Field(3, ge=1, description="Detections a new track needs before it is embedded or "
                              "reported.")
    confirm_prob: float = Field(0.98, ge=0, le=1, description="Median detection probability a track needs to be "
                                "confirmed as a face (rejects animals and textures).")
    min_embed_px: float = Field(32.0, ge=0, description="Smallest face side (px) worth embedding.")
    min_faces: int = Field(2, ge=1, description="Judgeable faces a track's aggregate needs before it may be named "
                           "(a track that ends sooner is decided on what it has).")
    unknown_after: int = Field(3, ge=1, description="Judgeable faces whose aggregate names nobody before a track is "
                               "reported unknown.")
    max_embeds_per_track: int = Field(12, ge=1, description="Most faces of one track that are embedded (the best "
                                      "first; more add little once a track is decided).")
    min_sharpness: float = Field(0.0, ge=0, description="Laplacian variance of the aligned face below which it is "
                                 "too blurred to judge.")
    cooldown_s: float = Field(10.0, ge=0, description="Seconds before the same identity is announced again on a "
                              "source.")
    stats_interval_s: float = Field(10.0, gt=0, description="Seconds between stats events.")
    threads_per_stage: int = Field(1, ge=0, description="CPU threads for the detector and for the embedder each "
                                   "(they run in parallel stages; 0 = library default, which oversubscribes "
                                   "small machines).")
    stall_timeout_s: float = Field(10.0, gt=0, description="Live sources: seconds without a frame before the "
                                   "stream counts as stalled and is reopened (the watchdog).")
    stall_timeout_by_source: dict[str, float] = Field(
        default_factory=dict, description="Per-source watchdog timeouts by source id, for cameras that send "
        "rarely (e.g. {\"door\" = 60.0}).")
    open_timeout_s: float = Field(10.0, gt=0, description="Live sources: seconds to connect and probe a stream "
                                  "before the attempt counts as failed (FFmpeg probes RTSP for ~3 s).")
    reconnect_initial_s: float = Field(0.5, gt=0, description="First wait before reopening a failed live source; "
                                       "it doubles on every failed attempt.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Cap of the doubling reconnect wait.")
    stop_timeout_s: float = Field(5.0, gt=0, description="SIGTERM/SIGINT: most seconds to drain the stages "
                                  "before exiting (frames not yet detected are let go).")
    threshold: float | None = Field(None, ge=-1.0, le=1.0, description="Override the gallery's calibrated "
                                    "threshold (a cosine similarity, -1 to 1).")
    margin: float | None = Field(None, ge=0.0, le=2.0, description="Override the gallery's calibrated top-1 - "
                                 "top-2 margin (0 to 2).")

    @model_validator(mode="after")
    def _decidable(self) -> PipelineConfig:
        """Cross-field checks: counts that make a track undecidable in view, and a reconnect wait above its cap,
        are typos, not choices."""
        if self.min_faces > self.max_embeds_per_track:
            raise ValueError(f"pipeline.min_faces ({self.min_faces}) must not exceed pipeline.max_embeds_per_track "
                             f"({self.max_embeds_per_track}): a track would never gather enough faces to be named")
        if self.unknown_after > self.max_embeds_per_track:
            raise ValueError(f"pipeline.unknown_after ({self.unknown_after}) must not exceed "
                             f"pipeline.max_embeds_per_track ({self.max_embeds_per_track}): a stranger would never "
                             "be reported while in view")
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ValueError(f"pipeline.reconnect_initial_s ({self.reconnect_initial_s}) must not exceed "
                             f"pipeline.reconnect_max_s ({self.reconnect_max_s})")
        if self.unknown_after < self.min_faces:
            raise ValueError(f"pipeline.unknown_after ({self.unknown_after}) must not be below pipeline.min_faces "
                             f"({self.min_faces}): a track would be reported unknown on less evidence than it needs "
                             "to be named")
        return self
