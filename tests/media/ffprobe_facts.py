"""ffprobe's facts about a video stream: the reference the probes' numbers are checked against."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction


def ffprobe_stream(path: str) -> dict:
    """ffprobe's view of the first video stream: rates as Fractions, duration in seconds, frame and B-frame counts."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_frames", "-show_entries",
                          "stream=r_frame_rate,avg_frame_rate,duration,nb_frames:frame=pict_type", "-of", "json",
                          path], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    stream = info["streams"][0]
    return {"r_frame_rate": Fraction(stream["r_frame_rate"]), "avg_frame_rate": Fraction(stream["avg_frame_rate"]),
            "duration": float(stream["duration"]), "nb_frames": int(stream["nb_frames"]),
            "b_frames": sum(frame["pict_type"] == "B" for frame in info["frames"])}
