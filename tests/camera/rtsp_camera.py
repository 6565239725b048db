#!/usr/bin/python3
"""A test IP camera: GStreamer's RTSP server serving live test patterns.

Run with Debian's python3 (/usr/bin/python3), which sees the gi module:

    /usr/bin/python3 tests/camera/rtsp_camera.py --port 8654 [--codec h264|h265] [--no-audio]
        [--open-gop] [--audio-only] [--user U --password P] [--size 640x360] [--fps 25] [--kbps 1500]
        [--sub-kbps 300] [--pattern smpte|snow|...]

Mount: rtsp://127.0.0.1:PORT/cam (and /sub, a 320x180 substream). Prints "ready" when
listening. Killing it (SIGTERM/SIGKILL) is how tests make the camera drop.
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402



def launch(codec, size, fps, kbps, audio, pattern, video=True, open_gop=False):
    w, h = size.split("x")
    gop = int(fps)  # one keyframe a second
    if codec == "h265" and open_gop:
        # x265's default open GOP: IDR only at the start, CRA pictures after it
        enc = (f"x265enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={gop} "
               f"option-string=\"keyint={gop}:min-keyint={gop}:open-gop=1:repeat-headers=1\" "
               f"! video/x-h265,profile=main ! rtph265pay name=pay0 pt=96 config-interval=1")
    elif codec == "h264":
        enc = (f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={gop} "
               f"bframes=0 ! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1")
    else:
        enc = (f"x265enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={gop} "
               f"option-string=\"keyint={gop}:min-keyint={gop}:open-gop=0:repeat-headers=1\" "
               f"! video/x-h265,profile=main ! rtph265pay name=pay0 pt=96 config-interval=1")
    v = (f"videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={w},height={h},framerate={fps}/1 "
         f"! timeoverlay ! videoconvert ! video/x-raw,format=I420 ! {enc}")
    a = ""
    if audio:
        a = (" audiotestsrc is-live=true wave=sine freq=440 ! audio/x-raw,rate=48000,channels=2 "
             "! audioconvert ! avenc_aac bitrate=96000 ! rtpmp4gpay name=pay1 pt=97")
    if not video:
        return f"( {a.strip().replace('pay1', 'pay0')} )"
    return f"( {v}{a} )"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8654)
    ap.add_argument("--codec", choices=["h264", "h265"], default="h264")
    ap.add_argument("--no-audio", action="store_true")
    ap.add_argument("--open-gop", action="store_true", help="H.265: CRA keyframes after the first IDR")
    ap.add_argument("--audio-only", action="store_true")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--kbps", type=int, default=1500)
    ap.add_argument("--sub-kbps", type=int, default=300)
    # "snow" (noise) makes the encoder spend its whole bitrate; the default pattern is cheap
    ap.add_argument("--pattern", default="smpte")
    ap.add_argument("--user")
    ap.add_argument("--password")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for path, size, kbps in (("/cam", args.size, args.kbps), ("/sub", "320x180", args.sub_kbps)):
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(launch(args.codec, size, args.fps, kbps, not args.no_audio, args.pattern,
                            video=not args.audio_only, open_gop=args.open_gop))
        f.set_shared(True)
        if args.user:
            f.add_role_from_structure(Gst.Structure.from_string(
                "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0])
        mounts.add_factory(path, f)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        basic = GstRtspServer.RTSPAuth.make_basic(args.user, args.password)
        auth.add_basic(basic, token)
        server.set_auth(auth)
    if server.attach(None) == 0:
        print("cannot listen", file=sys.stderr)
        sys.exit(1)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
