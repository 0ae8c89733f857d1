"""Published checkpoints on the Hugging Face Hub, named ``hf://OWNER/NAME`` or ``hf://OWNER/NAME@REVISION``
(``hf://Datadog/Toto-Open-Base-1.0``).

They are read from the snapshot huggingface_hub keeps in its cache (``HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``), downloaded on first use: ``config.json`` and ``model.safetensors``, or the index
and every shard it lists, nothing else. Its environment applies: ``HF_TOKEN`` for private repositories,
``HF_HUB_OFFLINE=1`` to read the cache only, ``HF_ENDPOINT`` for a mirror (read when called, not at import).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..storage import HUB_PREFIX
from .files import CheckpointError
from .torch_format import CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE, index_shards

_NAME = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")


def hint(path) -> str:
    """For a missing local ``path`` shaped like a Hub model id (``Datadog/Toto-Open-Base-1.0``): how to name it."""
    text = str(path)
    if "://" in text or text.startswith(("/", ".")) or _NAME.fullmatch(text) is None:
        return ""
    return f" (a model on the Hugging Face Hub is named {HUB_PREFIX}{text})"


def download(name: str) -> Path:
    """The local snapshot directory of the checkpoint ``hf://OWNER/NAME[@REVISION]``: its config and weights."""
    from huggingface_hub import hf_hub_download
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

    def fetch(file: str) -> Path:
        return Path(hf_hub_download(repo, file, revision=revision, endpoint=os.environ.get("HF_ENDPOINT")))

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
        raise _download_error(name, file, error) from None
    except (HfHubHTTPError, OSError) as error:
        raise _download_error(name, file, error) from None
    return snapshot


def _download_error(name: str, file: str, error: Exception) -> CheckpointError:
    detail = " ".join(str(error).split())[:300]
    return CheckpointError(
        f"{name}: cannot download {file} from the Hugging Face Hub ({type(error).__name__}: {detail})"
    )
