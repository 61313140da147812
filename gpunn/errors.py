"""The exceptions gpunn raises. Every one derives from GpunnError."""


class GpunnError(Exception):
    """Base class of every error gpunn raises."""


class InvalidArgumentError(GpunnError, ValueError):
    """A value was out of range or malformed: a shape, a hyperparameter, a device spec."""


class InvalidTypeError(GpunnError, TypeError):
    """An argument had the wrong type."""


class DeviceUnavailableError(GpunnError, RuntimeError):
    """The device the user asked for exists as a name but cannot be used on this machine."""


class FileFormatError(GpunnError, ValueError):
    """A file to load is truncated, foreign, of another version, or otherwise not ours."""


class FileWriteError(GpunnError, OSError):
    """A file could not be written: its folder is missing or not writable, the disk is full."""


class OverwriteRefusedError(FileWriteError, FileExistsError):
    """Writing would replace a file gpunn must not replace: one it did not write as the same
    kind of output, a read-only one, or one the same command reads."""


class TrainingDivergedError(GpunnError, FloatingPointError):
    """The loss became NaN or inf during training."""


class DeviceOutOfMemoryError(GpunnError, MemoryError):
    """The device ran out of memory; the message suggests a batch size that fits."""
