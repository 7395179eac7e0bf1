"""CEP operators: RxPY operators over record batches, numba kernels in ``_kernels``."""
