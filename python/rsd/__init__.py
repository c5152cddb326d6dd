"""rsd: the speculative decoding loop and evaluation built on ``rsd_kernels``."""
__version__ = "0.1.0"
