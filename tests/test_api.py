"""The package's top-level API: light import, stable names."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light_and_names_resolve_lazily():
    """`import toto_jax` (done by every data-loader worker) must not pull in jax; names load on use."""
    code = (
        "import sys, toto_jax; assert 'jax' not in sys.modules, 'jax imported eagerly';"
        "import toto_jax.forecasting, toto_jax.forecasting.options;"
        "assert 'jax' not in sys.modules, 'the forecasting package or its options imported jax';"
        "import toto_jax.forecasting.cli;"
        "assert toto_jax.forecast is toto_jax.forecasting.forecast is toto_jax.forecasting.api.forecast;"
        "assert toto_jax.ForecastOptions is toto_jax.forecasting.ForecastOptions;"
        "assert toto_jax.Toto.__name__ == 'Toto' and callable(toto_jax.load)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    import toto_jax

    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        toto_jax.nonexistent  # noqa: B018
