"""Published checkpoints on the Hugging Face Hub, named ``hf://OWNER/NAME`` or ``hf://OWNER/NAME@REVISION``
(``hf://Datadog/Toto-Open-Base-1.0``).

They are read from the snapshot huggingface_hub keeps in its cache (``HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``), downloaded on first use: ``config.json`` and ``model.safetensors``, or the index
and every shard it lists, nothing else. Its environment applies: ``HF_TOKEN`` for private repositories,
``HF_HUB_OFFLINE=1`` to read the cache only, ``HF_ENDPOINT`` for a mirror (read when called, not at import).

One request first asks the Hub for the config, within ``PROBE_TIMEOUT_S``: a Hub that cannot be reached
(no network, a firewall, a closed mirror) is known at once, the cache serves a model downloaded before, and
one error names the remedies otherwise, instead of huggingface_hub's retries (five, about 25 s) per file.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from ..storage import HUB_PREFIX
from .files import CheckpointError
from .torch_format import CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE, index_shards

# Long enough for a slow link to answer one HEAD request; a refused connection or a failed DNS lookup fails at once.
PROBE_TIMEOUT_S = 3.0
_NAME = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")


def hint(path) -> str:
    """For a missing local ``path`` shaped like a Hub model id (``Datadog/Toto-Open-Base-1.0``): how to name it."""
    text = str(path)
    if "://" in text or text.startswith(("/", ".")) or _NAME.fullmatch(text) is None:
        return ""
    return f" (a model on the Hugging Face Hub is named {HUB_PREFIX}{text})"


def download(name: str) -> Path:
    """The local snapshot directory of the checkpoint ``hf://OWNER/NAME[@REVISION]``: its config and weights."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    match = _NAME.fullmatch(str(name)[len(HUB_PREFIX) :])
    if match is None:
        raise CheckpointError(f"{name}: a Hugging Face Hub checkpoint is named hf://OWNER/NAME[@REVISION]")
    repo, revision = match["repo"], match["revision"]
    endpoint = os.environ.get("HF_ENDPOINT")
    unreachable = None if constants.HF_HUB_OFFLINE else _unreachable(repo, revision, endpoint)
    cache_only = constants.HF_HUB_OFFLINE or unreachable is not None

    def fetch(file: str) -> Path:
        return Path(hf_hub_download(repo, file, revision=revision, endpoint=endpoint, local_files_only=cache_only))

    file = CONFIG_FILE
    try:
        snapshot = fetch(file).parent
        try:
            fetch(file := WEIGHTS_FILE)
        except EntryNotFoundError as no_weights:  # absent, or (offline) not in the cache: a sharded checkpoint?
            try:
                index = fetch(file := INDEX_FILE)
            except EntryNotFoundError:
                file = WEIGHTS_FILE
                raise no_weights from None
            for file in index_shards(index):
                fetch(file)
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{name}: the Hugging Face Hub has no model {repo} (or it is private or gated: log in with "
            "`hf auth login` or set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{name}: the Hub model {repo} has no revision {revision!r}") from None
    except EntryNotFoundError as error:
        if not isinstance(error, LocalEntryNotFoundError):
            missing = f"{WEIGHTS_FILE} (or {INDEX_FILE})" if file == WEIGHTS_FILE else file
            raise CheckpointError(f"{name} is not a checkpoint: the Hub model {repo} has no {missing}") from None
        if cache_only:
            raise _not_cached_error(name, file, unreachable, endpoint) from None
        raise _download_error(name, file, error) from None
    except (HfHubHTTPError, OSError) as error:
        raise _download_error(name, file, error) from None
    if unreachable is not None:
        warnings.warn(f"{name}: the Hugging Face Hub cannot be reached ({unreachable}); using the copy in the cache",
                      stacklevel=3)  # fmt: skip
    return snapshot


def _unreachable(repo: str, revision: str | None, endpoint: str | None) -> str | None:
    """Why the Hub cannot be reached (no answer to one request within PROBE_TIMEOUT_S), or None if it answers
    (an HTTP error is an answer: the downloads report it)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo, CONFIG_FILE, revision=revision, endpoint=endpoint),
                             timeout=PROBE_TIMEOUT_S, endpoint=endpoint)  # fmt: skip
    except HfHubHTTPError:
        return None
    except Exception as error:  # any failure to get an answer: DNS, refused connection, timeout, proxy, TLS
        return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
    return None


def _not_cached_error(name: str, file: str, unreachable: str | None, endpoint: str | None) -> CheckpointError:
    from huggingface_hub import constants

    why = ("HF_HUB_OFFLINE is set" if unreachable is None
           else f"the Hugging Face Hub ({endpoint or constants.ENDPOINT}) cannot be reached ({unreachable})")  # fmt: skip
    return CheckpointError(
        f"{name}: {why} and {file} is not in the Hub cache ({constants.HF_HUB_CACHE}). Download it once with network "
        "access (HF_ENDPOINT names a mirror), or load it from a local path: a directory with config.json and "
        "model.safetensors, e.g. from `hf download OWNER/NAME --local-dir DIR` on a machine with network access."
        + ("" if unreachable is None else " HF_HUB_OFFLINE=1 reads the cache without trying the network.")
    )


def _download_error(name: str, file: str, error: Exception) -> CheckpointError:
    detail = " ".join(str(error).split())[:300]
    return CheckpointError(
        f"{name}: cannot download {file} from the Hugging Face Hub ({type(error).__name__}: {detail})"
    )
