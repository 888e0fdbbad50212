"""Where a site's records live: the attendance book (``attendance``) and the door audit (``audit``), each an
interface with its backends and one ``open_*`` switch by location; SQLite and JSONL are the embedded
defaults. The third store, the gallery, lives with the gallery code in ``pipeline/gallery/store.py`` (the
offline tools use it too). A new backend goes behind these interfaces, never beside them.
"""
