"""gpunn: neural networks from scratch, on NumPy or on a CUDA GPU with our own kernels."""

from gpunn import callbacks, datasets, distributed
from gpunn.accuracy import CategoricalAccuracy, RegressionAccuracy
from gpunn.activations import LeakyReLU, Linear, ReLU, Sigmoid, Softmax, Tanh
from gpunn.backend import device, seed
from gpunn.errors import (
    DeviceOutOfMemoryError,
    DeviceUnavailableError,
    FileFormatError,
    FileWriteError,
    GpunnError,
    InvalidArgumentError,
    InvalidTypeError,
    OverwriteRefusedError,
    TrainingDivergedError,
)
from gpunn.layers import Dense, Dropout, Standardize
from gpunn.losses import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    MeanAbsoluteError,
    MeanSquaredError,
)
from gpunn.model import History, Model
from gpunn.optimizers import SGD, Adagrad, Adam, RMSprop

__version__ = "0.1.0"

__all__ = [
    "Adagrad",
    "Adam",
    "BinaryCrossentropy",
    "CategoricalAccuracy",
    "CategoricalCrossentropy",
    "Dense",
    "DeviceOutOfMemoryError",
    "DeviceUnavailableError",
    "Dropout",
    "FileFormatError",
    "FileWriteError",
    "GpunnError",
    "History",
    "InvalidArgumentError",
    "InvalidTypeError",
    "LeakyReLU",
    "Linear",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Model",
    "OverwriteRefusedError",
    "RMSprop",
    "ReLU",
    "RegressionAccuracy",
    "SGD",
    "Sigmoid",
    "Softmax",
    "Standardize",
    "Tanh",
    "TrainingDivergedError",
    "callbacks",
    "datasets",
    "device",
    "distributed",
    "seed",
]
