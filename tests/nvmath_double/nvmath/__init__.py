"""A test double of nvmath-python: the parts gpunn calls (``nvmath.bindings.cublas``), on the
CuPy double's simulated devices (cuda-sim:N). NOT nvmath-python and NOT a GPU. Importable only
beside the CuPy double (``pytest --cupy-double``); see tests/nvmath_double/README.md."""

from nvmath import _api

__version__ = _api.API["nvmath_version"]

CudaDataType = _api.real_enum("nvmath", "CudaDataType")
ComputeType = _api.real_enum("nvmath", "ComputeType")

_api.verify("nvmath", globals())
