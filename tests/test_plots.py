"""training.png (gpunn/plots.py)."""

from __future__ import annotations

from conftest import require
from helpers import build_model

import gpunn as gn
from gpunn import plots


def test_the_decision_regions_have_a_legend_naming_each_class():
    require(plots.missing() is None, f"matplotlib is needed: {plots.missing()}")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    X, y = gn.datasets.spiral_data(20, 3, seed=0)
    model = build_model("cpu", (2, 8, 3))
    figure, ax = pyplot.subplots()
    try:
        plots._decision_regions(ax, model, X, y)
        legend = ax.get_legend()
        assert legend is not None
        assert [text.get_text() for text in legend.get_texts()] == [
            "class 0", "class 1", "class 2"]
    finally:
        pyplot.close(figure)

