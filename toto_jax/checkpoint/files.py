"""Atomic checkpoint directories: everything is written into a hidden sibling, then renamed into place.

A reader therefore sees either no destination or a complete one, never a half-written directory that
looks valid. (Single-process writes; rename is atomic on one POSIX filesystem.)

Object stores (gs://, s3://) have no rename: the directory is staged on local disk and uploaded with
its completeness marker (``last``) after every other file, so readers that require the marker never
take a partial upload for a checkpoint.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from .. import storage


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written: missing files, missing/unexpected/mis-shaped tensors."""


def check_destination(destination, *, overwrite: bool) -> None:
    """Refuse to replace a file, or a non-empty directory unless ``overwrite``."""
    destination = storage.as_path(destination)
    if destination.exists() and not destination.is_dir():
        raise CheckpointError(f"destination {destination} exists and is not a directory")
    if destination.is_dir() and any(destination.iterdir()) and not overwrite:
        raise CheckpointError(
            f"destination {destination} is not empty; pass overwrite=True (CLI: --overwrite) to replace it"
        )


@contextlib.contextmanager
def atomic_directory(destination, *, overwrite: bool = False, last: str | None = None) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``destination``, on error it is removed.

    ``last``: the file (relative to the directory) whose presence marks it complete, uploaded last to an
    object store.
    """
    if storage.is_remote(destination):
        with _uploaded_directory(storage.as_path(destination), overwrite=overwrite, last=last) as staging:
            yield staging
        return
    destination = Path(destination).absolute()  # so that "." or "dir/" have a name to stage beside
    check_destination(destination, overwrite=overwrite)
    destination.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = destination.with_name(f".{destination.name}.partial-{token}")
    staging.mkdir()
    try:
        yield staging
        # Checked again: something may have appeared in the destination while we were writing.
        check_destination(destination, overwrite=overwrite)
        if destination.exists():
            retired = destination.with_name(f".{destination.name}.old-{token}")
            destination.rename(retired)
            staging.rename(destination)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _uploaded_directory(destination, *, overwrite: bool, last: str | None) -> Iterator[Path]:
    storage.check_access(destination)
    check_destination(destination, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="toto-jax-upload-") as scratch:
        staging = Path(scratch) / destination.name
        staging.mkdir()
        yield staging
        check_destination(destination, overwrite=overwrite)
        if destination.exists():
            storage.rmtree(destination)
        storage.upload_directory(staging, destination, last=last)
