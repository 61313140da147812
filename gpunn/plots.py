"""training.png: the loss and accuracy curves of a run, train and validation, and what the
network learned: the decision regions for 2-D classification data, the fitted curve for 1-D
regression data.

matplotlib is optional (``pip install 'gpunn[plot]'``). The figure is drawn with matplotlib's
object API on the Agg canvas, never through pyplot, so it needs no display and leaves
matplotlib's global state alone.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy

from gpunn import files
from gpunn.activations import Linear, Softmax

INSTALL_HINT = "pip install 'gpunn[plot]'"
GRID = 200  # points per axis of the decision-region grid: 40,000 predictions, a few ms
KIND = "training plot"  # what gpunn.files calls training.png
SOFTWARE = "gpunn "  # the start of the PNG's Software text, which says who drew it
PNG = b"\x89PNG\r\n\x1a\n"


def missing() -> str | None:
    """Why a plot cannot be drawn (matplotlib not importable), or None when it can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        return f"matplotlib is not installed ({error}); {INSTALL_HINT} draws it"
    return None


def training_figure(path: str | os.PathLike, history: dict[str, list[float]], *,
                    model: Any = None, X: numpy.ndarray | None = None,
                    y: numpy.ndarray | None = None, title: str = "", force: bool = False) -> None:
    """Write the training plot to ``path`` (PNG). ``history`` maps "loss", "accuracy",
    "val_loss", "val_accuracy" to per-epoch values; with ``model`` and its training data (X, y)
    a third panel shows what the model learned, when the data can be drawn in 2-D. An existing
    file is replaced only when it is a training plot gpunn drew, or with ``force``.
    Example: ``training_figure("training.png", history, model=model, X=X, y=y)``."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from gpunn import __version__

    files.check(path, KIND, kind_of, force=force)  # before drawing; the write checks again
    draw_data = model is not None and X is not None and y is not None and _drawable(model, X)
    figure = Figure(figsize=(15 if draw_data else 10, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3 if draw_data else 2)
    if title:
        figure.suptitle(title)
    _curves(axes[0], history, "loss", "loss", log=True)
    accuracy = getattr(model, "accuracy", None)
    precision = getattr(accuracy, "precision", None)
    _curves(axes[1], history, "accuracy", "accuracy" if precision is None else
            f"accuracy: share within ±{precision:.2g} of the target", log=False)
    axes[1].set_ylim(-0.02, 1.02)
    if draw_data:
        if X.shape[1] == 2:
            _decision_regions(axes[2], model, X, y)
        else:
            _regression_fit(axes[2], model, X, y)
    # The Software text marks the file as gpunn's, so that a later run may replace it.
    software = f"{SOFTWARE}{__version__} (matplotlib {matplotlib.__version__})"
    files.write(path, KIND, kind_of, lambda file: figure.savefig(
        file, format="png", metadata={"Software": software}), force=force)


def kind_of(path: str | os.PathLike) -> str | None:
    """``KIND`` for a PNG that gpunn drew (its Software text starts with "gpunn "), else None."""
    try:
        with open(path, "rb") as file:
            if file.read(len(PNG)) != PNG:
                return None
            while len(chunk := file.read(8)) == 8:  # each chunk: length, type, data, CRC
                length, name = struct.unpack(">I4s", chunk)
                if name in (b"IDAT", b"IEND"):  # the text chunks matplotlib writes come first
                    return None
                if name == b"tEXt" and length < 4096:
                    if file.read(length).startswith(b"Software\0" + SOFTWARE.encode()):
                        return KIND
                    file.seek(4, os.SEEK_CUR)
                else:
                    file.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return None
    return None


def _drawable(model: Any, X: numpy.ndarray) -> bool:
    last = model.layers[-1]
    return X.ndim == 2 and (X.shape[1] == 2 and isinstance(last, Softmax)
                            or X.shape[1] == 1 and isinstance(last, Linear))


def _curves(ax: Any, history: dict[str, list[float]], key: str, label: str, *,
            log: bool) -> None:
    for name, style in ((key, "-"), ("val_" + key, "--")):
        values = numpy.asarray(history.get(name, []), dtype=float)
        if values.size:
            epochs = numpy.arange(1, values.size + 1)
            ax.plot(epochs, values, style, label="validation" if name != key else "train")
    values = numpy.asarray(history.get(key, []), dtype=float)
    # A loss falling over decades (a regression's) reads best on a log scale.
    if log and values.size and numpy.all(values > 0) and values.max() > 100 * values.min():
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(label)
    ax.grid(True, alpha=0.3)
    if values.size:
        ax.legend()


def _decision_regions(ax: Any, model: Any, X: numpy.ndarray, y: numpy.ndarray) -> None:
    from matplotlib.colors import ListedColormap

    y = numpy.asarray(y).astype(int).ravel()
    low, high = X.min(axis=0), X.max(axis=0)
    margin = 0.1 * (high - low) + 1e-6
    xs = numpy.linspace(low[0] - margin[0], high[0] + margin[0], GRID)
    ys = numpy.linspace(low[1] - margin[1], high[1] + margin[1], GRID)
    grid_x, grid_y = numpy.meshgrid(xs, ys)
    points = numpy.c_[grid_x.ravel(), grid_y.ravel()].astype(numpy.float32)
    regions = model.predict(points).argmax(axis=1).reshape(grid_x.shape)
    classes = max(int(y.max()), int(regions.max())) + 1
    colors = [f"C{index % 10}" for index in range(classes)]
    ax.contourf(grid_x, grid_y, regions, levels=numpy.arange(classes + 1) - 0.5,
                cmap=ListedColormap(colors), alpha=0.3)
    for label in range(classes):  # one scatter per class, so the legend names each color
        points = X[y == label]
        if len(points):
            ax.scatter(points[:, 0], points[:, 1], color=colors[label], s=12, edgecolors="k",
                       linewidths=0.3, label=f"class {label}")
    ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    ax.set_title("decision regions (training points)")
    ax.set_aspect("equal", adjustable="datalim")


def _regression_fit(ax: Any, model: Any, X: numpy.ndarray, y: numpy.ndarray) -> None:
    order = numpy.argsort(X[:, 0])
    ax.plot(X[order, 0], numpy.asarray(y).reshape(len(X), -1)[order, 0], ".", markersize=3,
            label="data")
    ax.plot(X[order, 0], model.predict(X[order])[:, 0], "-", label="model")
    ax.set_title("fit (training data)")
    ax.legend()
