"""Serve MP4 (H.264) files over RTSP with GStreamer's RTSP server, for tests and ``bench live``.

Run by Debian's system Python (``/usr/bin/python3``, packages python3-gi gir1.2-gst-rtsp-server-1.0
gstreamer1.0-plugins-good gstreamer1.0-plugins-bad), not by facestream's interpreter; it imports
nothing of ours. ``--mount /a=FILE`` (repeatable) serves FILE at rtsp://127.0.0.1:PORT/a, paced at its
own rate (``identity sync=true``), shared between clients; the stream ends with the file. Prints
``ready`` once listening. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mount", action="append", required=True, help="/path=FILE.mp4")
    args = p.parse_args()

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for m in args.mount:
        path, _, file = m.partition("=")
        if not path.startswith("/") or not file:
            print(f"bad --mount {m!r}: use /path=FILE", file=sys.stderr)
            return 2
        launch = (f"( filesrc location={file} ! qtdemux ! h264parse ! identity sync=true ! "
                  "rtph264pay name=pay0 pt=96 config-interval=1 )")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(True)
        mounts.add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
