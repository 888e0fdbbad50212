"""Where a site's records live: the attendance book (``attendance``), the door audit (``audit``) and the
unknown visitors (``unknowns``), each an interface with its backends and one ``open_*`` switch by location;
SQLite and JSONL are the embedded defaults. The gallery's store lives with the gallery code in
``pipeline/gallery/store.py`` (the offline tools use it too). A new backend goes behind these interfaces,
never beside them.
"""
