"""A real RTSP server for the camera tests: GStreamer's rtsp-server serving one H.264 file.

Run with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0); the project's
virtualenv has no PyGObject. Usage: rtsp_server.py FILE.mp4 PORT [MOUNT]
Prints "ready" once it listens; stops on SIGTERM or SIGINT. Every client gets its own
pipeline from the start of the file, played at the file's own frame rate.
"""

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


class FileFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def do_create_element(self, url):
        return Gst.parse_launch(
            f'filesrc location="{self.path}" ! qtdemux ! h264parse '
            "! rtph264pay name=pay0 pt=96 config-interval=1"
        )


def main():
    path, port = sys.argv[1], sys.argv[2]
    mount = sys.argv[3] if len(sys.argv) > 3 else "/stream"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = FileFactory(path)
    factory.set_shared(False)
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        sys.exit(1)
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
