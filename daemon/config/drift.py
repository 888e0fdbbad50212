"""``[drift]``: who is sliding towards the threshold. The daemon keeps, per identity, the last scores it named
them at and the scores of tracks it refused although they were that identity's top-1, and writes them to a
small file so that ``gallery info`` (offline) can say whom to re-enrol."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class DriftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Keep each identity's recent accepted scores and refusals (in memory, "
                          "bounded by 'recent' per identity) and write them to 'path'.")
    path: Path | None = Field(None, description="The scores' JSON file (0600), read by 'gallery info'. Empty: "
                              "beside a gallery file, '<gallery>.drift.json'; 'drift.json' in paths.state_dir for a "
                              "gallery in a database; a relative path is under paths.state_dir.")
    recent: int = Field(50, ge=1, le=1000, description="Accepted scores (and, apart, refusals) kept per identity: "
                        "the window the recent median is taken over.")
    min_scores: int = Field(5, ge=1, le=1000, description="Accepted scores an identity needs before it can be "
                            "flagged as drifting.")
    near: float = Field(0.01, ge=0.0, le=1.0, description="An identity is flagged when its recent median is within "
                        "this of the threshold it is named at.")
    save_every_s: float = Field(60.0, gt=0, le=86400, description="Seconds between writes of the file (when "
                                "something changed); it is also written at shutdown.")
