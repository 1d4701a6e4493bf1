#!/usr/bin/python3
"""A flash and a beep made at one instant, for web/bench/lip-sync.mjs.

One GStreamer pipeline, one clock: a black picture that turns white for
100 ms and a silence that beeps (1 kHz) for the same 100 ms, every 2 s,
starting 1 s in. Both properties are set by controllers at the same running
times, and both branches end in shmsink with sync on, so a flash frame and
its beep's first samples leave this process together. The camera reads
them with shmsrc (do-timestamp): what it stamps is when they arrived.

    flash-beep.py --video SOCKET --audio SOCKET [--width 640 --height 360]

Prints {"event":"ready"} once both sockets exist, then runs until killed.
"""
import argparse
import json
import os
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstController", "1.0")
from gi.repository import GLib, Gst, GstController  # noqa: E402

PERIOD_S = 2
FLASH_S = 0.1
FLASHES = 1000


def control(element, prop, on, off):
    """`prop` of `element` is `on` for FLASH_S every PERIOD_S, else `off`."""
    source = GstController.InterpolationControlSource()
    source.set_property("mode", GstController.InterpolationMode.NONE)
    binding = GstController.DirectControlBinding.new_absolute(element, prop, source)
    element.add_control_binding(binding)
    source.set(0, off)
    for k in range(FLASHES):
        start = int((1 + k * PERIOD_S) * Gst.SECOND)
        source.set(start, on)
        source.set(start + int(FLASH_S * Gst.SECOND), off)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True)
    parser.add_argument("--audio", required=True)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    args = parser.parse_args()
    Gst.init(None)
    pipeline = Gst.parse_launch(
        "videotestsrc is-live=true pattern=black ! "
        f"video/x-raw,format=I420,width={args.width},height={args.height},framerate=30/1 ! "
        "videobalance name=flash ! "
        f"shmsink socket-path={args.video} shm-size=20000000 sync=true wait-for-connection=false "
        "audiotestsrc is-live=true wave=sine freq=1000 samplesperbuffer=480 ! "
        "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=1 ! "
        "volume name=beep volume=0 ! "
        f"shmsink socket-path={args.audio} shm-size=2000000 sync=true wait-for-connection=false"
    )
    control(pipeline.get_by_name("flash"), "brightness", 1.0, 0.0)
    control(pipeline.get_by_name("beep"), "volume", 0.5, 0.0)
    pipeline.set_state(Gst.State.PLAYING)
    deadline = time.monotonic() + 10
    while not (os.path.exists(args.video) and os.path.exists(args.audio)):
        if time.monotonic() > deadline:
            sys.exit("the shm sockets did not appear")
        time.sleep(0.05)
    print(json.dumps({"event": "ready"}), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
