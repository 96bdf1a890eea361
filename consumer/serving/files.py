"""Where the batch command reads and writes: a local path or ``s3://bucket/key``, through pyarrow's filesystems.

One I/O layer for both: pyarrow reads a parquet file on S3 with ranged GETs, row group by row group (never the
whole file at once), and uploads a finished file with a multipart upload. Credentials come from the AWS default
chain (environment, profile, web identity on EKS, instance metadata); ``AWS_ENDPOINT_URL_S3`` points it at another
endpoint (a local emulator).

An output is published whole or not at all (:func:`publish`): it is written to a local staging file first, then
renamed into place (a local path) or uploaded (S3), so a run that fails leaves no partial file behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from consumer.errors import ConsumerError

__all__ = ["Location", "S3Options", "locate", "publish", "staging_file"]

S3_SCHEME = "s3://"


@dataclass(frozen=True, slots=True)
class S3Options:
    """How to reach S3: the region and an endpoint override (both optional; the settings give them)."""

    region: str | None = None
    endpoint_url: str | None = None


@dataclass(frozen=True, slots=True)
class Location:
    """A file on a filesystem: what pyarrow opens."""

    filesystem: pafs.FileSystem
    path: str
    uri: str  # as the user wrote it, for messages

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def locate(uri: str, s3: S3Options) -> Location:
    """The filesystem and path of ``uri``: ``s3://bucket/key`` or a local path."""
    if uri.startswith(S3_SCHEME):
        path = uri[len(S3_SCHEME) :]
        bucket, _, key = path.partition("/")
        if not bucket or not key or key.endswith("/"):
            raise ConsumerError(f"{uri}: an S3 location is s3://bucket/key (a file, not a prefix)")
        return Location(_s3_filesystem(s3), path, uri)
    if "://" in uri:
        raise ConsumerError(f"{uri}: only local paths and s3:// are supported")
    return Location(pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve()), uri)


def _s3_filesystem(s3: S3Options) -> pafs.S3FileSystem:
    if s3.endpoint_url is None:
        return pafs.S3FileSystem(region=s3.region)
    endpoint = urlsplit(s3.endpoint_url)
    return pafs.S3FileSystem(region=s3.region, endpoint_override=endpoint.netloc, scheme=endpoint.scheme or "https")


@contextmanager
def staging_file(destination: Location) -> Iterator[Path]:
    """A local file to write ``destination``'s content to: next to it for a local destination (the rename is then
    atomic), in a temporary folder for S3. Removed on the way out unless it was published."""
    local = isinstance(destination.filesystem, pafs.LocalFileSystem)
    folder = Path(destination.path).parent if local else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".score-", suffix=".parquet.partial", dir=folder)
    os.close(handle)
    staged = Path(name)
    try:
        yield staged
    finally:
        staged.unlink(missing_ok=True)


def publish(staged: Path, destination: Location) -> None:
    """Put the finished ``staged`` file at ``destination``: a rename on a local disk, an upload to S3 (a multipart
    upload: the object appears when it completes)."""
    if isinstance(destination.filesystem, pafs.LocalFileSystem):
        os.replace(staged, destination.path)
        return
    try:
        with (
            staged.open("rb") as source,
            destination.filesystem.open_output_stream(destination.path) as target,
        ):
            shutil.copyfileobj(source, target, length=8 * 1024 * 1024)
    except OSError as exc:
        raise ConsumerError(f"{destination.uri}: cannot write it: {exc}") from exc
