"""Where data lives: a local path or any fsspec URL (s3://, gs://, az://, hf://). The one module that knows fsspec.

Object stores have no rename, so publication differs by kind, with the same guarantee: a reader sees a whole
file or none. Local: write to a temporary name beside the target, fsync, rename. Remote: write to a local
staging file, then upload it as one object (a single PUT, or a multipart upload that only becomes visible when
completed). Credentials and endpoints come the standard way (AWS_* variables, AWS_ENDPOINT_URL, profiles).
"""

from __future__ import annotations

import builtins
import contextlib
import glob as _glob
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator

from curate.atomic import fsync_path, publish


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def local_path(path: str) -> str:
    return str(path)[len("file://"):] if str(path).startswith("file://") else str(path)


def absolute(path: str) -> str:
    """A URL as given (no trailing slash), a local path made absolute: what provenance and Ray tasks record."""
    return str(path).rstrip("/") if is_remote(path) else os.path.abspath(local_path(path))


def join(root: str, *parts: str) -> str:
    if is_remote(root):
        return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(local_path(root), *parts)


def parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if is_remote(path) else os.path.dirname(os.path.abspath(path))


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(path)


def filesystem(url: str):
    """(fsspec filesystem, path inside it) for a remote URL. Listings are never cached: other processes and
    nodes write the same prefix, and a stale listing would hide a completed shard."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, use_listings_cache=False)
    return fs, path


def _full(fs, path: str) -> str:
    return fs.unstrip_protocol(path)


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(local_path(path))
    fs, p = filesystem(path)
    return fs.exists(p)


def isdir(path: str) -> bool:
    if not is_remote(path):
        return os.path.isdir(local_path(path))
    fs, p = filesystem(path)
    return fs.isdir(p)


def version(path: str) -> str:
    """What changes when a file is rewritten: size and modification time (an object's ETag where the store has one)."""
    if not is_remote(path):
        stat = os.stat(local_path(path))
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    fs, p = filesystem(path)
    info = fs.info(p)
    return f"{info.get('size')}:{info.get('ETag') or info.get('LastModified') or info.get('mtime')}"


def size(path: str) -> int:
    if not is_remote(path):
        return os.path.getsize(local_path(path))
    fs, p = filesystem(path)
    return int(fs.size(p))


def glob(pattern: str) -> list[str]:
    """Sorted full paths (URLs keep their scheme) matching `pattern`; `**` recurses."""
    if not is_remote(pattern):
        return sorted(_glob.glob(local_path(pattern), recursive=True))
    fs, p = filesystem(pattern)
    return sorted(_full(fs, m) for m in fs.glob(p))


def walk_files(root: str) -> list[str]:
    """Every file under `root` (full paths, sorted)."""
    if not is_remote(root):
        return sorted(os.path.join(d, n) for d, _, names in os.walk(local_path(root)) for n in names)
    fs, p = filesystem(root)
    return sorted(_full(fs, m) for m in fs.find(p))


def open(path: str, mode: str = "rb", **kwargs):  # noqa: A001 - the storage-level open
    """A file object for reading (remote: random access by ranged reads, so tarfile/parquet can seek)."""
    if "r" not in mode:
        raise ValueError("storage.open is for reading; publish writes with put/write_bytes/write_json")
    if not is_remote(path):
        return builtins.open(local_path(path), mode, **kwargs)
    fs, p = filesystem(path)
    return fs.open(p, mode, **kwargs)


def read_range(path: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of a file: a seek and a read locally, one ranged GET remotely (no metadata request,
    no read-ahead: random access into large tars fetches only what it uses)."""
    if not is_remote(path):
        with builtins.open(local_path(path), "rb") as f:
            f.seek(start)
            return f.read(end - start)
    fs, p = filesystem(path)
    return fs.cat_file(p, start=start, end=end)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_json(path: str):
    return json.loads(read_bytes(path).decode("utf-8"))


def makedirs(path: str) -> None:
    """Local folders are created; object stores have no folders."""
    if not is_remote(path):
        os.makedirs(local_path(path), exist_ok=True)


def staging_dir(dest_dir: str) -> str:
    """Where to write files that will be published into `dest_dir`: the folder itself when local (so the
    rename stays on one filesystem), a private local temporary folder when remote (CURATE_SCRATCH or the
    system's temp)."""
    if not is_remote(dest_dir):
        makedirs(dest_dir)
        return local_path(dest_dir)
    return scratch_dir("stage")


def scratch_dir(kind: str) -> str:
    """A new private local folder for `kind` work (CURATE_SCRATCH or the system's temp). Its name carries the host
    and pid, so that a folder left by a killed process can be told from a live one's (remove_orphaned_scratch)."""
    return tempfile.mkdtemp(prefix=f"curate-{kind}-{socket.gethostname()}-{os.getpid()}-",
                            dir=os.environ.get("CURATE_SCRATCH"))


_SCRATCH = re.compile(r"^curate-[a-z]+-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+$")
_STAGED = re.compile(r"^\..+\.tmp\d*$")  # the names publish() and put() stage files under beside their target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphaned_scratch() -> list[str]:
    """Remove the scratch folders of this host's processes that are gone (a killed task leaves its folder behind);
    a live process's folder, or another host's on a shared temp, is kept. Returns the removed paths."""
    root = os.environ.get("CURATE_SCRATCH") or tempfile.gettempdir()
    host, removed = socket.gethostname(), []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(root):
            m = _SCRATCH.match(name)
            if m and m["host"] == host and not _alive(int(m["pid"])):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                removed.append(os.path.join(root, name))
    return removed


def remove_staged_files(folder: str) -> list[str]:
    """Remove the files staged for publication under local `folder` (`.NAME.tmp[PID]`) that a killed writer left;
    call it only when no writer of that folder runs. Object stores hold no staged files. Returns the removed."""
    if is_remote(folder):
        return []
    removed = []
    for parent_dir, _, names in os.walk(local_path(folder)):
        for name in names:
            if _STAGED.match(name):
                path = os.path.join(parent_dir, name)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                    removed.append(path)
    return removed


def put(staged: str, dest: str) -> None:
    """Publish the complete local file `staged` as `dest` (consumes `staged`)."""
    if not is_remote(dest):
        publish(staged, local_path(dest))
        return
    fs, p = filesystem(dest)
    fs.put_file(staged, p)
    os.remove(staged)


def abort_unfinished_uploads(prefix: str) -> int:
    """Abort the unfinished multipart uploads of objects under `prefix` (S3 only; elsewhere nothing to do).
    A process killed while uploading a large object leaves its parts in the bucket, invisible but stored and
    billed; the writer of a shard calls this before writing it again. Returns how many were aborted."""
    if not is_remote(prefix):
        return 0
    fs, p = filesystem(prefix)
    if "s3" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return 0
    bucket, _, key_prefix = p.partition("/")
    uploads = [u for u in fs.list_multipart_uploads(bucket) if u["Key"].startswith(key_prefix)]
    for upload in uploads:
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return len(uploads)


def write_bytes(dest: str, data) -> None:
    """Publish `data` (bytes, or any C-contiguous buffer such as a numpy array: written without a copy
    locally) as `dest`, whole or not at all."""
    if not is_remote(dest):
        tmp = os.path.join(os.path.dirname(local_path(dest)), f".{os.path.basename(dest)}.tmp{os.getpid()}")
        with builtins.open(tmp, "wb") as f:
            f.write(data)
        publish(tmp, local_path(dest))
        return
    fs, p = filesystem(dest)
    fs.pipe_file(p, data if isinstance(data, bytes) else bytes(memoryview(data)))  # one PUT: the object appears complete or not at all


def write_json(dest: str, data) -> None:
    write_bytes(dest, json.dumps(data, indent=2, sort_keys=True, default=str).encode("utf-8"))


def remove(path: str, recursive: bool = False) -> None:
    """Remove a file (or a whole prefix with `recursive`); a missing path is not an error."""
    if not is_remote(path):
        p = local_path(path)
        if recursive and os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            os.remove(p)
        return
    fs, p = filesystem(path)
    with contextlib.suppress(FileNotFoundError):
        if recursive:
            if fs.find(p):
                fs.rm(p, recursive=True)
        elif fs.exists(p):
            fs.rm_file(p)


def read_table(path: str, **kwargs):
    """pyarrow.parquet.read_table for a local path or URL (columns=, filters= pass through)."""
    import pyarrow.parquet as pq

    if not is_remote(path):
        return pq.read_table(local_path(path), **kwargs)
    fs, p = filesystem(path)
    return pq.read_table(p, filesystem=fs, **kwargs)


def read_schema(path: str):
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        return pq.read_schema(f)


def write_table(table, dest: str, **kwargs) -> None:
    """pyarrow.parquet.write_table, published atomically (local rename, or one upload)."""
    import pyarrow.parquet as pq

    staged = os.path.join(staging_dir(parent(dest)), f".{basename(dest)}.tmp{os.getpid()}")
    try:
        pq.write_table(table, staged, **kwargs)
        if not is_remote(dest):
            fsync_path(staged)
        put(staged, dest)
    finally:
        if os.path.exists(staged):
            os.remove(staged)
        if is_remote(dest):
            shutil.rmtree(os.path.dirname(staged), ignore_errors=True)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local file path holding `path`'s bytes, for readers that need a real file (decoders, ffprobe)."""
    if not is_remote(path):
        yield local_path(path)
        return
    scratch = scratch_dir("get")
    try:
        target = os.path.join(scratch, basename(path))
        fs, p = filesystem(path)
        fs.get_file(p, target)
        yield target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def duckdb_connect(*paths: str):
    """A DuckDB connection that never downloads extensions and reads the remote URLs among `paths` through
    fsspec (DuckDB's httpfs cannot be installed offline; fsspec carries the same credentials as every stage).
    The session has its own filesystem that keeps listings: DuckDB asks each file's size and mtime a dozen times
    a query (one HEAD each without the cache), so a session reads the prefix as first listed, one snapshot."""
    import duckdb
    import fsspec

    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    registered = set()
    for path in paths:
        if is_remote(path):
            fs, _ = fsspec.core.url_to_fs(path, use_listings_cache=True, skip_instance_cache=True)
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            if protocol not in registered:
                con.register_filesystem(fs)
                registered.add(protocol)
    return con
