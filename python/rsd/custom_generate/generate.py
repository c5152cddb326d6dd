"""transformers ``custom_generate`` entry point of rsd-kernels (loaded by ``model.generate(...,
custom_generate=rsd.CUSTOM_GENERATE_PATH, trust_remote_code=True)``); see :mod:`rsd.hf_generate`."""
from rsd.hf_generate import generate  # noqa: F401
