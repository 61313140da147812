"""``cupy_backends.cuda.libs.cublas.CUBLASError`` of the CuPy double.

Not in cupy_api.json: the real module loads libcublas when imported, which a machine without
the CUDA libraries cannot do; the class is copied from CuPy's source (cupy_backends/cuda/libs/
cublas.pyx): a RuntimeError whose ``status`` is the cublasStatus_t and whose text is its name.
"""

STATUS = {1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
          7: "CUBLAS_STATUS_INVALID_VALUE", 13: "CUBLAS_STATUS_EXECUTION_FAILED"}


class CUBLASError(RuntimeError):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(STATUS.get(status, f"CUBLAS_STATUS_{status}"))

    def __reduce__(self):
        return (type(self), (self.status,))
