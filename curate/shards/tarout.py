"""An append-only tar file: media copied in large GIL-free chunks, and a fast scan of existing archives.

tarfile.addfile copies in 16 KiB pieces (2.8 ms per 3.65 MB clip; 1 MiB pieces: 0.97 ms), and reading an
img2dataset tar's headers with tarfile is ~3x slower than the scan here. Headers still come from tarfile
(TarInfo.tobuf), so the archive is a plain PAX tar that any reader accepts.
"""

from __future__ import annotations

import os
import tarfile

BLOCK = tarfile.BLOCKSIZE


def _padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy(src: int, dst: int, count: int) -> None:
    """`count` bytes from the current offset of fd `src` to that of fd `dst`, 1 MiB at a time (the GIL is
    released in each call). Measured per 3.65 MB clip: 0.97 ms, vs 1.3 ms for copy_file_range and sendfile
    on this ext4 and 2.8 ms for tarfile's 16 KiB copy."""
    while count:
        chunk = os.read(src, min(count, 1 << 20))
        if not chunk:
            raise OSError(f"source file ended {count} bytes early")
        _write(dst, chunk)
        count -= len(chunk)


def _header(block: bytes) -> tuple[bytes, str, int]:
    """(type flag, name, size) of a ustar header block; ValueError when it is not one or its checksum fails."""
    if block[257:262] != b"ustar" or block[124] & 0x80:
        raise ValueError("not a plain ustar header")
    stored = int(block[148:156].strip(b"\0 ") or b"-1", 8)
    if stored != 256 + sum(block[:148]) + sum(block[156:]):
        raise ValueError("header checksum mismatch")
    name, prefix = block[:100].split(b"\0", 1)[0], block[345:500].split(b"\0", 1)[0]
    name = (prefix + b"/" + name if prefix else name).decode("utf-8", "surrogateescape")
    return block[156:157], name, int(block[124:136].strip(b"\0 ") or b"0", 8)


def _pax_records(data: bytes) -> dict[str, str]:
    """'LEN key=value\n' records of a PAX extended header."""
    records, i = {}, 0
    while i < len(data) and data[i:i + 1] != b"\0":
        length = int(data[i:data.index(b" ", i)])
        if length <= 0:
            raise ValueError("bad PAX record length")
        key, _, value = data[data.index(b" ", i) + 1:i + length - 1].partition(b"=")
        records[key.decode()] = value.decode("utf-8", "surrogateescape")
        i += length
    return records


def _scan(path: str) -> tuple[list[tarfile.TarInfo], int]:
    """Members and end offset (where the end-of-archive blocks start) of an existing archive. Regular files
    with ustar and per-member PAX headers (what tarfile, hence img2dataset, writes) are read here, ~5x
    faster than tarfile; an archive with anything else (GNU long names, links...) is left to tarfile."""
    members, pos, pax = [], 0, {}
    with open(path, "rb") as f:
        try:
            while True:
                block = f.read(BLOCK)
                if len(block) < BLOCK or not any(block):
                    return members, pos
                kind, name, size = _header(block)
                if kind == b"x":
                    pax = _pax_records(f.read(size))
                elif kind in (b"0", b"\0"):
                    info = tarfile.TarInfo(pax.get("path", name))
                    info.size, info.offset_data = int(pax.get("size", size)), pos + BLOCK
                    members.append(info)
                    size, pax = info.size, {}
                else:
                    raise ValueError(f"member type {kind!r}")
                pos += BLOCK + size + len(_padding(size))
                f.seek(pos)
        except ValueError:
            pass
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    last = members[-1] if members else None
    return members, (last.offset_data + last.size + len(_padding(last.size)) if last else 0)


class TarOutput:
    """Members are only ever added at the end; `close()` writes the end-of-archive blocks."""

    def __init__(self, path: str, append: bool = False, mtime: int = 0):
        """With `append`, continue an existing archive after its last member (its end blocks are overwritten)."""
        self.mtime, self.members = mtime, []
        end = 0
        if append:
            self.members, end = _scan(path)
        self._file = open(path, "r+b" if append else "wb", buffering=0)  # unbuffered: fd offsets stay exact
        if append:
            self._file.seek(end)
            self._file.truncate()  # never on a new file: ext4 flushes truncated-then-rewritten files on close
        self._fd = self._file.fileno()

    def _header(self, name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, self.mtime, 0o644
        self.members.append(info)
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    def add_bytes(self, name: str, data: bytes) -> None:
        _write(self._fd, self._header(name, len(data)) + data + _padding(len(data)))

    def add_file(self, name: str, path: str) -> None:
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            _write(self._fd, self._header(name, size))
            _copy(src.fileno(), self._fd, size)
        _write(self._fd, _padding(size))

    def close(self) -> None:
        if self._file.closed:
            return
        end = self._file.tell() + 2 * BLOCK
        _write(self._fd, bytes(2 * BLOCK + (-end % tarfile.RECORDSIZE)))
        self._file.close()
