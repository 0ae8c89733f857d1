"""Paths on local disk, Google Cloud Storage (``gs://``) and S3 (``s3://``) behind one type.

Local paths stay ``pathlib.Path``; object-store URLs become ``etils.epath.Path`` (the path type orbax uses),
whose fsspec backend reads and writes them through gcsfs / s3fs (the ``toto-jax[cloud]`` extra). Both offer
the same ``/``, ``exists``, ``is_dir``, ``iterdir``, ``open``, ``read_text``, ``write_text``, ``mkdir``,
``rmtree`` calls, so code written against one works on the other.

Object stores have no atomic directory rename: writers put their completeness marker last and readers
trust a directory only once it is there. Endpoints and credentials come from the clients' usual
environment: ``STORAGE_EMULATOR_HOST`` / ``TENSORSTORE_GCS_HTTP_URL`` / application-default credentials for
GCS, ``AWS_ENDPOINT_URL`` / ``AWS_ACCESS_KEY_ID`` / ... for S3.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import ssl
import tempfile
import urllib.error
import urllib.request
from typing import Iterator, Union

# gcsfs >= 2025.10 asks the gRPC storage-control API for every bucket's layout (zonal / hierarchical)
# before opening a file; without credentials or against an emulator that call retries for about a
# minute, and an unknown answer is not cached, so every open waits again. toto-jax needs neither layout:
# it is off unless the user turns it on (GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=true) before gcsfs loads.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
# fsspec logs every remote file it opens at INFO, which the CLIs show
if logging.getLogger("fsspec").level == logging.NOTSET:
    logging.getLogger("fsspec").setLevel(logging.WARNING)

REMOTE_PREFIXES = ("gs://", "s3://")
HUB_PREFIX = "hf://"  # a Hugging Face Hub model name, read by toto_jax.checkpoint.hub: not a path
CLIENT_PACKAGES = {"gs": "gcsfs", "s3": "s3fs"}
ENDPOINT_TIMEOUT_SECONDS = 10.0  # a connection attempt to an endpoint that drops packets

AnyPath = Union[pathlib.Path, "epath.Path"]  # noqa: F821 - etils is imported lazily


class StorageError(ValueError):
    """An object-store path that cannot be used: client missing, bucket missing or unreachable, no access."""


def is_remote(path) -> bool:
    return str(path).startswith(REMOTE_PREFIXES)


def is_hub_name(path) -> bool:
    return str(path).startswith(HUB_PREFIX)


def scheme(path) -> str | None:
    """'gs', 's3' or None (local)."""
    return str(path).split("://", 1)[0] if is_remote(path) else None


def as_path(path) -> AnyPath:
    """``gs://`` / ``s3://`` URLs as ``epath.Path``; anything else as ``pathlib.Path``, but for ``hf://`` Hub
    model names, which only ``toto_jax.load`` reads (pathlib would make ``hf://a/b`` a local ``hf:/a/b``)."""
    if is_hub_name(path):
        raise StorageError(
            f"{path} names a model on the Hugging Face Hub, which toto_jax.load and `toto-jax convert` read but "
            "nothing here writes or lists: write a directory and upload it (`hf upload OWNER/NAME DIRECTORY`)"
        )
    if not is_remote(path):
        return pathlib.Path(path)
    _require_client(scheme(path))
    from etils import epath

    return epath.Path(str(path))


def _require_client(name: str) -> None:
    import importlib.util

    package = CLIENT_PACKAGES[name]
    if importlib.util.find_spec(package) is None:
        raise StorageError(f"{name}:// paths need the {package} package: pip install 'toto-jax[cloud]'")


def filesystem(path):
    """The fsspec filesystem of an object-store URL (gcsfs / s3fs), e.g. for pyarrow."""
    import fsspec

    _require_client(scheme(path))
    return fsspec.filesystem(scheme(path))


def bucket_of(path) -> str:
    return str(path).split("://", 1)[1].split("/", 1)[0]


def check_access(path) -> None:
    """Fail fast, naming ``path``, when its bucket is missing or unreachable or the credentials are refused
    (a no-op for local paths). Meant for start-up, before any long work depends on the bucket."""
    if not is_remote(path):
        return
    fs = filesystem(path)
    bucket = f"{scheme(path)}://{bucket_of(path)}"
    for endpoint, client in _endpoints(fs, path).items():
        failure = _connection_failure(endpoint)
        if failure:
            raise StorageError(f"{path}: cannot reach bucket {bucket}: {client} endpoint {endpoint} does not answer "
                               f"({failure})")  # fmt: skip
    try:
        with _quiet("gcsfs"):  # it logs the traceback of the error reported below
            fs.ls(bucket_of(path), detail=False)  # one request that needs the bucket and read access to it
    except FileNotFoundError:
        raise StorageError(f"{path}: bucket {bucket} does not exist") from None
    except Exception as error:  # noqa: BLE001 - clients raise many types (HTTP, auth, connection) for the same fact
        detail = " ".join(str(error).split())[:300] or type(error).__name__
        hint = ""
        if scheme(path) == "gs" and getattr(fs.credentials, "method", None) == "anon":
            hint = ("; no Google credentials were found, so the request was anonymous (run `gcloud auth "
                    "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS)")  # fmt: skip
        raise StorageError(f"{path}: cannot access bucket {bucket} ({type(error).__name__}: {detail}){hint}") from None
    finally:
        fs.invalidate_cache()  # a listing cached now would hide what this run writes later


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _endpoints(fs, path) -> dict[str, str]:
    """The HTTP endpoints the clients will send ``path``'s requests to: {url: which client}."""
    if scheme(path) == "s3":
        return {fs.s3.meta.endpoint_url: "s3fs"}
    endpoints = {fs.base.removesuffix("/storage/v1/"): "gcsfs"}
    if os.environ.get("TENSORSTORE_GCS_HTTP_URL"):  # orbax writes run directories through TensorStore
        endpoints.setdefault(os.environ["TENSORSTORE_GCS_HTTP_URL"].rstrip("/"), "TensorStore")
    return endpoints


_answering: set[str] = set()  # endpoints that answered once in this process


def _connection_failure(endpoint: str) -> str | None:
    """Why nothing answers at ``endpoint`` (refused, unknown host, timed out), or None when something does.

    One request without retries: the clients retry a refused connection with backoff for half a minute
    (gcsfs) before they report it. Any HTTP status counts as an answer; TLS failures are left to the clients,
    which may trust other certificates. Proxies from the environment are used, as the clients use them.
    """
    if endpoint in _answering:
        return None
    try:
        request = urllib.request.Request(endpoint, method="HEAD")
        urllib.request.urlopen(request, timeout=ENDPOINT_TIMEOUT_SECONDS).close()
    except urllib.error.HTTPError:
        pass
    except OSError as error:  # URLError, timeouts, refused connections
        reason = getattr(error, "reason", error)
        if not isinstance(reason, ssl.SSLError):
            return f"{type(reason).__name__}: {reason}"
    _answering.add(endpoint)
    return None


def open_file(path, mode: str = "rb"):
    """A stream of a local file or a ``gs://`` / ``s3://`` object (read in ranges, never copied whole)."""
    if is_remote(path):
        return filesystem(path).open(str(path), mode)
    return open(path, mode)


GLOB_CHARACTERS = "*?["


def list_files(path, suffixes: tuple[str, ...]) -> list[str]:
    """The files that ``path`` names, sorted: a file, every file under a directory (recursively) or matching a
    glob (``*``, ``?``, ``[...]``, ``**``) whose name ends in one of ``suffixes`` (case-insensitive), local or in
    a bucket; a list of such paths is the concatenation. Names starting with ``.`` or ``_`` inside a directory
    (temporary files, markers) are left out, as pyarrow's datasets do. Nothing found is a ``FileNotFoundError``
    naming ``path``."""
    entries = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    files: list[str] = []
    for entry in entries:
        files.extend(_remote_files(str(entry), suffixes) if is_remote(entry) else _local_files(entry, suffixes))
    if not files:
        raise FileNotFoundError(f"no files ending in {suffixes} under {path}")
    return files


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _local_files(entry, suffixes: tuple[str, ...]) -> list[str]:
    import glob

    text = str(entry)
    if any(c in text for c in GLOB_CHARACTERS):
        return sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p) and p.lower().endswith(suffixes))
    entry = pathlib.Path(entry)
    if entry.is_dir():
        found = (p for p in entry.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
        return [str(p) for p in sorted(found) if not _hidden(p.relative_to(entry).as_posix())]
    if entry.is_file():
        return [str(entry)]
    raise FileNotFoundError(f"data path does not exist: {entry}")


def _remote_files(url: str, suffixes: tuple[str, ...]) -> list[str]:
    check_access(url)
    fs = filesystem(url)
    prefix = f"{scheme(url)}://"
    if any(c in url.split("://", 1)[1] for c in GLOB_CHARACTERS):
        return sorted(prefix + name for name in fs.glob(url) if name.lower().endswith(suffixes) and fs.isfile(name))
    if fs.isfile(url):
        return [url]
    root = url.split("://", 1)[1].rstrip("/")
    found = sorted(prefix + name for name in fs.find(url) if name.lower().endswith(suffixes)
                   and not _hidden(name[len(root):]))  # fmt: skip
    if not found and not fs.isdir(url):
        raise FileNotFoundError(f"data path does not exist: {url}")
    return found


def rmtree(path: AnyPath) -> None:
    if is_remote(path):
        filesystem(path).rm(str(path), recursive=True)
    else:
        import shutil

        shutil.rmtree(path)


@contextlib.contextmanager
def local_copy(path: AnyPath) -> Iterator[pathlib.Path]:
    """``path`` itself when local; else a temporary local copy of the remote file or directory, removed
    afterwards (for readers that need local files: memory-mapped safetensors, orbax on s3://)."""
    if not is_remote(path):
        yield pathlib.Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="toto-jax-download-") as scratch:
        local = pathlib.Path(scratch) / (path.name or "root")
        fs = filesystem(path)
        fs.invalidate_cache()  # listings cached before another writer replaced the directory are stale
        if fs.isdir(str(path)):
            local.mkdir()
            fs.get(str(path).rstrip("/") + "/", str(local) + "/", recursive=True)
        else:
            fs.get(str(path), str(local))
        yield local


def upload_directory(local: pathlib.Path, destination: AnyPath, *, last: str | None = None) -> None:
    """Copy the files under ``local`` to the remote ``destination``; the file named ``last`` (the
    completeness marker) goes up only after all the others."""
    fs = filesystem(destination)
    fs.invalidate_cache()
    root = str(destination).rstrip("/")
    files = sorted(p for p in pathlib.Path(local).rglob("*") if p.is_file())
    deferred = [p for p in files if last is not None and p.relative_to(local).as_posix() == last]
    for file in [p for p in files if p not in deferred] + deferred:
        fs.put_file(str(file), f"{root}/{file.relative_to(local).as_posix()}")
