"""gpunn: neural networks from scratch, on NumPy or on a CUDA GPU with our own kernels."""

from gpunn.activations import LeakyReLU, Linear, ReLU, Sigmoid, Softmax, Tanh
from gpunn.backend import device, seed
from gpunn.errors import (
    DeviceUnavailableError,
    FileFormatError,
    GpunnError,
    InvalidArgumentError,
    InvalidTypeError,
    TrainingDivergedError,
)
from gpunn.layers import Dense, Dropout

__version__ = "0.1.0"
