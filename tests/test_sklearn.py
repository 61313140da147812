"""gpunn.sklearn: scikit-learn's own estimator checks, Pipeline, GridSearchCV and
cross_val_score on scikit-learn's data sets beside scikit-learn's MLP, labels of any type,
DataFrame feature names, and pickles that hold host arrays whatever the device."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="gpunn.sklearn needs scikit-learn (the dev "
                              "extra has it)")
from sklearn import datasets, neural_network  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import gpunn as gn  # noqa: E402
from gpunn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# scikit-learn's documented way to declare checks a model cannot pass, with the reason.
EXPECTED_FAILURES = {
    "MLPClassifier": {
        "check_methods_subset_invariance":
            "float32 products: BLAS sums a row's terms in another order for another number of "
            "rows, so probabilities of a subset differ by about 1e-7 (float32's rounding), "
            "above the check's atol of 1e-7",
    },
}


@parametrize_with_checks([MLPClassifier(device="cpu"), MLPRegressor(device="cpu")],
                         expected_failed_checks=lambda estimator: EXPECTED_FAILURES.get(
                             type(estimator).__name__, {}))
def test_scikit_learns_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # theirs
def test_pipeline_and_cross_val_score_on_wine_match_scikit_learns_mlp():
    X, y = datasets.load_wine(return_X_y=True)
    settings = {"hidden_layer_sizes": (32,), "max_iter": 150, "learning_rate_init": 0.01,
                "random_state": 0}
    ours = cross_val_score(make_pipeline(StandardScaler(), MLPClassifier(**settings,
                                                                        device="cpu")),
                           X, y, cv=3)
    theirs = cross_val_score(make_pipeline(StandardScaler(), neural_network.MLPClassifier(
        **settings)), X, y, cv=3)
    assert ours.mean() >= theirs.mean() - 0.03, (ours, theirs)


def test_grid_search_keeps_the_users_labels_and_feature_names():
    pandas = pytest.importorskip("pandas")
    X, y = datasets.load_iris(return_X_y=True, as_frame=True)
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y.to_numpy()]
    search = GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier(
        max_iter=60, learning_rate_init=0.01, random_state=0, device="cpu")),
        {"mlpclassifier__hidden_layer_sizes": [(8,), (16, 16)]}, cv=3)
    search.fit(X, names)
    classifier = search.best_estimator_[-1]
    assert list(classifier.classes_) == ["setosa", "versicolor", "virginica"]
    assert set(search.predict(X)) <= set(names)
    assert search.score(X, names) > 0.9
    fitted = MLPClassifier(max_iter=5, device="cpu").fit(X, names)
    assert list(fitted.feature_names_in_) == list(X.columns)
    with pytest.warns(UserWarning, match="feature names"):
        fitted.predict(X.to_numpy())
    assert isinstance(X, pandas.DataFrame)


def test_early_stopping_keeps_the_best_validation_epoch():
    X, y = datasets.load_digits(return_X_y=True)
    classifier = MLPClassifier((32,), early_stopping=True, n_iter_no_change=3, max_iter=200,
                               learning_rate_init=0.01, random_state=0, device="cpu")
    classifier.fit(X / 16, y)
    assert classifier.n_iter_ < 200 and classifier.stopped_["epoch"] == classifier.n_iter_
    assert classifier.best_validation_score_ == max(classifier.validation_scores_)
    assert len(classifier.loss_curve_) == classifier.n_iter_ and classifier.best_loss_ is None


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # theirs
def test_regressor_on_diabetes_is_within_scikit_learns_r2():
    X, y = datasets.load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    settings = {"hidden_layer_sizes": (32,), "max_iter": 300, "learning_rate_init": 0.01,
                "random_state": 0}
    ours = cross_val_score(MLPRegressor(**settings, device="cpu"), X, y, cv=3).mean()
    theirs = cross_val_score(neural_network.MLPRegressor(**settings), X, y, cv=3).mean()
    assert ours >= theirs - 0.05, (ours, theirs)
    two = MLPRegressor((8,), max_iter=20, random_state=0, device="cpu").fit(
        X, np.stack([y, -y], axis=1))
    assert two.predict(X).shape == (len(X), 2)


def test_a_fitted_estimator_pickles_to_host_arrays_and_loads_without_a_gpu(backend, tmp_path):
    X, y = datasets.load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    classifier = MLPClassifier((16,), max_iter=20, random_state=0, device=backend.device)
    classifier.fit(X, y)
    assert classifier.model_.device == backend.device
    data = pickle.dumps(classifier)
    assert b"cupy" not in data
    path = tmp_path / "classifier.pkl"
    path.write_bytes(data)
    np.save(tmp_path / "X.npy", X)
    expected = classifier.predict_proba(X)
    # A fresh interpreter without the CuPy double: a machine without a GPU.
    code = ("import pickle, sys, numpy; c = pickle.load(open(sys.argv[1], 'rb')); "
            "numpy.save(sys.argv[3], c.predict_proba(numpy.load(sys.argv[2]))); "
            "print(c.model_.device)")
    result = subprocess.run([sys.executable, "-c", code, path, tmp_path / "X.npy",
                             tmp_path / "p.npy"], capture_output=True, text=True, cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cpu"
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, rtol=1e-5, atol=1e-6)
    if backend.device != "cpu":
        assert "loads on the CPU" in result.stderr


def test_bad_parameters_say_what_was_received():
    X, y = datasets.load_iris(return_X_y=True)
    for parameters, message in (({"hidden_layer_sizes": (8, 0)}, "hidden_layer_sizes must be"),
                                ({"activation": "gelu"}, "activation must be one of relu"),
                                ({"batch_size": 0}, "batch_size must be 'auto'")):
        with pytest.raises(gn.InvalidArgumentError, match=message):
            MLPClassifier(**parameters, device="cpu").fit(X, y)


def test_gpunn_imports_scikit_learn_only_in_gpunn_sklearn():
    code = ("import sys, gpunn, gpunn.cli, gpunn.callbacks; "
            "assert 'sklearn' not in sys.modules, 'imported'; import gpunn.sklearn; "
            "assert 'sklearn' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_partial_fit_is_one_epoch_of_fit_and_needs_the_classes_first():
    X, y = datasets.load_wine(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    labels = np.array(["barolo", "grignolino", "barbera"])[y]
    settings = {"hidden_layer_sizes": (16,), "shuffle": False, "random_state": 3,
                "learning_rate_init": 0.01, "device": "cpu"}
    whole = MLPClassifier(**settings, max_iter=6, n_iter_no_change=10).fit(X, labels)
    stepwise = MLPClassifier(**settings)
    with pytest.raises(gn.InvalidArgumentError, match="partial_fit needs classes="):
        stepwise.partial_fit(X, labels)
    for _ in range(6):
        stepwise.partial_fit(X, labels, classes=["barbera", "barolo", "grignolino"])
    assert stepwise.n_iter_ == whole.n_iter_ == 6
    np.testing.assert_allclose(stepwise.loss_curve_, whole.loss_curve_, rtol=1e-6)
    np.testing.assert_array_equal(stepwise.predict(X), whole.predict(X))
    with pytest.raises(gn.InvalidArgumentError, match="not among classes_"):
        stepwise.partial_fit(X[:3], ["nebbiolo"] * 3)
    regressor = MLPRegressor((8,), random_state=0, device="cpu")
    for _ in range(3):
        regressor.partial_fit(X, y.astype(float))
    assert regressor.n_iter_ == 3 and regressor.predict(X).shape == (len(X),)
