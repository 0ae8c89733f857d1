"""Reading and writing model checkpoints: the native orbax layout and the reference's PyTorch layout.

``load`` tells the layouts apart by their files: ``model.safetensors`` (PyTorch / Hugging Face), the
native marker or ``state/`` directory (``save``), or a training run directory (``toto_jax.train``).
"""

from __future__ import annotations

from pathlib import Path

from .. import storage
from . import hub
from .files import CheckpointError
from .native import is_native_checkpoint, load_native, save_native
from .torch_format import export_torch, is_torch_checkpoint, load_torch_checkpoint

_ASSETS = Path(__file__).resolve().parent.parent / "assets"
# The small models trained here and shipped inside the package, loadable by name
# (experiments/pretrain_small.md, experiments/toto2_small.md).
BUNDLED_MODELS = {"toto1-small": _ASSETS / "toto1_small", "toto2-small": _ASSETS / "toto2_small"}
DEFAULT_MODEL = "default"
# The better of the two (experiments/toto2_small.md): toto2-small wins at every held-out term but MASE at 480
# steps, where toto1-small keeps the lower figure, as it does CRPS at 48 steps on validation; and toto1-small
# has the better one-step forecasts that detection scores (NAB 73.0 against 65.6).
DEFAULT_MODEL_NAME = "toto1-small"
DEFAULT_MODEL_DIRECTORY = BUNDLED_MODELS[DEFAULT_MODEL_NAME]
# For --help: each shipped model's scores on the 19 held-out NAB / cloud-monitoring series (MASE / CRPS as ratios
# to seasonal naive, geometric means over the series, < 1 beats it), so that a user can choose.
BUNDLED_MODELS_HELP = (
    "Shipped models, scored on 19 held-out NAB and cloud-monitoring series (MASE / CRPS divided by seasonal "
    "naive's, < 1 beats it; at 48 / 480 / 720 steps): 'toto1-small' (= 'default'; Toto 1.0, sample paths): "
    "0.52 / 0.43, 0.95 / 0.88, 0.88 / 0.81 (experiments/pretrain_small.md). 'toto2-small' (Toto 2.0, "
    "quantiles; forecast beyond 128 steps with --decode-block-size 128, the longest span it was trained to "
    "fill): 0.51 / 0.41, 0.97 / 0.84, 0.84 / 0.72 (experiments/toto2_small.md)."
)


def save(model, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` (Toto 1.0 or 2.0) as a native checkpoint (orbax arrays + config.json), atomically.

    A non-empty ``directory`` is only replaced with ``overwrite=True``. ``gs://`` and ``s3://`` URLs work
    too (``toto-jax[cloud]``).
    """
    return save_native(model, directory, overwrite=overwrite)


def load(path: str | Path, *, dtype: str | None = None, mesh=None, rules=None):
    """Load a ``Toto`` (Toto 1.0) or ``Toto2`` (Toto 2.0) from a native checkpoint, a PyTorch/Hugging Face
    checkpoint (``config.json`` + ``model.safetensors``, shards listed in ``model.safetensors.index.json``,
    or the ``.safetensors`` file itself) or a training run directory. The family is told from the files.

    ``"default"`` is the better of the small models shipped with the package, ``"toto1-small"`` and
    ``"toto2-small"`` name each (a local path of the same name wins). ``dtype`` overrides the computation dtype
    (parameters stay float32). With ``mesh``, every parameter is placed directly with the sharding its
    logical axes map to under ``rules`` (default rules if None). ``path`` may be a ``gs://`` or ``s3://``
    URL (``toto-jax[cloud]``): checkpoints are read through a temporary local copy, run directories
    (gs:// only) directly. ``hf://OWNER/NAME[@REVISION]`` is a model on the Hugging Face Hub
    (``hf://Datadog/Toto-Open-Base-1.0``), read from huggingface_hub's cache, downloaded on first use.
    """
    path = locate(path)
    storage.check_access(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}{hub.hint(path)}")
    kind = checkpoint_kind(path)
    if kind in ("torch", "native"):
        loader = load_torch_checkpoint if kind == "torch" else load_native
        single_file = path.suffix == ".safetensors"  # its config.json lies beside it
        # safetensors memory-maps local files, and orbax does not read s3://
        with storage.local_copy(path.parent if single_file else path) as local:
            try:
                return loader(local / path.name if single_file else local, dtype=dtype, mesh=mesh, rules=rules)
            except CheckpointError as error:  # name the checkpoint, not its temporary copy
                source = path.parent if single_file else path
                raise CheckpointError(str(error).replace(str(local), str(source))) from None
    if kind == "run":
        return _run_format().load_model_from_run(path, dtype=dtype, mesh=mesh, rules=rules)
    raise CheckpointError(
        f"{path} is not a checkpoint: expected model.safetensors + config.json (PyTorch), "
        "a native checkpoint (config.json + state/ + toto_jax_checkpoint.json) or a training run directory"
    )


def locate(path: str | Path):
    """The directory (or file) the checkpoint ``path`` names: a bundled model's, the local snapshot of an
    ``hf://`` model (downloaded on first use), else ``path`` itself, local or in a bucket."""
    if storage.is_hub_name(path):
        return hub.download(path)
    return bundled_model_directory(path) or storage.as_path(path)


def bundled_model_directory(name) -> Path | None:
    """The directory of the bundled model ``name`` ("default", "toto1-small", "toto2-small"), or None when
    ``name`` is not one of them or a local path of that name exists."""
    name = str(name)
    if Path(name).exists():
        return None
    if name == DEFAULT_MODEL:
        name = DEFAULT_MODEL_NAME
    if name not in BUNDLED_MODELS:
        return None
    directory = BUNDLED_MODELS[name]
    if not directory.exists():
        raise CheckpointError(f"the bundled model {name!r} is missing from this installation ({directory})")
    return directory


def checkpoint_kind(path: str | Path) -> str | None:
    """'torch', 'native', 'run' or None: what ``load`` would read ``path`` as."""
    path = storage.as_path(path)
    if not path.exists():
        return None
    if is_torch_checkpoint(path):
        return "torch"
    if is_native_checkpoint(path):
        return "native"
    run_format = _run_format()
    if run_format is not None and run_format.is_run_directory(path):
        return "run"
    return None


def _run_format():
    """``toto_jax.train.checkpointing`` when the training package is part of this build, else None."""
    import importlib

    name = "toto_jax.train.checkpointing"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name in (name, "toto_jax.train"):
            return None
        raise


__all__ = [
    "CheckpointError",
    "checkpoint_kind",
    "export_torch",
    "is_native_checkpoint",
    "is_torch_checkpoint",
    "load",
    "load_native",
    "load_torch_checkpoint",
    "locate",
    "save",
]
