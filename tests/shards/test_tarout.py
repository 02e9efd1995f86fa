import io
import os
import tarfile

import pytest

from curate.shards import tarout
from curate.shards.tarout import TarOutput


def read_all(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def test_members_read_back_with_tarfile(tmp_path):
    media = tmp_path / "clip.mp4"
    media.write_bytes(os.urandom(3 * (1 << 20) + 17))
    out = tmp_path / "out.tar"
    tar = TarOutput(str(out), mtime=1_700_000_000)
    tar.add_file("a.mp4", str(media))
    tar.add_bytes("a.txt", "légende".encode())
    tar.add_bytes("a.json", b"")
    tar.close()
    assert read_all(out) == {"a.mp4": media.read_bytes(), "a.txt": "légende".encode(), "a.json": b""}
    assert os.path.getsize(out) % tarfile.RECORDSIZE == 0
    with tarfile.open(out) as t:
        assert {m.mtime for m in t} == {1_700_000_000}


def test_append_continues_an_archive_written_by_tarfile(tmp_path):
    out = tmp_path / "out.tar"
    long_name = "k" * 120 + ".jpg"  # needs a PAX extended header
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((long_name, b"x" * 700), ("b.txt", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tar = TarOutput(str(out), append=True)
    assert [m.name for m in tar.members] == [long_name, "b.txt"]
    tar.add_bytes("c.txt", b"after")
    tar.close()
    assert read_all(out) == {long_name: b"x" * 700, "b.txt": b"", "c.txt": b"after"}


def test_a_file_shorter_than_its_size_is_an_error(tmp_path, monkeypatch):
    media = tmp_path / "m.bin"
    media.write_bytes(b"12345")
    monkeypatch.setattr(tarout.os, "fstat", lambda fd: os.stat_result((0,) * 6 + (10,) + (0,) * 3))
    tar = TarOutput(str(tmp_path / "out.tar"))
    with pytest.raises(OSError, match="ended 5 bytes early"):
        tar.add_file("m.bin", str(media))
    tar.close()


def test_append_reads_plain_headers_itself_and_checks_them(tmp_path, monkeypatch):
    """img2dataset's tars (plain ustar headers) are scanned without tarfile; a bad checksum is not trusted."""
    out = tmp_path / "out.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mtime in (("a.jpg", b"j" * 1000, 5), ("a.txt", b"", 5), ("a.json", b"{}", 1.5)):
            info = tarfile.TarInfo(name)  # a float mtime gets a PAX header, as webdataset's TarWriter writes
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(out) as tar:
        expected = [(m.name, m.size, m.offset_data) for m in tar]
    with monkeypatch.context() as patch:  # read without tarfile's help
        patch.setattr(tarout.tarfile, "open", None)
        members, end = tarout._scan(str(out))
    assert [(m.name, m.size, m.offset_data) for m in members] == expected
    assert expected[-1][0] == "a.json" and expected[-1][2] > 2048 and end == expected[-1][2] + 512
    data = bytearray(out.read_bytes())
    data[0] = ord("b")  # header no longer matches its checksum: tarfile's verdict (it refuses the archive)
    out.write_bytes(bytes(data))
    with pytest.raises(tarfile.ReadError):
        tarout._scan(str(out))
