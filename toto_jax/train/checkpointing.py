"""Run checkpoints with orbax: parameters, optimiser state, step, RNG, data-iterator state and config.

Layout of a run directory (``--workdir``)::

    WORKDIR/config.yaml            the training config of the latest start
    WORKDIR/checkpoints/<step>/    params, opt_state, meta (step, rng), data (iterator state), config
    WORKDIR/metrics.jsonl, WORKDIR/tensorboard/

Arrays are stored as flat ``{dotted.path: array}`` dicts so the files do not depend on how Flax/optax
containers flatten. Saves are atomic (orbax writes a temporary directory and renames it; on gs://, where
nothing renames, it writes ``commit_success.txt`` last); on restore a checkpoint half written by a run killed
mid-save, or a latest one that cannot be read, is skipped with a warning naming it and the previous one is
used (orbax deletes the half-written one when the next run starts).

``WORKDIR`` may be local or ``gs://`` (orbax-checkpoint writes its arrays through TensorStore's GCS
driver). ``s3://`` run directories are refused at start: this orbax builds OCDBT stores for local and GCS
paths only.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from .. import storage
from ..checkpoint.arrays import check_stored_shapes, restore_arrays
from ..models import split_for_training
from ..sharding import DEFAULT_RULES, state_shardings
from .config import MeshConfig, forecasting_model_config, model_config_from_dict
from .validation import BEST_DIRECTORY

CHECKPOINTS = "checkpoints"
ITEMS = ("params", "opt_state", "meta", "data", "config")
FORMAT = "toto-jax-run-1"
COMMIT_FILE = "commit_success.txt"  # orbax's completion marker where it cannot rename (gs://)
TEMPORARY_STEP = re.compile(r"\d+\.orbax-checkpoint-tmp")  # a local step orbax has not renamed yet


def run_path(workdir: str | Path):
    """``workdir`` as an absolute local path (orbax needs one) or a ``gs://`` path; s3:// is refused."""
    if storage.scheme(workdir) == "s3":
        raise storage.StorageError(
            f"{workdir}: run directories on s3:// are not supported (orbax-checkpoint writes its array stores "
            "to local and gs:// paths only); use gs:// or a local/shared filesystem"
        )
    path = storage.as_path(workdir)
    return path if storage.is_remote(workdir) else path.absolute()


def flatten(tree: Any) -> dict[str, Any]:
    """A pytree -> {dotted key path: leaf}."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path, simple=True, separator="."): leaf for path, leaf in leaves}


def unflatten(template: Any, flat: dict[str, Any]) -> Any:
    """Inverse of ``flatten`` given a tree with the same structure."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    keys = [jax.tree_util.keystr(path, simple=True, separator=".") for path, _ in paths]
    missing = [k for k in keys if k not in flat]
    if missing:
        raise KeyError(f"checkpoint lacks {len(missing)} array(s), e.g. {missing[:3]}")
    return jax.tree_util.tree_unflatten(treedef, [flat[k] for k in keys])


def _abstract(tree: Any, shardings: Any | None) -> dict[str, jax.ShapeDtypeStruct]:
    flat = flatten(tree)
    flat_shardings = flatten(shardings) if shardings is not None else {}
    return {
        k: jax.ShapeDtypeStruct(np.shape(v), v.dtype, sharding=flat_shardings.get(k)) for k, v in flat.items()
    }


class Restored(NamedTuple):
    step: int
    params: Any
    opt_state: Any
    rng: np.ndarray
    data_state: Any
    config: dict


class RunCheckpoints:
    """Save/restore training checkpoints of one run directory."""

    def __init__(self, workdir: str | Path, keep_last: int = 3, keep_every: int | None = None, async_save: bool = True):
        self.directory = run_path(workdir) / CHECKPOINTS
        _warn_half_written(self.directory)  # before the manager deletes them
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep_last,
            keep_period=keep_every,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,  # half-written saves of a killed run
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def save(self, step: int, params, opt_state, rng, data_state, config: dict) -> None:
        """Start saving; with async saves, the arrays must stay alive until ``wait()`` (pass copies)."""
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(flatten(params)),
            opt_state=ocp.args.StandardSave(flatten(opt_state)),
            meta=ocp.args.JsonSave({"format": FORMAT, "step": int(step), "rng": np.asarray(rng).tolist()}),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config),
        )
        if step in self.manager.all_steps():  # an unreadable checkpoint skipped at resume: replace it
            self.manager.delete(step)
        self.manager.save(step, args=args, force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, params_template, opt_state_template, params_shardings=None, opt_shardings=None):
        """The newest readable checkpoint (older ones after a warning for each unreadable one), or None."""
        for step in reversed(self.steps()):
            try:
                params_target = _abstract(params_template, params_shardings)
                opt_state_target = _abstract(opt_state_template, opt_shardings)
                # before orbax reads: a failed read inside orbax leaves tracebacks behind (checkpoint.arrays)
                check_stored_shapes(self.directory / str(step) / "params", params_target)
                check_stored_shapes(self.directory / str(step) / "opt_state", opt_state_target)
                args = ocp.args.Composite(
                    params=ocp.args.StandardRestore(params_target),
                    opt_state=ocp.args.StandardRestore(opt_state_target),
                    meta=ocp.args.JsonRestore(),
                    data=ocp.args.JsonRestore(),
                    config=ocp.args.JsonRestore(),
                )
                restored = self.manager.restore(step, args=args)
                meta = restored["meta"]
                if meta.get("format") != FORMAT or meta.get("step") != step:
                    raise ValueError(f"metadata {meta} does not describe step {step}")
                return Restored(
                    step=step,
                    params=unflatten(params_template, restored["params"]),
                    opt_state=unflatten(opt_state_template, restored["opt_state"]),
                    rng=np.asarray(meta["rng"], np.uint32),
                    data_state=restored["data"],
                    config=restored["config"],
                )
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is skipped
                warnings.warn(
                    f"skipping unreadable checkpoint step {step} in {self.directory} "
                    f"({type(error).__name__}: {error}); trying an older one",
                    stacklevel=2,
                )
        return None


# ---- reading a run's model (``toto_jax.load`` dispatches here) -----------------------------------


def _half_written(checkpoints) -> list:
    """The step directories under ``checkpoints`` whose save has not finished: killed mid-save, or still being
    written. Orbax renames a local step's temporary directory to its number only once the save is complete;
    on gs:// it writes the step in place and ``commit_success.txt`` last."""
    if not checkpoints.is_dir():
        return []
    if storage.is_remote(checkpoints):
        return [p for p in checkpoints.iterdir() if p.name.isdigit() and not (p / COMMIT_FILE).is_file()]
    return [p for p in checkpoints.iterdir() if TEMPORARY_STEP.match(p.name)]


def _warn_half_written(checkpoints) -> None:
    for step_dir in _half_written(checkpoints):
        warnings.warn(f"skipping half-written checkpoint {step_dir}: its save did not finish (killed mid-save, "
                      "or still being written)", stacklevel=3)  # fmt: skip


def _step_directories(path: Path, warn: bool = False) -> list[Path]:
    """``[path]`` when it is one step of a run, else the finished steps under it, newest first (``warn``: with a
    warning for each half-written one)."""
    remote = storage.is_remote(path)
    if remote:  # another process (the training run) writes here: listings cached earlier are stale
        storage.filesystem(path).invalidate_cache()

    def is_step(p) -> bool:
        return (p / "params").is_dir() and (p / "config").is_dir() and (not remote or (p / COMMIT_FILE).is_file())

    if is_step(path):
        return [path]
    root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    if warn:
        _warn_half_written(root)
    steps = sorted((int(p.name) for p in root.iterdir() if p.name.isdigit()), reverse=True)
    return [root / str(step) for step in steps if is_step(root / str(step))]


def is_run_directory(path: str | Path) -> bool:
    """True for a training run directory (``WORKDIR``), its ``checkpoints`` folder, or one step in it."""
    path = run_path(path) if storage.scheme(path) != "s3" else storage.as_path(path)
    return path.is_dir() and bool(_step_directories(path))


def load_model_from_run(path: str | Path, dtype: str | None = None, mesh=None, rules=None):
    """The model of a run: its best by validation (``WORKDIR/best``, kept by fine-tuning) when it has one,
    else its latest complete checkpoint (or the given step directory).

    Tries steps from the newest down, skipping unreadable ones with a warning.
    """
    path = run_path(path)  # orbax needs absolute paths
    best = path / BEST_DIRECTORY
    if best.is_dir():
        from ..checkpoint import load

        return load(best, dtype=dtype, mesh=mesh, rules=rules)
    candidates = _step_directories(path, warn=True) if path.is_dir() else []
    if not candidates:
        raise FileNotFoundError(f"no training checkpoint found in {path}")
    errors = []
    for step_dir in candidates:
        try:
            return _load_step(step_dir, dtype, mesh, rules)
        except Exception as error:  # noqa: BLE001
            errors.append(f"{step_dir.name}: {error}")
            warnings.warn(f"skipping unreadable checkpoint {step_dir}: {error}", stacklevel=2)
    raise ValueError(f"no readable checkpoint in {path}: " + "; ".join(errors))


def read_run_config(path: str | Path) -> dict:
    """The training config (dict form) saved with the newest finished checkpoint under ``path``."""
    candidates = _step_directories(run_path(path))
    if not candidates:
        raise FileNotFoundError(f"no training checkpoint found in {path}")
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
        return checkpointer.restore(candidates[0] / "config")


def _load_step(step_dir: Path, dtype, mesh, rules):
    config = read_run_config(step_dir)
    model_config = model_config_from_dict(config["model"])
    if "data" in config:  # a run saved by the trainer; hand-built ones may have no data section
        model_config = forecasting_model_config(model_config, config["data"]["context_length"])
    if dtype is not None:
        model_config = model_config.replace(dtype=dtype)
    graphdef, abstract_params, rest = split_for_training(model_config)
    shardings = None
    if mesh is not None:
        if rules is None:  # the run's own rules
            rules = MeshConfig(**config["mesh"]).rule_tuples() if "mesh" in config else DEFAULT_RULES
        shardings = state_shardings(abstract_params, mesh, rules)
    target = _abstract(abstract_params, shardings)
    if mesh is None:  # place on the default device
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device) for k, v in target.items()}
    restored = restore_arrays(step_dir / "params", target)  # shapes checked before any array is read
    params = unflatten(abstract_params, restored)
    return nnx.merge(graphdef, params, rest)
