"""The gallery: who is enrolled, with their templates and calibration, and how photos become templates.

``store`` (the interface every backend offers, and the switch by location), ``sqlite`` (the file backend),
``postgres`` (a database every host of a site shares), ``follow`` (a daemon following such a gallery live),
``migrate`` (copying a gallery between backends),
``cache`` (embeddings by photo hash), ``stills`` (photos to embeddings), ``photo_list`` (which photo shows
whom: a folder per identity or a CSV), ``enrol`` (quality gates, centroids, building and enrolling),
``video`` (enrolment from a clip), ``calibration`` and ``operating_point`` (the threshold and margin).
"""

from pipeline.gallery import postgres as _postgres  # noqa: F401  (registers the database backend)
from pipeline.gallery import sqlite as _sqlite  # noqa: F401  (registers the file backend)
from pipeline.gallery.store import Gallery, GalleryError, Identity

__all__ = ["Gallery", "GalleryError", "Identity"]
