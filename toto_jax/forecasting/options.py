"""``ForecastOptions``: every choice of how a forecast is made, in one frozen value (imports no jax).

The API, ``toto-jax forecast``, ``toto-jax eval`` (rolling windows and LSF) and the GluonTS predictor
all take one; the defaults are the safe ones for real observability data (validated in
``experiments/forecast_options.md``), and ``ForecastOptions.reference()`` reproduces the reference
implementation exactly, for parity tests and speed comparisons.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

GAP_MODES = ("fill", "mask")
NORMALIZE_MODES = ("standardize", "center", "none")
SAMPLING_MODES = ("independent", "comonotone")

# Clip bound, in multiples of the range of the central 98 % of a context beyond that range. On the 99
# training series (NAB, cloud monitoring), 10 touches 9 series, all of them isolated glitches (a 0.1 %
# CPU at 2.3 %, single-tweet-minute bursts); a daily peak, a level shift or a square wave is never
# touched, since it is part of the central range. The pretraining data's outliers reach 1000 deviations.
DEFAULT_CLIP_OUTLIERS = 10.0
DEFAULT_VALUE_CAP = 10.0
DEFAULT_MEMORY_BUDGET = 4 << 30
# toto-2's GluonTS default: leading patches seen by fewer observations take the first 8 observations' statistics.
DEFAULT_SCALER_FALLBACK_MIN_OBS = 8
# Sample paths of a Toto 1.0 forecast when none are asked for (num_samples="auto", the CLI without --samples):
# see experiments/default_samples.md for the measured CRPS and time per count.
DEFAULT_NUM_SAMPLES = 64


@dataclasses.dataclass(frozen=True)
class ForecastOptions:
    """How ``toto_jax.forecast`` prepares contexts, decodes and bounds its work.

    - ``context_length``: the most recent steps the model sees (None: the model's ``max_context``).
    - ``gaps``: ``"fill"`` interpolates inner gaps linearly, carries a variate's last value over its own
      trailing gap, and forecasts *through* a gap at the end of a whole series (ingestion lag) instead of
      feeding it to the model: the model continues from the newest observed step and the forecast of the
      gap is dropped. ``"mask"`` (the reference) feeds missing steps as zeros masked out of the scaler.
    - ``clip_outliers``: clip each variate's context to K central (1-99 %) ranges beyond that range, so
      one glitch thousands of deviations high cannot flatten the forecast (None: no clipping).
    - ``normalize``: ``"standardize"`` forecasts each variate in units of its own context (mean and
      standard deviation in float64, mapped back in float64): Toto's causal scaler floors the variance
      (``sqrt(var + 0.1)``), so a series far below ~0.3 in its own units otherwise looks flat, and large
      counters (1e9 + a small signal) lose their signal in float32. ``"center"`` removes only the mean (in
      float64); ``"none"`` casts the raw values to float32 (the reference).
    - ``value_cap``: decoded values stay within K context standard deviations beyond the context's range,
      so long sample paths cannot run away (None: no cap). Toto 2.0 models apply it as toto-2's
      ``quantile_real_cap_k`` (K scales of the causal scaler at the last context step).
    - ``infer_nonnegative``: a variate whose observed context is all >= 0 (counts, rates, utilisation,
      bytes) is forecast >= 0: sample paths (each decoded patch, before it is fed back), the mean path,
      quantiles and means (as TimesFM 2.5's ``infer_is_positive``). A variate with any negative value is
      left free. False: no such bound (the reference).
    - ``sampling``: ``"comonotone"`` draws one quantile level per sample path, variate and patch (smooth
      fed-back patches, less drift); ``"independent"`` draws every step on its own (the reference).
    - ``memory_budget``: bytes of working memory one compiled call may use; batches, sample paths and
      independent variate groups are split to fit, and a request that cannot fit is refused by name.
    - ``use_kv_cache``: encode the context once and decode with a KV cache (False: re-encode every step,
      the reference's no-cache semantics).
    - ``bucket``: pad shapes to a few buckets so varied requests reuse compiled programs.
    - ``progress``: a progress bar over chunks and decode segments (None: when there is more than one).
    - ``decode_block_size`` (Toto 2.0): forecast in blocks of this many steps (a multiple of the patch
      size), feeding each block's medians back (None: the whole horizon in one pass, toto-2's default).
    - ``scaler_fallback_min_obs`` (Toto 2.0): leading patches seen by fewer observations take the scaler
      statistics of the first this-many observations (0: off, the reference's ``forecast`` default).
    - ``devices``: how many local devices share the work: series and sample paths are split over them,
      the parameters replicated (None: every local accelerator, one device on CPU). Results do not depend
      on it; ``memory_budget`` is per device. For explicit placement and tensor parallelism give
      ``toto_jax.forecast`` a ``mesh=`` instead (with it, ``devices`` must stay None).
    """

    context_length: int | None = None
    gaps: str = "fill"
    clip_outliers: float | None = DEFAULT_CLIP_OUTLIERS
    normalize: str = "standardize"
    value_cap: float | None = DEFAULT_VALUE_CAP
    infer_nonnegative: bool = True
    sampling: str = "comonotone"
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    use_kv_cache: bool = True
    bucket: bool = True
    progress: bool | None = None
    decode_block_size: int | None = None
    scaler_fallback_min_obs: int = DEFAULT_SCALER_FALLBACK_MIN_OBS
    devices: int | None = None

    def __post_init__(self):
        def positive_number(name, value, allow_none=True):
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
                raise ValueError(f"ForecastOptions.{name} must be a positive number{' or None' * allow_none}, got {value!r}")

        def choice(name, value, allowed):
            if value not in allowed:
                raise ValueError(f"ForecastOptions.{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")

        if self.context_length is not None and (
            isinstance(self.context_length, bool) or not isinstance(self.context_length, int) or self.context_length <= 0
        ):
            raise ValueError(f"ForecastOptions.context_length must be a positive integer or None, got {self.context_length!r}")
        choice("gaps", self.gaps, GAP_MODES)
        positive_number("clip_outliers", self.clip_outliers)
        choice("normalize", self.normalize, NORMALIZE_MODES)
        positive_number("value_cap", self.value_cap)
        choice("sampling", self.sampling, SAMPLING_MODES)
        positive_number("memory_budget", self.memory_budget, allow_none=False)
        for name in ("infer_nonnegative", "use_kv_cache", "bucket"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ForecastOptions.{name} must be True or False, got {getattr(self, name)!r}")
        if self.decode_block_size is not None and (
            isinstance(self.decode_block_size, bool) or not isinstance(self.decode_block_size, int)
            or self.decode_block_size <= 0
        ):  # fmt: skip
            raise ValueError(
                f"ForecastOptions.decode_block_size must be a positive integer or None, got {self.decode_block_size!r}"
            )
        if isinstance(self.scaler_fallback_min_obs, bool) or not isinstance(self.scaler_fallback_min_obs, int) or (
            self.scaler_fallback_min_obs < 0
        ):
            raise ValueError(
                f"ForecastOptions.scaler_fallback_min_obs must be a non-negative integer, got {self.scaler_fallback_min_obs!r}"
            )
        if self.devices is not None and (isinstance(self.devices, bool) or not isinstance(self.devices, int)
                                         or self.devices < 1):  # fmt: skip
            raise ValueError(f"ForecastOptions.devices must be a positive integer or None, got {self.devices!r}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ValueError(f"ForecastOptions.progress must be True, False or None, got {self.progress!r}")

    @classmethod
    def reference(cls, **overrides) -> ForecastOptions:
        """The reference implementation's semantics: raw float32 values, missing steps masked, no
        clipping, no cap, no non-negativity bound, independent draws, no scaler fallback. Every parity test and speed comparison
        uses these."""
        fields = dict(gaps="mask", clip_outliers=None, normalize="none", value_cap=None, infer_nonnegative=False,
                      sampling="independent", scaler_fallback_min_obs=0)  # fmt: skip
        return cls(**{**fields, **overrides})

    def replace(self, **changes) -> ForecastOptions:
        return dataclasses.replace(self, **changes)


# ---- command-line flags: one mapping for every tool that forecasts ---------------------------------------
def _optional_positive(what: str):
    def parse(text: str) -> float | None:
        if text.strip().lower() in ("none", "off"):
            return None
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive number of {what} or 'none', got {text!r}")
        return value

    return parse


def add_options_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``ForecastOptions`` flags; their defaults are ``ForecastOptions()``'s."""
    default = ForecastOptions()
    group = parser.add_argument_group("forecast options (defaults: toto_jax.ForecastOptions())")
    group.add_argument("--reference-options", action="store_true",
                       help="the reference implementation's semantics (ForecastOptions.reference()); other "
                            "option flags given too override it")  # fmt: skip
    group.add_argument("--context-length", type=int, default=None,
                       help="most recent steps the model sees (default: the model's maximum context)")
    group.add_argument("--gaps", choices=GAP_MODES, default=None,
                       help=f"missing values: 'fill' (interpolate, forecast through a trailing gap) or 'mask' "
                            f"(the reference) (default {default.gaps})")  # fmt: skip
    group.add_argument("--clip-outliers", type=_optional_positive("central ranges"), default=argparse.SUPPRESS,
                       metavar="K", help=f"clip each context to K central (1-99 %%) ranges beyond that range "
                       f"('none': off; default {default.clip_outliers:g})")  # fmt: skip
    group.add_argument("--normalize", choices=NORMALIZE_MODES, default=None,
                       help=f"per-variate normalization in float64 before the model (default {default.normalize})")
    group.add_argument("--value-cap", type=_optional_positive("context standard deviations"), default=argparse.SUPPRESS,
                       metavar="K", help=f"keep decoded values within K context standard deviations beyond the "
                       f"context's range ('none': off; default {default.value_cap:g})")  # fmt: skip
    group.add_argument("--infer-nonnegative", action=argparse.BooleanOptionalAction, default=None,
                       help="keep the forecast of a variate whose context is all >= 0 (counts, rates, bytes) at or "
                            "above 0 (default: on; --no-infer-nonnegative: off, as the reference)")  # fmt: skip
    group.add_argument("--sampling", choices=SAMPLING_MODES, default=None,
                       help=f"how sample paths draw each patch (default {default.sampling})")
    group.add_argument("--memory-budget-gb", type=float, default=None,
                       help=f"working memory per compiled call in GiB (default {default.memory_budget / (1 << 30):g})")
    group.add_argument("--decode-block-size", type=int, default=None, metavar="STEPS",
                       help="Toto 2.0: forecast in blocks of STEPS (a multiple of the patch size) with median "
                            "feedback (default: the whole horizon in one pass)")  # fmt: skip
    group.add_argument("--scaler-fallback-min-obs", type=int, default=None, metavar="N",
                       help=f"Toto 2.0: leading patches with fewer observations use the first N's statistics "
                            f"(0: off; default {default.scaler_fallback_min_obs})")  # fmt: skip
    group.add_argument("--devices", type=int, default=None, metavar="N",
                       help="local devices to split the series and sample paths over (default: every local "
                            "accelerator, one device on CPU)")  # fmt: skip


def options_from_args(args: argparse.Namespace) -> ForecastOptions:
    """``ForecastOptions`` from the flags of ``add_options_arguments``: the reference or the defaults,
    with every flag given on top."""
    options = ForecastOptions.reference() if args.reference_options else ForecastOptions()
    changes = {}
    for name in ("context_length", "gaps", "normalize", "infer_nonnegative", "sampling", "decode_block_size", "scaler_fallback_min_obs",
                 "devices"):  # fmt: skip
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    for name in ("clip_outliers", "value_cap"):
        if hasattr(args, name):
            changes[name] = getattr(args, name)
    if args.memory_budget_gb is not None:
        if not args.memory_budget_gb > 0:
            raise ValueError(f"--memory-budget-gb must be positive, got {args.memory_budget_gb:g}")
        changes["memory_budget"] = int(args.memory_budget_gb * (1 << 30))
    try:
        return options.replace(**changes)
    except ValueError as error:
        message = str(error)
        for name in changes:
            message = message.replace(f"ForecastOptions.{name}", "--" + name.replace("_", "-"))
        raise ValueError(message) from None


__all__ = [
    "DEFAULT_CLIP_OUTLIERS",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_NUM_SAMPLES",
    "DEFAULT_SCALER_FALLBACK_MIN_OBS",
    "DEFAULT_VALUE_CAP",
    "GAP_MODES",
    "NORMALIZE_MODES",
    "SAMPLING_MODES",
    "ForecastOptions",
    "add_options_arguments",
    "options_from_args",
]
