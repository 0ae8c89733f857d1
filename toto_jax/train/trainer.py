"""The sharded training program and loop.

The model is split once into a graph definition and float32 parameters; a train step is one
``jax.jit`` of a pure function ``(TrainState, batch) -> (TrainState, metrics)`` with explicit shardings
(from the parameters' logical axes and the config's rules) and the state donated.

Both model families train here; they differ in the model built and the loss (``_loss_sums``): Toto 1.0's
next-patch mixture likelihood (``loss``), Toto 2.0's masked-span pinball loss (``toto2_objective``), whose
hidden spans are drawn inside the step from ``fold_in(rng, step)`` so that a resumed run draws the same ones.
Non-parameter model state (Toto 2.0's residual taus) is fixed by the config: a constant of the program.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from ..config import TotoConfig
from ..models import build_model, is_toto2, split_for_training
from ..models.toto2.config import Toto2Config
from ..sharding import constrain, logical_to_pspec, make_mesh, state_shardings, use_mesh
from . import toto2_objective
from .config import TrainConfig, dump_config, forecasting_model_config, model_config_from_dict
from .loss import LossTerms, LossWeights, loss_terms, split_batch
from .optimizer import make_optimizer, schedule_from_config

log = logging.getLogger(__name__)

BATCH_KEYS = ("series", "padding_mask", "id_mask")
BATCH_AXES = ("batch", "variate", "time")
MASK_STREAM = 1  # fold_in tag of the masking key, apart from dropout's keys


class TrainState(NamedTuple):
    params: Any  # nnx.State of float32 nnx.Param
    opt_state: Any
    step: jax.Array  # int32 scalar: updates applied so far
    rng: jax.Array  # uint32[2] base key; step n uses fold_in(rng, n)


def build_mesh(config: TrainConfig, devices=None):
    return make_mesh(tuple(config.mesh.shape), devices=devices)


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This host's rows of the batch -> global arrays laid out by ``sharding`` (the one multi-host seam)."""
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(local_batch[key])) for key in BATCH_KEYS
    }


class TrainProgram:
    """Model structure, optimiser, shardings and the compiled init/step for one config and mesh."""

    def __init__(self, config: TrainConfig, mesh, model_config: TotoConfig | Toto2Config | None = None,
                 compiler_options=None):  # fmt: skip
        """``compiler_options``: XLA options for the compiled programs, e.g. ``{"xla_backend_optimization_level":
        0}`` trades step speed for faster compiles (tests)."""
        self.config = config
        self.compiler_options = compiler_options
        self.model_config = model_config or config.model
        self.mesh = mesh
        self.rules = config.mesh.rule_tuples()
        self.schedule = schedule_from_config(config.optimizer)
        self.loss_weights = LossWeights(**dataclasses.asdict(config.loss))
        self.is_toto2 = is_toto2(self.model_config)
        self.terms_type = toto2_objective.QuantileLossTerms if self.is_toto2 else LossTerms

        model_config = self.model_config
        self.graphdef, abstract_params, self.rest = split_for_training(model_config)
        self.tx = make_optimizer(config.optimizer, abstract_params, model_config.family)
        abstract_opt = jax.eval_shape(self.tx.init, abstract_params)
        self.abstract_state = TrainState(
            abstract_params, abstract_opt, jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((2,), jnp.uint32)
        )
        replicated = NamedSharding(mesh, PartitionSpec())
        self.state_sharding = TrainState(
            state_shardings(abstract_params, mesh, self.rules),
            state_shardings(abstract_opt, mesh, self.rules),
            replicated,
            replicated,
        )
        self.batch_sharding = NamedSharding(mesh, logical_to_pspec(BATCH_AXES, self.rules))
        self.replicated = replicated
        self.step = jax.jit(
            self._step,
            in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, replicated),
            donate_argnums=0,
            compiler_options=compiler_options,
        )

    # ---- state -------------------------------------------------------------------------------
    def init(self, seed: int, params=None) -> TrainState:
        """Fresh state: random parameters from ``seed`` (or the given ones), new optimiser state, step 0."""
        if not hasattr(self, "_create"):  # compiled once per program (runs sharing a program reuse it)
            model_config = self.model_config

            def create(seed, params):
                if params is None:
                    params = nnx.state(build_model(model_config, rngs=nnx.Rngs(jax.random.key(seed))), nnx.Param)
                return TrainState(params, self.tx.init(params), jnp.zeros((), jnp.int32), jax.random.PRNGKey(seed))

            self._create = jax.jit(create, out_shardings=self.state_sharding, compiler_options=self.compiler_options)
        if params is not None:
            params = jax.device_put(params, self.state_sharding.params)
        return self._create(jnp.asarray(seed, jnp.uint32), params)

    def place(self, state: TrainState) -> TrainState:
        return jax.device_put(state, self.state_sharding)

    def model(self, params):
        return nnx.merge(self.graphdef, params, self.rest)

    def forecaster(self, params):
        """The trained model as it is saved for forecasting: ``max_context`` capped at the training context
        (``forecasting_model_config``), the config a run directory's latest checkpoint also loads with."""
        if not hasattr(self, "_forecaster_graphdef"):
            config = forecasting_model_config(self.model_config, self.config.data.context_length)
            self._forecaster_graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0))))
        return nnx.merge(self._forecaster_graphdef, params, self.rest)

    def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        size = np.shape(local_batch["series"])[0] * jax.process_count()
        shards = math.prod(self.mesh.shape[axis] for axis in _batch_mesh_axes(self.batch_sharding))
        accumulation = self.config.optimizer.accumulation_steps
        if size % (shards * accumulation):
            raise ValueError(
                f"global batch size {size} must be a multiple of the {shards} batch shards times "
                f"optimizer.accumulation_steps ({accumulation})"
            )
        return global_batch(local_batch, self.batch_sharding)

    # ---- the step ----------------------------------------------------------------------------
    def zero_terms(self):
        return self.terms_type(*(jnp.zeros((), jnp.float32),) * len(self.terms_type._fields))

    def _loss_sums(self, params, batch, dropout_key):
        if self.is_toto2:
            return self._toto2_loss_sums(params, batch)
        (series, padding_mask, id_mask), (target, target_mask) = split_batch(
            batch["series"], batch["padding_mask"], batch["id_mask"], self.model_config.patch_size
        )
        if "scored" in batch:  # validation: only the held-out steps count
            target_mask = target_mask & batch["scored"][..., self.model_config.patch_size :]
        output = self.model(params)(
            series,
            padding_mask,
            id_mask,
            num_exogenous_variables=self.config.num_exogenous_variables,
            dropout_key=dropout_key,
        )
        terms = loss_terms(
            output.distribution,
            output.loc,
            output.scale,
            target,
            target_mask,
            num_exogenous_variables=self.config.num_exogenous_variables,
            weights=self.loss_weights,
        )
        return terms.loss, terms

    def _toto2_loss_sums(self, params, batch):
        """Training batches carry ``hidden`` (drawn in the step); validation windows hide their scored
        (held-out) patches, which makes the validation loss a forecast of the held-out steps."""
        patch = self.model_config.patch_size
        series, observed, series_ids = toto2_objective.model_inputs(
            batch["series"], batch["padding_mask"], batch["id_mask"]
        )
        counted = observed
        if "scored" in batch:
            scored = batch["scored"].reshape(*batch["scored"].shape[:-1], -1, patch).any(-1)
            hidden = jnp.repeat(scored, patch, axis=-1)
            counted = observed & batch["scored"]
        else:
            hidden = batch["hidden"]
        output = self.model(params)(series, observed, series_ids, hidden=hidden)
        terms = toto2_objective.quantile_loss_terms(
            output, series, counted, hidden, patch, self.config.num_exogenous_variables,
            score_visible=self.config.masking.score_visible and "scored" not in batch,
        )
        return terms.loss, terms

    def hidden_spans(self, rng, step, shape) -> jax.Array:
        """The step's hidden points [batch, variate, time] (Toto 2.0), from ``rng`` and the step alone."""
        key = jax.random.fold_in(jax.random.fold_in(rng, step), MASK_STREAM)
        return toto2_objective.hidden_spans(key, shape, self.model_config.patch_size, self.config.masking,
                                            self.config.num_exogenous_variables)  # fmt: skip

    def validation_loss(self, params, windows: dict[str, np.ndarray]) -> float:
        """Mean training loss over the scored points of ``windows`` (``validation.validation_windows``), in
        chunks of the batch size; every process passes the same windows."""
        if not hasattr(self, "_validation_terms"):
            def terms(params, batch):
                with use_mesh(self.mesh, self.rules):
                    return self._loss_sums(params, batch, None)[1]

            sharding = dict.fromkeys(windows, self.batch_sharding)
            self._validation_terms = jax.jit(terms, in_shardings=(self.state_sharding.params, sharding),
                                             compiler_options=self.compiler_options)  # fmt: skip
        size = self.config.data.batch_size * jax.process_count()
        total = None
        for start in range(0, len(windows["series"]), size):
            chunk = {key: value[start : start + size] for key, value in windows.items()}
            missing = size - len(chunk["series"])  # the last chunk: rows that score nothing
            chunk = {key: np.concatenate([value, np.zeros((missing,) + value.shape[1:], value.dtype)])
                     for key, value in chunk.items()}  # fmt: skip
            terms = self._validation_terms(params, chunk)
            total = terms if total is None else total + terms  # summed on device, read once below
        total = jax.device_get(total)
        return float(total.loss / max(float(total.count), 1.0))

    def _step(self, state: TrainState, batch):
        with use_mesh(self.mesh, self.rules):
            return self._step_traced(state, batch)

    def _step_traced(self, state: TrainState, batch):
        params, opt_state, step, rng = state
        use_dropout = getattr(self.model_config, "dropout", 0.0) > 0.0
        if self.is_toto2:
            batch = {**batch, "hidden": constrain(self.hidden_spans(rng, step, batch["series"].shape), BATCH_AXES)}
        step_key = jax.random.fold_in(rng, step)
        grad_fn = jax.grad(self._loss_sums, has_aux=True)
        accumulation = self.config.optimizer.accumulation_steps
        if accumulation == 1:
            grads, terms = grad_fn(params, batch, step_key if use_dropout else None)
        else:
            # Microbatch i takes rows i, i + k, ...: each device keeps its own rows (no reshuffle).
            def split(x):
                x = x.reshape(x.shape[0] // accumulation, accumulation, *x.shape[1:]).swapaxes(0, 1)
                return constrain(x, (None,) + BATCH_AXES)

            microbatches = jax.tree.map(split, batch)

            def accumulate(carry, xs):
                grads_sum, terms_sum = carry
                index, microbatch = xs
                key = jax.random.fold_in(step_key, index) if use_dropout else None
                grads, terms = grad_fn(params, microbatch, key)
                return (jax.tree.map(jnp.add, grads_sum, grads), terms_sum + terms), None

            zeros = (jax.tree.map(jnp.zeros_like, params), self.zero_terms())
            (grads, terms), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(accumulation), microbatches))
        # Gradients of the sums over the global batch / global valid count = gradient of the global mean.
        denominator = terms.count + float(jnp.finfo(jnp.float32).eps)
        grads = jax.tree.map(lambda g: g / denominator, grads)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {**terms.means(), "grad_norm": grad_norm, "lr": self.schedule(step), "valid_points": terms.count}
        return TrainState(params, opt_state, step + 1, rng), metrics


def _save_model(model, directory) -> None:
    from ..checkpoint import save

    save(model, directory, overwrite=True)


def _batch_mesh_axes(sharding: NamedSharding) -> set[str]:
    first = sharding.spec[0] if len(sharding.spec) else None
    if first is None:
        return set()
    return {first} if isinstance(first, str) else set(first)


# ---- throughput accounting ----------------------------------------------------------------------


def training_flops_per_step(config: TotoConfig, batch: int, variates: int, time_steps: int) -> float:
    """Matmul flops of forward + backward (3x forward) for one step; the MFU numerator."""
    e, h, k = config.embed_dim, config.mlp_hidden_dim, config.num_mixture_components
    patches = (time_steps - config.patch_size) // config.stride + 1
    tokens = batch * variates * patches
    from ..models.toto1.transformer import TIME, layer_kinds

    kinds = layer_kinds(config)
    per_token = 2 * (4 * e * e + 3 * e * h) * len(kinds)
    per_token += 2 * config.patch_size * e + 2 * e * config.patch_size * e  # patch embedding, unembedding
    per_token += config.patch_size * 2 * e * k * (4 if config.distribution == "mixture_student_t" else 3)
    forward = tokens * per_token
    time_layers = kinds.count(TIME)
    forward += time_layers * batch * variates * 4 * patches * patches * e
    forward += (len(kinds) - time_layers) * batch * patches * 4 * variates * variates * e
    return 3.0 * forward


def toto2_training_flops_per_step(config: Toto2Config, batch: int, variates: int, time_steps: int) -> float:
    """Toto 2.0's counterpart of ``training_flops_per_step``: matmul flops of forward + backward (3x forward),
    attention scores counted in full (masked entries included, as the kernels compute them)."""
    d, patch, heads = config.d_model, config.patch_size, config.num_heads
    patches = time_steps // patch
    tokens = batch * variates * patches
    projections = d * heads * config.head_dim + d * config.kv_heads * (config.head_dim + config.value_dim)
    projections += heads * config.value_dim * d
    per_token = 2 * (projections + 3 * d * config.ff_dim) * config.num_layers
    head_width = patch * config.num_output_patches * config.num_quantiles
    per_token += 2 * (2 * patch * 4 * d + 4 * d * d + 2 * patch * d)  # input residual MLP
    per_token += 2 * (d * 4 * d + 4 * d * head_width + d * head_width)  # output residual MLP
    groups = config.num_layers // config.layer_group_size
    variate_layers = groups * config.num_variate_layers_per_group
    time_layers = config.num_layers - variate_layers
    score_width = 2 * heads * (config.head_dim + config.value_dim)  # q.k and weights.v, 2 flops each
    forward = tokens * per_token
    forward += time_layers * batch * variates * patches * patches * score_width // 2
    forward += variate_layers * batch * patches * variates * variates * score_width // 2
    return 3.0 * forward


def measure_matmul_peak(dtype=jnp.float32, size: int = 2048, repeats: int = 5) -> float:
    """Measured matmul flop/s of the default device (on CPU: of the whole machine). Random operands: a GPU
    multiplies constant ones or zeros faster than real data."""
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


# ---- the loop ----------------------------------------------------------------------------------


def _initial_params(init_from):
    from ..checkpoint import load

    return init_from if isinstance(init_from, nnx.Module) else load(init_from)  # load reads run directories too


def _training_knobs(model_config) -> dict[str, Any]:
    """The model fields a run may set whatever the checkpoint's architecture (``max_context`` is not
    architecture: loading a run caps it at the context the run trained on)."""
    names = ("dtype", "max_context") if is_toto2(model_config) else ("dropout", "dtype", "remat", "max_context")
    return {name: getattr(model_config, name) for name in names}


def _merge_init_config(config: TrainConfig, loaded: TotoConfig | Toto2Config) -> TrainConfig:
    """Architecture (and family) from the checkpoint; the other fields (dropout, dtype, remat, max_context)
    from the config."""
    if loaded.family != config.model.family:
        raise ValueError(f"the checkpoint holds a {loaded.family} model but model.family is {config.model.family}")
    model = loaded.replace(**_training_knobs(config.model))
    if config.model.replace(**_training_knobs(loaded)) != loaded:
        log.warning("using the checkpoint's model architecture instead of the config's model section")
    config = dataclasses.replace(config, model=model)
    config.validate()
    return config


def train(
    config: TrainConfig,
    workdir: str | Path,
    *,
    init_from=None,
    mesh=None,
    source_objects=None,
    validation=None,
    program: TrainProgram | None = None,
) -> TrainState:
    """Train to ``config.steps``, resuming from the latest readable checkpoint in ``workdir``.

    ``init_from``: a checkpoint path or a loaded model to start from (fine-tuning). ``validation``: a
    ``validation.Validation`` (held-out windows, best model, early stopping). ``program``: an already compiled
    ``TrainProgram`` for this config's model (its mesh is used), so that several runs compile once (tests)."""
    from ..data import make_iterator
    from .. import storage
    from .checkpointing import RunCheckpoints, read_run_config, run_path
    from .metrics import MetricsLogger
    from .preemption import SaveClock, StopSignals

    storage.check_access(workdir)  # a missing or unreachable bucket fails here, before anything compiles
    workdir = run_path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    is_writer = jax.process_index() == 0
    checkpoints = RunCheckpoints(
        workdir, config.checkpoint.keep_last, config.checkpoint.keep_every, config.checkpoint.async_save
    )
    saved_steps = checkpoints.steps()
    stop_signals = StopSignals(saved_steps[-1] if saved_steps else 0)  # a notice from here on is kept
    init_params = None
    if saved_steps:  # resuming: the run's architecture is the one in its checkpoints
        config = _merge_init_config(config, model_config_from_dict(read_run_config(workdir)["model"]))
    elif init_from is not None:
        loaded = _initial_params(init_from)
        config = _merge_init_config(config, loaded.config)
        init_params = nnx.state(loaded, nnx.Param)
    if program is None:
        program = TrainProgram(config, build_mesh(config) if mesh is None else mesh)
    elif program.model_config != config.model:
        raise ValueError("the given TrainProgram was built for another model config than this run's")
    if is_writer:
        dump_config(config, workdir / "config.yaml")

    restored = checkpoints.restore_latest(
        program.abstract_state.params,
        program.abstract_state.opt_state,
        program.state_sharding.params,
        program.state_sharding.opt_state,
    )
    if restored is None and saved_steps:
        raise ValueError(f"{checkpoints.directory} holds checkpoints but none could be restored (see warnings)")
    iterator = make_iterator(config.data, source_objects)
    if restored is None:
        state = program.init(config.seed, init_params)
        start = 0
    else:
        state = TrainState(
            restored.params,
            restored.opt_state,
            jax.device_put(jnp.asarray(restored.step, jnp.int32), program.replicated),
            jax.device_put(jnp.asarray(restored.rng, jnp.uint32), program.replicated),
        )
        iterator.set_state(restored.data_state)
        start = restored.step
        log.info("resumed from step %d", start)
    if validation is not None:
        validation.restore(start, is_writer)
        if validation.stopped:
            log.info("validation stopped this run early at step %d (best at step %d)", start, validation.best_step)
            return state

    logger = MetricsLogger(workdir, tensorboard=config.logging.tensorboard, enabled=is_writer)
    count_flops = toto2_training_flops_per_step if program.is_toto2 else training_flops_per_step
    flops = count_flops(
        program.model_config, config.data.batch_size * jax.process_count(), config.data.num_variates,
        config.data.context_length + (config.model.patch_size if program.is_toto2 else 0),
    )  # fmt: skip
    peak = config.logging.peak_flops_per_device
    if peak is not None:
        peak *= jax.device_count()
    elif is_writer:
        peak = measure_matmul_peak(jnp.dtype(program.model_config.dtype))
        if jax.devices()[0].platform != "cpu":  # CPU "devices" share the cores the measurement already used
            peak *= jax.device_count()

    progress = None
    if is_writer and config.logging.progress_bar:
        from tqdm import tqdm

        progress = tqdm(total=config.steps, initial=start, desc="train", dynamic_ncols=True)
    config_dict = config.to_dict()
    interval_start, interval_steps = time.perf_counter(), 0
    save_clock = SaveClock(config.checkpoint.every_minutes)
    stop_signals.install()  # SIGTERM / SIGINT: finish the step, save, return early
    try:
        for step in range(start, config.steps):
            batch = program.put_batch(next(iterator))
            state, metrics = program.step(state, batch)
            done = step + 1
            interval_steps += 1
            if step == start:  # keep compilation out of the throughput figures
                jax.block_until_ready(metrics)
                interval_start, interval_steps = time.perf_counter(), 0
            time_due = False
            if done % config.logging.every == 0 or done == config.steps:
                time_due = save_clock.due()
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if interval_steps:  # none when only the (compiling) first step ran since the last record
                    steps_per_second = interval_steps / (time.perf_counter() - interval_start)
                    values["samples_per_second"] = steps_per_second * config.data.batch_size * jax.process_count()
                    if peak:
                        values["mfu"] = flops * steps_per_second / peak
                logger.write(done, values)
                if progress is not None:
                    progress.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}")
                interval_start, interval_steps = time.perf_counter(), 0
            signalled = stop_signals.reached(done)
            converged = False
            if validation is not None and validation.due(done, config.steps):
                loss = program.validation_loss(state.params, validation.windows)
                converged = validation.record(
                    done, loss, lambda path: _save_model(program.forecaster(state.params), path), is_writer
                )
                logger.write(done, {"validation_loss": loss})
            stopping = signalled or converged
            if done % config.checkpoint.every == 0 or done == config.steps or time_due or stopping:
                save_clock.saved()
                checkpoints.wait()  # one save in flight at a time
                params, opt_state = state.params, state.opt_state
                if config.checkpoint.async_save:  # the next step donates (frees) these buffers
                    params, opt_state = jax.tree.map(jnp.copy, (params, opt_state))
                checkpoints.save(
                    done, params, opt_state, jax.device_get(state.rng), iterator.get_state(), config_dict
                )
            if progress is not None:
                progress.update(1)
            if converged:
                log.info("stopped early at step %d: no better validation loss for %d passes (best at step %d)",
                         done, validation.patience, validation.best_step)  # fmt: skip
                break
            if signalled:
                log.warning("stop signal: saved step %d; the same command resumes from it", done)
                break
    finally:
        stop_signals.restore()
        checkpoints.wait()
        checkpoints.close()
        logger.close()
        if progress is not None:
            progress.close()
    return state
