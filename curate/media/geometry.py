"""Frame geometry: output sizes for resize-to-cover + centre crop and for longer-side scaling, in Python and
as the ffmpeg filters that compute the same sizes.

One place for the rounding, because users compare our numbers with torchvision/open_clip: torchvision's
`Resize(int)` sets the shorter side and truncates the longer one (`int(size * long / short)`), and its
`CenterCrop` offsets are `int(round((side - crop) / 2))` (Python's round: halves go to even).
Every resize in the package (numpy/cv2, torch, PIL, ffmpeg) takes its sizes from here; only the
resampling filter differs per library.
"""

from __future__ import annotations

import math


def cover_size(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """(h, w) with the aspect ratio kept that covers target_h x target_w; for a square target this is
    exactly torchvision's Resize(target) (shorter side = target, longer side truncated)."""
    if target_h * width >= target_w * height:  # the height is the binding side
        return target_h, max(target_w, int(target_h * width / height))
    return max(target_h, int(target_w * height / width)), target_w


def center_crop_box(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """(top, left) of a crop_h x crop_w centre crop, as torchvision's CenterCrop computes it."""
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))


def longer_side_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) scaled (down or up) so the longer side is exactly `side`; shorter side rounded, >= 1."""
    if height >= width:
        return side, max(1, round(width * side / height))
    return max(1, round(height * side / width)), side


def fit_within_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) scaled down so the longer side is at most max_side (never up), shorter side rounded, >= 1."""
    if max(height, width) <= max_side:
        return height, width
    return longer_side_size(height, width, max_side)


def _even_floor(value: int) -> int:
    return max(2, value - value % 2)


def even_fit_within_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """fit_within_size with both sides even, as H.264 in 4:2:0 needs: the longer side min(longer, max_side)
    rounded down to even, the shorter one the nearest even number (halves up) to the aspect-kept length.
    Within 1 px of fit_within_size when the longer side comes out unrounded (an even max_side it is reduced
    to), else within 2 px; ffmpeg_fit_within computes the same sizes."""
    longer, shorter = max(height, width), min(height, width)
    out_long = min(_even_floor(longer), _even_floor(max_side))
    out_short = max(2, 2 * math.floor(shorter * out_long / (2 * longer) + 0.5))
    return (out_short, out_long) if width >= height else (out_long, out_short)


def ffmpeg_fit_within(max_side: int) -> str:
    """ffmpeg scale filter (area resampling) to even_fit_within_size(ih, iw, max_side), evaluated by ffmpeg on
    the decoded (auto-rotated) frame size."""
    cap = _even_floor(max_side)

    def long(side: str) -> str:
        return f"min(2*trunc({side}/2),{cap})"

    width = f"if(gte(iw,ih),{long('iw')},max(2,2*floor(iw*{long('ih')}/(2*ih)+0.5)))"
    height = f"if(gte(iw,ih),max(2,2*floor(ih*{long('iw')}/(2*iw)+0.5)),{long('ih')})"
    return f"scale='{width}':'{height}':flags=area"


def ffmpeg_cover_crop(target_h: int, target_w: int) -> str:
    """ffmpeg filters for cover_size (area resampling) then the center_crop_box crop: the same sizes and
    offsets as torchvision. The offset expression is Python's round-half-even of (in - out) / 2, and
    exact=1 keeps ffmpeg from moving it to an even column for 4:2:0 chroma."""
    binding = f"gte({target_h}*iw,{target_w}*ih)"
    width = f"if({binding},max({target_w},trunc({target_h}*iw/ih)),{target_w})"
    height = f"if({binding},{target_h},max({target_h},trunc({target_w}*ih/iw)))"

    def offset(side: str, out: str) -> str:
        half = f"trunc(({side}-{out})/2)"
        return f"{half}+mod({side}-{out},2)*mod({half},2)"

    return (f"scale='{width}':'{height}':flags=area,"
            f"crop={target_w}:{target_h}:'{offset('iw', 'ow')}':'{offset('ih', 'oh')}':exact=1")
