"""Plain files beside the tables (the HTML reports) and listing the warehouse: local paths or
object-store URIs, through pyarrow's filesystems."""

from __future__ import annotations

import posixpath
import uuid

import pyarrow.fs as pafs

from segmentation.storage.delta_tables import absolute


def write_file(path: str, data: bytes) -> str:
    """Write a plain file (a report) next to the tables, local or on object storage.

    The bytes go to a temporary name first and are then moved into place, so a reader never
    sees half a file. Returns the absolute path or URI written.
    """
    location = absolute(path)
    fs, target = filesystem(location)
    fs.create_dir(posixpath.dirname(target), recursive=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, target)
    return location


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in location:
        return pafs.LocalFileSystem(), location
    uri = location.replace("s3a://", "s3://", 1)
    return pafs.FileSystem.from_uri(uri)
