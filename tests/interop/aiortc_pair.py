"""An aiortc sender and an aiortc receiver, for comparing another sender's
behaviour with meshcam's behind a link that narrows (driven by
tests/interop/aiortc_pair_narrowing.sh).

The receiver is the one of tests/interop/aiortc_viewer.py at the same
defaults; the sender is aiortc's own: libvpx VP8 from a moving test
picture (FFmpeg's `testsrc2` through PyAV), its rate set by the receiver's
REMB (aiortc negotiates `abs-send-time` with itself), between 250 kbit/s
and 1.5 Mbit/s; it resends what the receiver's NACKs name from its history.
No signalling server: the offer and the answer (with every candidate in
them, aiortc does not trickle) are files in a shared directory.

    aiortc_pair.py send --dir D [--width W --height H]
    aiortc_pair.py recv --dir D

The receiver writes the wall clock time of each decoded frame's arrival
to D/frames, a line each; the sender, every 100 ms, the time and the bytes
it has sent to D/sent.
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer  # noqa: E402

# Nothing leaves the namespaces: no STUN server (aiortc's default is one on
# the Internet).
CONFIG = RTCConfiguration(iceServers=[])


async def wait_for_file(path: Path, deadline_s: float = 30.0) -> dict:
    end = time.monotonic() + deadline_s
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"no {path} within {deadline_s} s")
        await asyncio.sleep(0.05)
    return json.loads(path.read_text())


def write_description(path: Path, description) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"sdp": description.sdp, "type": description.type}))
    tmp.rename(path)


async def send(args) -> None:
    pc = RTCPeerConnection(CONFIG)
    player = MediaPlayer(
        f"testsrc2=size={args.width}x{args.height}:rate=30", format="lavfi"
    )
    transceiver = pc.addTransceiver(player.video, direction="sendonly")
    codecs = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences(
        [c for c in codecs if c.mimeType in ("video/VP8", "video/rtx")]
    )
    await pc.setLocalDescription(await pc.createOffer())
    write_description(args.dir / "offer.json", pc.localDescription)
    answer = await wait_for_file(args.dir / "answer.json")
    await pc.setRemoteDescription(RTCSessionDescription(**answer))
    out = open(args.dir / "sent", "w", buffering=1)
    while True:
        stats = await pc.getStats()
        sent = sum(s.bytesSent for s in stats.values() if s.type == "outbound-rtp")
        out.write(f"{time.time():.4f} {sent}\n")
        await asyncio.sleep(0.1)


async def recv(args) -> None:
    pc = RTCPeerConnection(CONFIG)
    out = open(args.dir / "frames", "w", buffering=1)

    async def play(track) -> None:
        while True:
            await track.recv()
            out.write(f"{time.time():.4f}\n")

    pc.on("track", lambda track: asyncio.ensure_future(play(track)))
    offer = await wait_for_file(args.dir / "offer.json")
    await pc.setRemoteDescription(RTCSessionDescription(**offer))
    await pc.setLocalDescription(await pc.createAnswer())
    write_description(args.dir / "answer.json", pc.localDescription)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["send", "recv"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args()
    asyncio.run(send(args) if args.role == "send" else recv(args))


if __name__ == "__main__":
    main()
