"""The Toto 2.0 model: causal patch scaler + asinh -> residual-MLP patch embedding of [values, missing mask]
-> layer groups of time/variate attention -> residual-MLP quantile head (nine knots, 0.1 ... 0.9).

The model is a next-patch predictor: the output at patch i holds the quantiles of patch i + 1, in the
scaled (asinh) space of the scaler's statistics for that patch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .attention import rotary_tables
from .config import Toto2Config
from .scaler import PatchStatistics, patch_statistics, standardise
from .transformer import KVCache, Toto2Transformer, residual_taus
from .unit_scaled import ResidualMLP


class Toto2Output(NamedTuple):
    quantiles: jax.Array  # [quantile, batch, variate, patches, patch_size * num_output_patches], scaled space
    loc: jax.Array  # [batch, variate, time]
    scale: jax.Array


def time_mask(group_ids, has_missing_values: bool = True):
    """[batch, variate, 1, tokens, tokens]: causal, and (with missing values) only within equal group ids."""
    tokens = group_ids.shape[-1]
    causal = jnp.tril(jnp.ones((tokens, tokens), bool))
    if not has_missing_values:
        return causal[None, None, None]
    return (causal & (group_ids[..., :, None] == group_ids[..., None, :]))[:, :, None]


def variate_mask(group_ids):
    """[batch, tokens, 1, variate, variate]: variates attend to variates with the same group id."""
    ids = jnp.swapaxes(group_ids, 1, 2)  # [batch, tokens, variate]
    return (ids[..., :, None] == ids[..., None, :])[:, :, None]


class Toto2(nnx.Module):
    def __init__(self, config: Toto2Config, *, rngs: nnx.Rngs | None = None):
        rngs = nnx.Rngs(0) if rngs is None else rngs
        dtype = jnp.dtype(config.dtype)
        self.config = config
        d, patch = config.d_model, config.patch_size
        self.patch_proj = ResidualMLP(2 * patch, 4 * d, d, ("patch", "embed"), kind="input", dtype=dtype, rngs=rngs)
        self.transformer = Toto2Transformer(config, dtype=dtype, rngs=rngs)
        head_width = patch * config.num_output_patches * config.num_quantiles
        self.output_head = ResidualMLP(d, 4 * d, head_width, ("embed", "unembed"), kind="output", dtype=dtype,
                                       rngs=rngs)  # fmt: skip
        taus = residual_taus(config).reshape(-1, config.layer_group_size, 2)  # [groups, position, 2]
        for position, layer in enumerate(self.transformer.groups.layers):
            layer.attention_tau[...] = jnp.asarray(taus[:, position, 0])
            layer.mlp_tau[...] = jnp.asarray(taus[:, position, 1])

    # ---- pieces, used by forecasting -----------------------------------------------------------------
    def statistics(self, series, mask) -> PatchStatistics:
        return patch_statistics(series, mask, self.config.patch_size)

    def embed(self, scaled, mask):
        """Scaled values and their observed mask [batch, variate, time] -> tokens [batch, variate, patches, d]."""
        patch = self.config.patch_size
        as_patches = lambda t: t.reshape(*t.shape[:-1], -1, patch)  # noqa: E731
        missing = (~mask.astype(bool)).astype(scaled.dtype)
        return self.patch_proj(jnp.concatenate([as_patches(scaled), as_patches(missing)], axis=-1))

    def encode(self, tokens, positions, time_mask, variate_mask, cache: KVCache | None = None, offset=0,
               last_position=None, loop_groups: bool = False):  # fmt: skip
        rotary = rotary_tables(positions, self.config.head_dim, self.config.use_xpos, last_position)
        return self.transformer(tokens, rotary, time_mask, variate_mask, cache, offset, loop_groups)

    def quantiles(self, hidden):
        """Hidden states [..., patches, d] -> scaled quantiles [quantile, ..., patches, patch * output patches]."""
        out = self.output_head(hidden)
        out = out.reshape(*out.shape[:-1], -1, self.config.num_quantiles)
        return jnp.moveaxis(out, -1, 0)

    def init_cache(self, batch: int, variate: int, max_tokens: int, dtype=jnp.float32) -> KVCache:
        return KVCache.create(self.config, batch, variate, max_tokens, dtype)

    # ---- toto-2's Toto2Model.forward ---------------------------------------------------------------
    def __call__(self, series, mask=None, series_ids=None, *, hidden=None, has_missing_values: bool = True
                 ) -> Toto2Output:  # fmt: skip
        """series, mask: [batch, variate, time] (time a multiple of the patch size); series_ids: [batch, variate].

        ``hidden`` [batch, variate, time] (toto-2's contiguous patch mask, inverted): points to hide from the
        model, which then sees them as missing (zero value, mask channel set, left out of the scaler), the way
        forecasting presents future patches. Patches with no observation and nothing hidden get group id -1
        (attending only to each other), as in toto-2's forward; hidden patches keep their series' id.
        """
        series = jnp.asarray(series, jnp.float32)
        batch, variates, time = series.shape
        mask = jnp.ones(series.shape, bool) if mask is None else jnp.asarray(mask, bool)
        series_ids = jnp.zeros((batch, variates), jnp.int32) if series_ids is None else jnp.asarray(series_ids)
        hidden = jnp.zeros(series.shape, bool) if hidden is None else jnp.asarray(hidden, bool)
        visible = mask & ~hidden
        stats = self.statistics(series, visible)
        tokens = self.embed(standardise(series, visible, stats), visible)
        patches = tokens.shape[2]
        as_patches = lambda m: m.reshape(batch, variates, patches, -1)  # noqa: E731
        empty = ~as_patches(mask).any(-1) & ~as_patches(hidden).any(-1)
        group_ids = jnp.where(empty, -1, series_ids[..., None])
        # The whole-window forward is the training one: its layer groups run as a loop (UNROLLED_GROUPS).
        hidden, _ = self.encode(tokens, jnp.arange(patches), time_mask(group_ids, has_missing_values),
                                variate_mask(group_ids), loop_groups=True)  # fmt: skip
        return Toto2Output(self.quantiles(hidden), stats.loc, stats.scale)

