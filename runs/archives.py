"""A directory's files as a tar stream: header, content, padding, a chunk at a time, so a
web process serves an export of any size without holding it (no Django)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

BLOCK = 512
CHUNK = 1 << 20


def _header(name: str, path: Path) -> tuple[bytes, int]:
    stat = path.stat()
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
    return info.tobuf(tarfile.PAX_FORMAT), stat.st_size


def tar_size(files: Sequence[tuple[str, Path]]) -> int:
    """The length of tar_stream's output for ``files``, for Content-Length."""
    total = 2 * BLOCK  # the end-of-archive marker
    for name, path in files:
        header, size = _header(name, path)
        total += len(header) + size + (-size) % BLOCK
    return total


def tar_stream(files: Sequence[tuple[str, Path]], chunk: int = CHUNK) -> Iterator[bytes]:
    """An uncompressed POSIX tar of ``files`` ((name in the archive, path) each), the same
    bytes tarfile would write; safetensors do not compress, so gzip would only cost CPU."""
    for name, path in files:
        header, size = _header(name, path)
        yield header
        with path.open("rb") as handle:
            left = size
            while left > 0:
                data = handle.read(min(chunk, left))
                if not data:  # the file shrank while streaming: the archive would be corrupt
                    raise OSError(f"{path} changed while it was being archived")
                left -= len(data)
                yield data
        if size % BLOCK:
            yield b"\0" * (BLOCK - size % BLOCK)
    yield b"\0" * (2 * BLOCK)
