"""Test session set-up: CPU JAX with 8 virtual devices (for sharding tests), quiet warnings."""

import os
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

warnings.filterwarnings("ignore", category=ImportWarning)
