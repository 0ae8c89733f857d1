"""Reading and writing model checkpoints: the reference's PyTorch layout and the native orbax layout."""

from __future__ import annotations

from pathlib import Path

from .torch_format import CheckpointError, export_torch, is_torch_checkpoint, load_torch_checkpoint


def load(path: str | Path, *, dtype: str | None = None, mesh=None, rules=None):
    """Load a ``Toto`` model from a PyTorch/Hugging Face checkpoint directory (``model.safetensors`` +
    ``config.json``), telling the layouts apart by their files.

    ``dtype`` overrides the computation dtype (parameters stay float32). With ``mesh``, parameters are
    placed directly with the shardings their logical axes map to under ``rules``.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    shardings = None
    if mesh is not None:
        shardings = _shardings_for(path, dtype, mesh, rules)
    if is_torch_checkpoint(path):
        return load_torch_checkpoint(path, dtype=dtype, shardings=shardings)
    raise CheckpointError(f"{path} is not a checkpoint: expected model.safetensors + config.json")


def _shardings_for(path, dtype, mesh, rules):
    from flax import nnx

    from ..model.toto import Toto
    from ..sharding import DEFAULT_RULES, state_shardings
    from .torch_format import read_torch_checkpoint

    config, _ = read_torch_checkpoint(path)
    if dtype is not None:
        config = config.replace(dtype=dtype)
    abstract = nnx.eval_shape(lambda: Toto(config, rngs=nnx.Rngs(0)))
    return state_shardings(nnx.state(abstract), mesh, rules or DEFAULT_RULES)


__all__ = ["CheckpointError", "export_torch", "load", "load_torch_checkpoint"]
