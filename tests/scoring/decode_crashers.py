"""Stand-in decode functions that kill or hang the isolated decoder process (importable by the spawned child)."""

import os
import time

from curate.scoring.frames import decode_media


def abort_decode(media, modality, k, positions, max_side):
    os.abort()


def abort_on_marker(media, modality, k, positions, max_side):
    if media == b"abort":
        os.abort()
    return decode_media(media, modality, k, positions, max_side)


def hang_decode(media, modality, k, positions, max_side):
    time.sleep(600)
