"""``[retention]``: how long the records that name people are kept (data-protection rules ask for a limit)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class RetentionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events_days: float | None = Field(None, gt=0, description="Keep the event log (sinks.jsonl) this many days: "
                                      "it is rotated daily and older day files deleted (empty: forever).")
    audit_days: float | None = Field(None, gt=0, description="Keep the door audit and the API audit this many "
                                     "days: rotated daily, older day files and lines deleted.")
    attendance_days: float | None = Field(None, gt=0, description="Keep attendance marks this many days: older "
                                          "rows deleted from the book (overwritten, then the file vacuumed).")
    analyses_days: float | None = Field(None, gt=0, description="Delete analysis folders (facestream analyze "
                                        "--out) under analyses_dir older than this many days.")
    analyses_dir: Path | None = Field(None, description="The folder whose analysis sub-folders analyses_days "
                                      "applies to.")
    interval_s: float = Field(3600.0, gt=0, description="Seconds between checks while the daemon runs (it also "
                              "checks at start).")

    @property
    def any(self) -> bool:
        return any(d is not None for d in (self.events_days, self.audit_days, self.attendance_days,
                                            self.analyses_days))
