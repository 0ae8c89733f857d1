"""The Toto model: scaler -> patch embedding -> transformer -> unembed -> Student-T (mixture) head."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ...config import TotoConfig
from ...layers.linear import Dense
from .distribution import StudentTHead, StudentTMixture
from .embedding import PatchEmbedding, patchify
from .fusion import VariateLabels
from .scaler import Scaled, apply_scaler
from .transformer import KVCache, Transformer


class TotoOutput(NamedTuple):
    distribution: StudentTMixture  # in scaled space, [batch, variate, time]
    loc: jax.Array
    scale: jax.Array


class InputError(ValueError):
    """Model input with a wrong shape, dtype or content."""


def validate_inputs(config: TotoConfig, series, padding_mask=None, id_mask=None) -> None:
    """Checks on concrete arrays that cannot be expressed inside a compiled program."""
    series = np.asarray(series)
    if series.ndim != 3:
        raise InputError(f"series must have shape [batch, variate, time], got shape {series.shape}")
    if not np.issubdtype(series.dtype, np.floating):
        raise InputError(f"series must be floating point, got dtype {series.dtype}")
    time = series.shape[-1]
    if time % config.patch_size:
        raise InputError(f"time steps ({time}) must be a multiple of the patch size ({config.patch_size})")
    for name, mask in (("padding_mask", padding_mask), ("id_mask", id_mask)):
        if mask is not None and np.shape(mask) != series.shape:
            raise InputError(f"{name} has shape {np.shape(mask)}, expected the series shape {series.shape}")
    if id_mask is not None:
        windows = np.asarray(patchify(jnp.asarray(id_mask), config.patch_size, config.stride))
        if np.any(windows.min(-1) != windows.max(-1)):
            raise InputError("id_mask changes inside a patch; a patch cannot span two series ids")


class FoldedHead(nnx.Module):
    """The unembedding folded into the head's projections, computed once for a decoding copy
    (``Toto.for_decoding``): kernel [embed, patch_size, parameters] and bias [patch_size, parameters], float32."""

    def __init__(self, kernel: jax.Array, bias: jax.Array):
        self.kernel = nnx.Param(kernel, logical_axes=("embed", "patch", "mixture"))
        self.bias = nnx.Param(bias, logical_axes=("patch", "mixture"))


class Toto(nnx.Module):
    def __init__(self, config: TotoConfig, *, rngs: nnx.Rngs | None = None):
        rngs = nnx.Rngs(0) if rngs is None else rngs
        dtype = jnp.dtype(config.dtype)
        self.config = config
        self.patch_embed = PatchEmbedding(config.patch_size, config.stride, config.embed_dim, dtype=dtype, rngs=rngs)
        self.transformer = Transformer(config, rngs=rngs)
        self.unembed = Dense(
            config.embed_dim, (config.patch_size, config.embed_dim), ("embed", "patch", "unembed"), dtype=dtype,
            rngs=rngs,
        )  # fmt: skip
        self.output_distribution = StudentTHead(
            config.embed_dim,
            config.num_mixture_components,
            mixture=config.distribution == "mixture_student_t",
            rngs=rngs,
        )
        self.variate_labels = VariateLabels(config.embed_dim, rngs=rngs) if config.variate_labels else None
        self.folded_head: FoldedHead | None = nnx.data(None)  # decoding copies only (for_decoding)

    # ---- pieces, used by forecasting to run only what each decode step needs --------------------
    @property
    def num_prepended_tokens(self) -> int:
        return 1 if self.variate_labels is not None else 0

    def scale(self, series, padding_mask, prefix_length=None) -> Scaled:
        c = self.config
        return apply_scaler(
            c.scaler,
            series,
            padding_mask,
            patch_size=c.patch_size,
            stabilize_with_global=c.stabilize_with_global,
            scale_factor_exponent=c.scale_factor_exponent,
            prefix_length=prefix_length,
        )

    def encode(
        self,
        scaled,
        id_mask,
        cache: KVCache | None = None,
        *,
        prepend_labels: bool = True,
        num_exogenous_variables: int = 0,
        dropout_key=None,
    ):
        """Scaled series [batch, variate, time] -> one hidden state per patch [batch, variate, patches, embed].

        With variate labels, the label token is prepended only when ``prepend_labels`` (the first call
        of a cached decode) and is cropped from the output.
        """
        tokens, token_ids = self.patch_embed(scaled, id_mask)
        added = 0
        if self.variate_labels is not None and prepend_labels:
            tokens, token_ids = self.variate_labels.prepend(tokens, token_ids, num_exogenous_variables)
            added = 1
        hidden, cache = self.transformer(tokens, token_ids, cache, dropout_key)
        return hidden[:, :, added:], cache

    def distribution(self, hidden) -> StudentTMixture:
        """Hidden states [..., patches, embed] -> distribution over [..., patches * patch_size] (scaled space).

        The unembedding and the head are both affine, so for many patches they run as one folded kernel
        [embed, patch_size, parameters]: the patch_size x embed unembedded features per patch (a quarter of
        Toto-Open-Base's forward flops, and its backward's largest transposes) are never materialised.
        Folding costs one embed x patch_size x embed x parameters product, so a few patches take the two
        steps instead, unless this is a decoding copy, which holds the folded kernel (``for_decoding``).
        The folded kernel is float32, as the head always is.
        """
        head = self.output_distribution
        if self.folded_head is not None:
            projected = jnp.tensordot(hidden.astype(jnp.float32), self.folded_head.kernel[...], axes=1)
            projected = projected + self.folded_head.bias[...]
        else:
            kernel, bias = head.projection()  # [embed, parameters], [parameters]
            if math.prod(hidden.shape[:-1]) > kernel.shape[-1]:
                folded, folded_bias = self._folded_projection(kernel, bias)
                projected = jnp.tensordot(hidden.astype(jnp.float32), folded, axes=1) + folded_bias
            else:
                projected = jnp.tensordot(self.unembed(hidden).astype(jnp.float32), kernel, axes=1) + bias
        # [..., patches, patch_size, parameters] -> [..., patches * patch_size, parameters]
        return head.from_projected(projected.reshape(*projected.shape[:-3], -1, projected.shape[-1]))

    def _folded_projection(self, kernel, bias, precision=None) -> tuple[jax.Array, jax.Array]:
        """The unembedding folded into the head's ``projection()`` (``kernel``, ``bias``): kernel
        [embed, patch_size, parameters], bias [patch_size, parameters]."""
        unembed_kernel = self.unembed.kernel[...].astype(jnp.float32)  # [embed, patch_size, embed]
        folded = jnp.einsum("ipe,ec->ipc", unembed_kernel, kernel, precision=precision)
        folded_bias = jnp.dot(self.unembed.bias[...].astype(jnp.float32), kernel, precision=precision) + bias
        return folded, folded_bias

    def for_decoding(self) -> Toto:
        """A copy laid out for forecasting's few rows per call: its transformer holds one weight array per layer,
        2D kernels stored [out, in] (``Transformer.with_unstacked_stages``), and its head holds the unembedding
        folded in (``FoldedHead``; at Toto-Open-Base a decoded patch reads 19 MB of head weights instead of
        the unembedding's 151 MB). Its other Variables are this model's own objects: replace their values only
        in a split state."""
        copy = nnx.merge(*nnx.split(self))
        copy.transformer = self.transformer.with_unstacked_stages()
        folded = self._folded_projection(*self.output_distribution.projection(), precision=jax.lax.Precision.HIGHEST)
        copy.folded_head = FoldedHead(*folded)
        return copy

    def init_cache(self, batch: int, variate: int, max_tokens: int, dtype=jnp.float32) -> KVCache:
        return KVCache.create(self.config, batch, variate, max_tokens + self.num_prepended_tokens, dtype)

    # ---- the reference's TotoBackbone.forward --------------------------------------------------
    def __call__(
        self,
        series,
        padding_mask=None,
        id_mask=None,
        *,
        prefix_length=None,
        num_exogenous_variables: int = 0,
        dropout_key=None,
    ) -> TotoOutput:
        """series, padding_mask, id_mask: [batch, variate, time], time a multiple of the patch size.

        NaN values are treated as padding (value 0, mask False). Returns the scaled-space distribution
        and the scaler's loc/scale, like the reference's ``TotoBackbone.forward``.
        """
        series = jnp.asarray(series, jnp.float32)
        if series.ndim != 3:
            raise InputError(f"series must have shape [batch, variate, time], got shape {series.shape}")
        if series.shape[-1] % self.config.patch_size:
            raise InputError(
                f"time steps ({series.shape[-1]}) must be a multiple of the patch size ({self.config.patch_size})"
            )
        missing = jnp.isnan(series)
        padding_mask = jnp.ones(series.shape, bool) if padding_mask is None else jnp.asarray(padding_mask, bool)
        id_mask = jnp.zeros(series.shape, jnp.int32) if id_mask is None else jnp.asarray(id_mask, jnp.int32)
        if padding_mask.shape != series.shape or id_mask.shape != series.shape:
            raise InputError(
                f"padding_mask {padding_mask.shape} and id_mask {id_mask.shape} must match series {series.shape}"
            )
        padding_mask = padding_mask & ~missing
        series = jnp.where(missing, 0.0, series)
        scaled = self.scale(series, padding_mask, prefix_length)
        hidden, _ = self.encode(
            scaled.scaled, id_mask, num_exogenous_variables=num_exogenous_variables, dropout_key=dropout_key
        )
        return TotoOutput(self.distribution(hidden), scaled.loc, scaled.scale)


def count_parameters(model: nnx.Module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
