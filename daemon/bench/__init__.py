"""Benchmarks behind ``facestream bench``: the pipeline on a file (``pipeline``), real-time RTSP cameras
(``live``, with GStreamer's RTSP server in ``rtsp_server``/``rtsp_serve``), the web page's cost (``http_page``),
long runs (``soak``) and the centroid search at up to 10^6 identities (``match``). Only the command line imports
this package."""
