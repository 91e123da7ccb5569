"""What DTYPE=auto gives tiny-starcoder on this machine: "float32", or "bfloat16" on a CPU with
AMX or AVX512-BF16 (model/engines/loading.py). For tests whose numbers are fp32's there and
bf16's here: a tolerance, a KV cache's bytes."""

from model.engines.loading import choose_placement

TINY_AUTO_DTYPE = choose_placement("cpu").dtype
TINY_AUTO_BYTES = 4 if TINY_AUTO_DTYPE == "float32" else 2
