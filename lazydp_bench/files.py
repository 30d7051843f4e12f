"""Files written whole or not at all.

Every file the tool writes outside the append-only record store (generated data, access
profiles, figures, CSV tables) goes through `atomic_output`: the bytes go to a temporary
file beside the target, which is renamed over it only when complete, so a crash, a full
disk or Ctrl-C leaves the old file (or none), never a truncated one.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lazydp_bench.errors import BenchError


@contextlib.contextmanager
def atomic_output(out: Path, *, compress: bool = False) -> Iterator[BinaryIO]:
    """A binary stream to a temporary file beside `out`, renamed to `out` only when the
    block completes; on any failure the temporary file is removed and `out` untouched.
    With `compress`, the stream is gzip (level 1, no timestamp: same input, same bytes).
    An OSError in the block (a full disk, say) becomes a one-line BenchError naming
    `out`, so the block should only produce and write bytes, not read other files."""
    out = Path(out)
    check_output_file(out)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(8)}.tmp")
    try:
        # O_EXCL: never another writer's file; mode 0o666 less the umask, as open() gives
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise BenchError(f"cannot write {out}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as raw:
            if compress:
                name = out.name.removesuffix(".gz")
                with gzip.GzipFile(name, "wb", compresslevel=1, fileobj=raw, mtime=0) as z:
                    yield z
            else:
                yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise BenchError(f"cannot write {out}: {exc.strerror or exc}") from exc
        raise


def write_bytes(out: Path, data: bytes) -> None:
    """`data` into `out`, whole or not at all."""
    with atomic_output(out) as f:
        f.write(data)


def check_output_file(out: Path) -> None:
    """Raise a one-line BenchError unless `out` names a file `atomic_output` can create:
    not a folder, in a folder that exists and that this user may write. Commands call it
    on their outputs before any work, so a bad path costs nothing."""
    try:
        if out.is_dir():
            raise BenchError(f"{out} is a directory; give a file name")
        if not out.parent.is_dir():
            raise BenchError(f"cannot write {out}: folder {out.parent} does not exist")
    except OSError as exc:  # a folder on the way that the user may not enter
        raise BenchError(f"cannot write {out}: {exc.strerror or exc}") from exc
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise BenchError(f"cannot write {out}: permission denied on folder {out.parent}")
