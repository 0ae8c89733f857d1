"""Toto 2.0 pretraining diagnosis on the tiny shape (issue 30): minutes on CPU, figures printed.

    python experiments/toto2_diagnosis.py copy    [--steps 300]   # Toto 1.0 tiny vs Toto 2.0 tiny, copy-the-cycle
    python experiments/toto2_diagnosis.py sweep   [--steps 200]   # learning-rate sweep, u-muP AdamW and NorMuon
    python experiments/toto2_diagnosis.py rms     [--steps 300]   # per-layer activation / gradient / update RMS
    python experiments/toto2_diagnosis.py plot --json COPY.json --rms-json RMS.json   # PNGs into experiments/figures
    python experiments/toto2_diagnosis.py loss --run runs/toto2_small_v2 [STAGE2_RUN ...]   # loss curve, PNG

The copy-the-cycle task: windows of a strictly periodic series (random period 6-24 steps, random phase, a
random shape among sums of harmonics, square waves and saw teeth, random level and amplitude, 2 % noise).
A model that reads the context copies the last cycle; one that does not predicts the level or the last
slope. Scored on fresh windows (another seed) by the normalised MAE of the median (Toto 1.0: the mixture's
median) over the last patch (``h1``, one patch ahead, both families) and, for Toto 2.0, over the last four
patches forecast in one pass (``h4``): MAE / mean |truth - context mean| (0: perfect copy; ~1: the level).
The seasonal naive forecast with the true period scores the noise floor.

Every run is the project's ``TrainProgram`` (the real jitted step, objective and optimiser) on
``experiments/configs/{tiny,toto2_tiny}.yaml`` with a longer context (128 steps, 16 patches of 8).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from toto_jax.models.toto1.distribution import AffineTransformed
from toto_jax.sharding import make_mesh
from toto_jax.train.config import load_config
from toto_jax.train.trainer import TrainProgram

ROOT = Path(__file__).parents[1]
CONFIGS = {"toto1": ROOT / "experiments/configs/tiny.yaml", "toto2": ROOT / "experiments/configs/toto2_tiny.yaml"}
CONTEXT, PATCH, VARIATES, BATCH = 128, 8, 2, 16
FIGURES = ROOT / "experiments" / "figures"


# ---- the task ----------------------------------------------------------------------------------------------
def cycle_windows(rng: np.random.Generator, batch: int, variates: int = VARIATES, length: int | None = None,
                  periods=(6, 24), noise: float = 0.02):  # fmt: skip
    """Periodic windows [batch, variate, length] and their periods [batch, variate]."""
    length = length or CONTEXT + PATCH
    shape = (batch, variates, 1)
    period = rng.integers(periods[0], periods[1] + 1, shape)
    phase = rng.uniform(0.0, 1.0, shape)
    u = (np.arange(length) / period + phase) % 1.0  # position in the cycle
    harmonics = sum(rng.normal(0, 1.0 / k, shape) * np.sin(2 * np.pi * k * u + rng.uniform(0, 2 * np.pi, shape))
                    for k in (1, 2, 3))  # fmt: skip
    square = np.where(u < rng.uniform(0.2, 0.8, shape), 1.0, -1.0)
    saw = 2.0 * u - 1.0
    kind = rng.integers(0, 3, shape)
    wave = np.where(kind == 0, harmonics, np.where(kind == 1, square, saw))
    wave = wave / (wave.std(-1, keepdims=True) + 1e-6)
    amplitude = np.exp(rng.uniform(np.log(0.1), np.log(100.0), shape))
    level = rng.normal(0.0, 3.0, shape) * amplitude
    series = level + amplitude * (wave + noise * rng.standard_normal(wave.shape))
    return series.astype(np.float32), period[..., 0]


def batch_of(series) -> dict[str, np.ndarray]:
    b, v, t = series.shape
    ids = np.broadcast_to(np.arange(v, dtype=np.int32)[None, :, None], (b, v, t)).copy()  # independent series
    return {"series": series, "padding_mask": np.ones(series.shape, bool), "id_mask": ids}


def normalised_mae(prediction, truth, context) -> float:
    spread = np.mean(np.abs(truth - context.mean(-1, keepdims=True)), axis=-1)
    return float(np.mean(np.mean(np.abs(prediction - truth), axis=-1) / spread))


def seasonal_naive_score(series, period, horizon: int) -> float:
    context, truth = series[..., :-horizon], series[..., -horizon:]
    t = np.arange(horizon)
    index = context.shape[-1] - period[..., None] + (t % period[..., None])
    prediction = np.take_along_axis(context, index, axis=-1)
    return normalised_mae(prediction, truth, context)


# ---- runs ----------------------------------------------------------------------------------------------------
def make_program(family: str, overrides=()) -> tuple[TrainProgram, object]:
    base = [f"data.context_length={CONTEXT}", f"data.batch_size={BATCH}", f"data.num_variates={VARIATES}",
            "logging.progress_bar=false", "logging.tensorboard=false"]  # fmt: skip
    if family == "toto2":
        base.append(f"model.residual_attn_ratio={math.sqrt(16 / math.log(16)):.4f}")
    config = load_config(CONFIGS[family], base + list(overrides))
    return TrainProgram(config, make_mesh((1, 1, 1), devices=jax.devices()[:1])), config


def evaluator(program: TrainProgram, family: str):
    """Jitted (params, series) -> {horizon name: medians over the last h patches}."""
    if family == "toto1":
        @jax.jit
        def predict(params, series):
            _, ids, mask = batch_of_jax(series)
            output = program.model(params)(series[..., :-PATCH], mask[..., :-PATCH], ids[..., :-PATCH])
            median = AffineTransformed(output.distribution, output.loc, output.scale).quantile(0.5)
            return {"h1": median[..., -PATCH:]}
        return predict

    @jax.jit
    def predict(params, series):
        model = program.model(params)
        out = {}
        for name, patches in (("h1", 1), ("h4", 4)):
            hidden = jnp.zeros(series.shape, bool).at[..., -patches * PATCH:].set(True)
            visible = jnp.where(hidden, 0.0, series)
            output = model(visible, jnp.ones(series.shape, bool), None, hidden=hidden)
            scaled = output.quantiles[4][..., -patches - 1 : -1, :PATCH].reshape(*series.shape[:-1], -1)
            loc, scale = output.loc[..., -patches * PATCH:], output.scale[..., -patches * PATCH:]
            out[name] = jnp.sinh(scaled) * scale + loc
        return out

    return predict


def batch_of_jax(series):
    ids = jnp.broadcast_to(jnp.arange(series.shape[1], dtype=jnp.int32)[None, :, None], series.shape)
    return series, ids, jnp.ones(series.shape, bool)


def scores(predict, params, eval_series) -> dict[str, float]:
    out = jax.device_get(predict(params, jnp.asarray(eval_series)))
    result = {}
    for name, prediction in out.items():
        h = prediction.shape[-1]
        result[name] = normalised_mae(prediction, eval_series[..., -h:], eval_series[..., :-h])
    return result


def train_on_cycles(family: str, overrides=(), steps: int = 300, every: int = 50, seed: int = 0, probe=None):
    """Train on fresh cycle windows; returns the curve [(step, train loss, {h: score})] and the final params."""
    program, config = make_program(family, overrides)
    state = program.init(config.seed)
    predict = evaluator(program, family)
    eval_series, _ = cycle_windows(np.random.default_rng(12345), 128)
    rng = np.random.default_rng(seed)
    curve, losses = [], []
    start = time.time()
    for step in range(steps + 1):
        if step % every == 0:
            mean_loss = float(np.mean(losses)) if losses else float("nan")
            curve.append((step, mean_loss, scores(predict, state.params, eval_series)))
            losses = []
        if step == steps:
            break
        series, _ = cycle_windows(rng, BATCH)
        if probe is not None:
            probe.before_step(program, state, batch_of(series), step)
        state, metrics = program.step(state, program.put_batch(batch_of(series)))
        if probe is not None:
            probe.after_step(state, step)
        losses.append(float(metrics["loss"]))
        if not np.isfinite(losses[-1]):
            curve.append((step, float("nan"), {}))
            break
    return curve, state, time.time() - start


# ---- commands -------------------------------------------------------------------------------------------------
def schedule(steps: int) -> list[str]:
    """Warm up for a tenth of the steps, hold for seven tenths, decay for the rest."""
    warmup, stable = steps // 10, steps * 7 // 10
    return [f"optimizer.warmup_steps={warmup}", f"optimizer.stable_steps={stable}",
            f"optimizer.decay_steps={steps - warmup - stable}"]  # fmt: skip


def show_curve(name, curve):
    for step, loss, score in curve:
        figures = " ".join(f"{k} {v:.3f}" for k, v in score.items())
        print(f"  {name:34s} step {step:4d}  loss {loss:8.4f}  {figures}", flush=True)


def command_copy(args):
    eval_series, period = cycle_windows(np.random.default_rng(12345), 128)
    print(f"seasonal naive (true period): h1 {seasonal_naive_score(eval_series, period, PATCH):.3f}  "
          f"h4 {seasonal_naive_score(eval_series, period, 4 * PATCH):.3f}")  # fmt: skip
    before = ["model.qk_norm=true", "model.per_dim_scale=false", "model.use_xpos=false", "model.attn_bias=false",
              "model.residual_mult=1.0", "optimizer.adamw_learning_rate=null"]  # fmt: skip
    runs = {
        "toto1 tiny, adamw 3e-3": ("toto1", []),
        "toto2 before, umup_adamw 1e-2": ("toto2", [*before, "optimizer.name=umup_adamw",
                                                    "optimizer.learning_rate=1e-2"]),
        "toto2 before, normuon 2e-2": ("toto2", before + ["optimizer.learning_rate=2e-2"]),
        "toto2 after (toto2_tiny.yaml)": ("toto2", []),
        "toto2 after + score_visible": ("toto2", ["masking.score_visible=true"]),
    }
    for extra in args.extra or []:
        name, family, *overrides = extra.split(",")
        runs[name] = (family, overrides)
    if args.only:
        runs = {k: v for k, v in runs.items() if any(o in k for o in args.only)}
    results = {}
    for name, (family, overrides) in runs.items():
        curve, _, seconds = train_on_cycles(family, schedule(args.steps) + overrides, args.steps, args.every)
        show_curve(name, curve)
        print(f"  ({seconds:.0f} s)", flush=True)
        results[name] = curve
    if args.json:
        Path(args.json).write_text(json.dumps(results))


def command_sweep(args):
    rates = {"umup_adamw": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0],
             "umup_normuon": [2e-2, 6e-2, 2e-1, 6e-1, 2.0]}
    widths = args.widths
    table = []
    for name, lrs in rates.items():
        if args.only and name not in args.only:
            continue
        for width in widths:
            for lr in lrs:
                overrides = [f"optimizer.name={name}", f"optimizer.learning_rate={lr}", f"model.d_model={width}",
                             *schedule(args.steps), *args.override]  # fmt: skip
                curve, _, seconds = train_on_cycles("toto2", overrides, args.steps, args.steps)
                _, last_loss, score = curve[-1]
                print(f"  {name:13s} d_model {width:4d} lr {lr:7.0e}  loss {last_loss:7.4f}  "
                      + " ".join(f"{k} {v:.3f}" for k, v in score.items()) + f"  ({seconds:.0f} s)", flush=True)
                table.append((name, width, lr, last_loss, score))
    if args.json:
        Path(args.json).write_text(json.dumps(table))


class RmsProbe:
    """Per-layer RMS of the residual stream (after each layer), and of each parameter's gradient and update."""

    def __init__(self, every: int):
        self.every, self.rows = every, []

    def before_step(self, program, state, batch, step):
        if step % self.every:
            return
        self.params = jax.tree.map(jnp.copy, state.params)  # the step donates the state
        self.row = {"step": step, **self.activations(program, state.params, batch)}
        batch = {**batch_device(batch), "hidden": program.hidden_spans(state.rng, state.step, batch["series"].shape)}
        grads, terms = jax.grad(lambda p: program._loss_sums(p, batch, None), has_aux=True)(state.params)
        count = float(terms.count)  # the gradient of the mean: the sums' gradient over the counted points
        self.row.update({f"grad/{k}": v / count for k, v in leaf_rms(grads).items()})

    def after_step(self, state, step):
        if step % self.every:
            return
        updates = jax.tree.map(lambda a, b: a - b, state.params, self.params)
        self.row.update({f"update/{k}": v for k, v in leaf_rms(updates).items()})
        self.row.update({f"param/{k}": v for k, v in leaf_rms(state.params).items()})
        self.rows.append(self.row)

    @staticmethod
    def activations(program, params, batch):
        model = program.model(params)
        series = jnp.asarray(batch["series"])
        mask = jnp.ones(series.shape, bool)
        stats = model.statistics(series, mask)
        from toto_jax.models.toto2.scaler import standardise
        from toto_jax.models.toto2.model import time_mask, variate_mask
        from toto_jax.models.toto2.attention import rotary_tables

        scaled = standardise(series, mask, stats)
        tokens = model.embed(scaled, mask)
        ids = jnp.broadcast_to(jnp.arange(series.shape[1])[None, :, None], tokens.shape[:3])
        rotary = rotary_tables(jnp.arange(tokens.shape[2]), model.config.head_dim, model.config.use_xpos, None)
        out = {"act/input": rms(scaled), "act/embed": rms(tokens)}
        x = tokens
        graphdef, stacked = nnx.split(model.transformer.groups)
        groups = jax.tree.leaves(stacked)[0].shape[0]
        for g in range(groups):
            group = nnx.merge(graphdef, jax.tree.map(lambda a: a[g], stacked))
            for i, layer in enumerate(group.layers):
                x, _ = layer(x, rotary, time_mask(ids), variate_mask(ids), None, 0)
                out[f"act/g{g}.l{i}.{layer.kind}"] = rms(x)
        hidden = model.transformer.out_norm(x)
        out["act/head"] = rms(model.quantiles(hidden))
        return out


def batch_device(batch):
    return {k: jnp.asarray(v) for k, v in batch.items()}


def rms(x) -> float:
    return float(jnp.sqrt(jnp.mean(jnp.square(jnp.asarray(x, jnp.float32)))))


def leaf_rms(tree) -> dict[str, float]:
    """RMS per parameter; stacked layer-group parameters per group."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = ".".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)
        name = name.replace(".value", "")
        if name.startswith("transformer.groups"):
            for g in range(leaf.shape[0]):
                out[f"{name}[{g}]"] = rms(leaf[g])
        else:
            out[name] = rms(leaf)
    return out


def command_rms(args):
    for spec in args.optimizers:
        name, lr = spec.split(":")
        overrides = [f"optimizer.name={name}", f"optimizer.learning_rate={lr}", *args.override]
        name = spec
        probe = RmsProbe(args.every)
        curve, _, _ = train_on_cycles("toto2", overrides, args.steps, args.every, probe=probe)
        show_curve(name, curve)
        print(f"== {name}: RMS through training (rows: step)")
        keys = [k for k in probe.rows[0] if k.startswith("act/")]
        print("  step " + " ".join(f"{k[4:]:>14s}" for k in keys))
        for row in probe.rows:
            print(f"  {row['step']:4d} " + " ".join(f"{row[k]:14.3f}" for k in keys))
        for kind in ("grad", "update", "param"):
            print(f"  -- {kind} RMS per parameter (first and last probe)")
            for k in [k for k in probe.rows[0] if k.startswith(kind + "/")]:
                print(f"    {k[len(kind) + 1:]:60s} {probe.rows[0][k]:10.3e} {probe.rows[-1][k]:10.3e}")
        if args.json:
            Path(args.json).with_suffix(f".{name}.json").write_text(json.dumps(probe.rows))


def command_plot(args):
    """PNGs from the JSON of ``copy --json`` and ``rms --json`` (matplotlib, an experiment-only dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    curves = json.loads(Path(args.json).read_text())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for index, (name, curve) in enumerate(curves.items()):
        steps = [c[0] for c in curve]
        for axis, horizon in zip(axes, ("h1", "h4")):
            values = [c[2].get(horizon) for c in curve]
            if values[0] is not None:
                axis.plot(steps, values, label=name, color=f"C{index}")
    for axis, title in zip(axes, ("one patch ahead (h1)", "four patches in one pass (h4, Toto 2.0)")):
        axis.set(title=title, xlabel="step", ylim=(0, 1.1))
        axis.axhline(0.03, color="grey", ls=":", lw=1)  # the seasonal naive forecast with the true period
    axes[0].set_ylabel("normalised MAE of the median (1: the level)")
    for axis in axes:
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "toto2_copy_task.png", dpi=110)
    print("wrote", FIGURES / "toto2_copy_task.png")
    for path in sorted(Path(args.json).parent.glob(Path(args.rms_json).stem + ".*.json")):
        rows = json.loads(path.read_text())
        name = path.stem.split(".", 1)[1]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for kind, axis in zip(("act", "grad", "update"), axes):
            keys = [k for k in rows[0] if k.startswith(kind + "/") and ("kernel" in k or kind == "act")]
            for key in keys:
                axis.semilogy([r["step"] for r in rows], [max(r[key], 1e-12) for r in rows], lw=1,
                              label=key.split("/", 1)[1].replace("transformer.groups.layers.", "L"))  # fmt: skip
            axis.set(title=f"{kind} RMS ({name})", xlabel="step")
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        out = FIGURES / f"toto2_rms_{name.replace(':', '_')}.png"
        fig.savefig(out, dpi=110)
        print("wrote", out)


def command_loss(args):
    """A run's training loss curve (its ``metrics.jsonl``): every logged step and the mean of each 200 steps,
    with the learning rate beside it. Several runs are consecutive stages (each ``--init-from`` the one before),
    drawn end to end on one step axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, loss, lr, boundaries = [], [], [], []
    for run in args.run:
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
        # a resumed run logs again the steps after its last checkpoint (bit-identical): one row per step
        rows = sorted({r["step"]: r for r in rows if "loss" in r}.values(), key=lambda r: r["step"])
        offset = steps[-1] if steps else 0
        if steps:
            boundaries.append(offset)
        steps += [offset + r["step"] for r in rows]
        loss += [r["loss"] for r in rows]
        lr += [r["lr"] for r in rows]
    steps, loss = np.array(steps), np.array(loss)
    spans = [(int(s), float(loss[(steps > s) & (steps <= s + 200)].mean())) for s in range(0, int(steps.max()), 200)]
    for start, mean in spans:
        print(f"steps {start + 1}-{start + 200}: mean loss {mean:.3f}")
    names = [Path(run).name for run in args.run]
    fig, axis = plt.subplots(figsize=(8 + 2 * (len(names) - 1), 4))
    axis.plot(steps, loss, color="C0", alpha=0.3, lw=1, label="logged steps")
    axis.plot([s + 100 for s, _ in spans], [m for _, m in spans], "o-", color="C0", label="mean of 200 steps")
    for boundary in boundaries:
        axis.axvline(boundary, color="grey", ls="--", lw=1)
    axis.set(xlabel="step", ylabel="pinball loss (scaled space)", title=" -> ".join(names))
    rate = axis.twinx()
    rate.plot(steps, lr, color="C1", lw=1)
    rate.set_ylabel("NorMuon learning rate", color="C1")
    axis.legend(fontsize=8)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    out = FIGURES / f"{names[-1]}_loss.png"
    fig.savefig(out, dpi=110)
    print("wrote", out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("copy", "sweep", "rms", "plot", "loss"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--extra", nargs="*", help="name,family,override,... runs added to copy")
    parser.add_argument("--override", nargs="*", default=[])
    parser.add_argument("--widths", nargs="*", type=int, default=[32])
    parser.add_argument("--optimizers", nargs="*", default=["umup_normuon:0.02", "umup_normuon:0.2"],
                        help="name:peak rate, for rms")
    parser.add_argument("--json", help="copy / sweep / rms: write the figures; plot: the copy JSON")
    parser.add_argument("--rms-json", help="plot: the --json given to rms")
    parser.add_argument("--run", nargs="+",
                        help="loss: the run directory, or the run directories of consecutive stages")
    args = parser.parse_args()
    {"copy": command_copy, "sweep": command_sweep, "rms": command_rms, "plot": command_plot,
     "loss": command_loss}[args.command](args)


if __name__ == "__main__":
    main()
