#!/usr/bin/env bash
# Both benchmarks with both sides on the first GPU (JAX on CUDA, the reference on CUDA), one run, logs under
# ${OUT:-out/gpu}. Run from the repository root on a machine whose python3 has jax[cuda], flax, torch and
# the reference (toto-ts and its imports).
set -uo pipefail
logs=${OUT:-out/gpu}
mkdir -p "$logs"
export JAX_PLATFORMS=cuda PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# train.py holds both sides in one process: leave PyTorch room beside JAX's preallocated pool.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.6
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.draw --format=csv | tee "$logs/gpu.txt"
python3 -c "import jax, flax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, jax.devices())" | tee -a "$logs/gpu.txt"
uptime | tee -a "$logs/gpu.txt"
timeout "${TRAIN_TIMEOUT:-330}" python3 benchmarks/train.py --dtypes bfloat16,float32 --steps 20 --base-steps 10 \
    2>&1 | tee "$logs/train.log"
timeout "${FORECAST_TIMEOUT:-200}" python3 benchmarks/forecast.py --repeats 5 --reference-repeats 5 \
    2>&1 | tee "$logs/forecast.log"
