"""Frame geometry: output sizes for resize-to-cover + centre crop and for longer-side downscale.

One place for the rounding, because users compare our numbers with torchvision/open_clip: torchvision's
`Resize(int)` sets the shorter side and truncates the longer one (`int(size * long / short)`), and its
`CenterCrop` offsets are `int(round((side - crop) / 2))` (Python's round: halves go to even).
"""

from __future__ import annotations


def cover_size(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """(h, w) with the aspect ratio kept that covers target_h x target_w; for a square target this is
    exactly torchvision's Resize(target) (shorter side = target, longer side truncated)."""
    if target_h * width >= target_w * height:  # the height is the binding side
        return target_h, max(target_w, int(target_h * width / height))
    return max(target_h, int(target_w * height / width)), target_w


def center_crop_box(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """(top, left) of a crop_h x crop_w centre crop, as torchvision's CenterCrop computes it."""
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))


def fit_within_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) scaled down so the longer side is at most max_side (never up), shorter side rounded, >= 1."""
    longer = max(height, width)
    if longer <= max_side:
        return height, width
    scale = max_side / longer
    if height >= width:
        return max_side, max(1, round(width * scale))
    return max(1, round(height * scale)), max_side
