"""The Toto model families, side by side over the shared layers in ``toto_jax.layers``.

- ``toto1``: Toto 1.0 (toto-ts): Student-T mixture head, autoregressive decoding.
- ``toto2``: Toto 2.0 (toto-2): u-muP unit-scaled layers, grouped-query attention, quantile head.
"""
