"""The HTTP API and web page of a running daemon: the app and its routes (``app``, ``*_routes``), the request
guard and audit log (``guard``, ``audit``), bodies (``body``), what photo requests do (``faces``), the live
view, event hub and metrics the page reads, the uvicorn server (``server``) and its wiring onto a daemon
(``wiring``); the page's own files are in ``web/``."""
