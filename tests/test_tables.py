"""A user's own table (gpunn.tables, issue 24), with files written as users write them: pandas'
``to_csv()`` defaults (its index first), the csv module's quoting, text labels, a label-first
Kaggle layout, whole-number prices; through the library and end to end through the command
line (run in-process)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import gpunn as gn
from gpunn import cli, tables

pd = pytest.importorskip("pandas")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

FAST = ["--device", "cpu", "--epochs", "60"]


def _gpunn(capsys, *argv):
    status = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def iris():
    """Iris as a user has it: a DataFrame with a text species column."""
    data = sklearn_datasets.load_iris(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame["species"] = data.target_names[data.target]
    return frame


@pytest.fixture(scope="module")
def iris_run(iris, tmp_path_factory):
    """gpunn train on iris.csv as DataFrame.to_csv() writes it (index first, text labels)."""
    folder = tmp_path_factory.mktemp("iris")
    iris.to_csv(folder / "iris.csv")
    status = cli.main(["train", *FAST, "--dataset", str(folder / "iris.csv"), "--out",
                       str(folder / "run"), "--quiet"])
    assert status == 0
    return folder


# ---- reading ------------------------------------------------------------------------------------

@pytest.mark.parametrize("write", [
    lambda frame, path: frame.to_csv(path),  # pandas' defaults: its index first
    lambda frame, path: frame.to_csv(path, quoting=csv.QUOTE_NONNUMERIC),
    lambda frame, path: frame.to_csv(path, quoting=csv.QUOTE_ALL, index=False),
    lambda frame, path: frame.sample(frac=1, random_state=3).sort_index().to_csv(path, sep=";"),
], ids=["to_csv", "quote-nonnumeric", "quote-all", "semicolons"])
def test_pandas_files_read_as_the_frame_they_came_from(iris, tmp_path, write):
    write(iris, tmp_path / "iris.csv")
    table = tables.read_csv(tmp_path / "iris.csv")
    np.testing.assert_array_equal(table.X, iris.drop(columns="species").to_numpy("float32"))
    assert table.y.tolist() == iris["species"].tolist()
    assert table.feature_names == list(iris.columns[:-1]) and table.target_names == ["species"]


def test_the_csv_modules_files_read_alike(tmp_path):
    rows = [["a", "b", "label"], [1.5, 2, "yes"], [3, 4.25, "no"]]
    with open(tmp_path / "plain.csv", "w", newline="") as file:
        csv.writer(file, quoting=csv.QUOTE_NONNUMERIC).writerows(rows)
    table = tables.read_csv(tmp_path / "plain.csv")
    np.testing.assert_array_equal(table.X, [[1.5, 2], [3, 4.25]])
    assert table.y.tolist() == ["yes", "no"] and table.target_why == "named as a target is"


def test_a_label_first_kaggle_layout_takes_the_label_by_name(tmp_path):
    frame = pd.DataFrame({"label": [3, 1, 3, 1], "pixel0": [0, 255, 10, 7],
                          "pixel1": [5, 6, 7, 8]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    table = tables.read_csv(tmp_path / "train.csv")
    assert table.target_names == ["label"] and table.feature_names == ["pixel0", "pixel1"]
    np.testing.assert_array_equal(table.y, [3, 1, 3, 1])


def test_label_features_and_drop_choose_columns_by_name_or_position(tmp_path):
    frame = pd.DataFrame({"id": [7, 8, 9], "x": [1.0, 2, 3], "z": [4.0, 5, 6],
                          "price": [10, 20, 30], "rent": [1, 2, 3]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    table = tables.read_csv(tmp_path / "t.csv", label=["price", "rent"], drop=["id"])
    assert table.feature_names == ["x", "z"] and table.y.shape == (3, 2)
    table = tables.read_csv(tmp_path / "t.csv", label="-2", features=["z", "x"])
    assert table.feature_names == ["z", "x"] and table.target_names == ["price"]
    with pytest.raises(gn.InvalidArgumentError,
                       match=r"--label 'cost': .* no such column; its columns are 'id', 'x'"):
        tables.read_csv(tmp_path / "t.csv", label="cost")


def test_every_empty_cell_is_named_the_first_five_then_a_count(tmp_path):
    frame = pd.DataFrame({"a": [1.0, None, 3, None, None, None, None],
                          "b": [None, 2.0, 3, 4, 5, 6, 7], "label": [0, 1, 0, 1, 0, 1, 0]})
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    with pytest.raises(gn.FileFormatError) as error:
        tables.read_csv(tmp_path / "gaps.csv")
    message = str(error.value)
    assert "6 empty cells (line 2, column 2 ('b'); line 3, column 1 ('a'); line 5, column 1" \
           in message and "and 1 more" in message and "dropna()" in message


@pytest.mark.parametrize("text, fix", [
    ('a,b,label\n"1,234.5",2,0\n"2,000",3,1\n',
     r"'1,234.5' looks like a number with thousands separators: write it without them"),
    ("a;b;label\n3,5;2;0\n4,25;3;1\n", r"'3,5' looks like decimals written with a comma: write "
                                       r"them with a point"),
])
def test_thousands_separators_and_decimal_commas_name_the_cell_and_the_fix(tmp_path, text, fix):
    (tmp_path / "n.csv").write_text(text)
    with pytest.raises(gn.FileFormatError, match=r"n.csv, line 2, column 1 \('a'\): " + fix):
        tables.read_csv(tmp_path / "n.csv")


# ---- labels and the task ----------------------------------------------------------------------

@pytest.mark.parametrize("y, kind, classes", [
    (["setosa", "virginica", "setosa", "versicolor"], "classify",
     ["setosa", "versicolor", "virginica"]),
    ([1, 2, 3, 1, 2, 3], "classify", [1, 2, 3]),  # three outputs, not four
    ([1990, 2000, 2010, 1990, 2000, 2010], "classify", [1990, 2000, 2010]),
    ([-1, 1, 1, -1], "classify", [-1, 1]),
    ([0.5, 1.5, 2.25, 3.0], "regress", None),
    (list(range(100, 300)), "regress", None),  # whole-number prices: as many values as rows
    (list(range(201)) * 3, "regress", None),  # more than MOST_CLASSES
])
def test_the_task_fits_the_labels(y, kind, classes):
    task = tables.infer_task(np.array(y))
    assert (task.kind, task.classes) == (kind, classes)
    if classes:
        assert task.outputs == len(classes)
        np.testing.assert_array_equal(tables.decode(tables.encode(np.array(y), classes),
                                                    classes), y)


def test_a_column_of_labels_means_the_same_as_a_vector():
    assert tables.infer_task(np.array([[0], [1], [2], [1], [0], [2]])).classes == [0, 1, 2]
    assert tables.infer_task(np.array([[0.5], [1.25]])).kind == "regress"


# ---- the command line, end to end --------------------------------------------------------------

def _predict(capsys, model, path, *more):
    status, out, err = _gpunn(capsys, "predict", model, path, "--out", "-", *more)
    assert status == 0, err
    return out, err


def test_iris_with_text_species_and_an_index_predicts_the_same_from_any_layout(
        iris, iris_run, tmp_path, capsys):
    model = iris_run / "run" / "model.npz"
    new = iris.iloc[[0, 55, 120, 20, 70, 140, 3, 99, 101, 60]]
    features = new.drop(columns="species")
    features.to_csv(tmp_path / "clean.csv", index=False)
    clean, _ = _predict(capsys, model, tmp_path / "clean.csv")
    rows = list(csv.reader(clean.splitlines()))
    assert rows[0] == ["species", "P(setosa)", "P(versicolor)", "P(virginica)"]
    labels = [row[0] for row in rows[1:]]
    assert labels == new["species"].tolist()  # an easy ten: the right answers
    features.to_csv(tmp_path / "index.csv")  # pandas' index first
    features.sample(frac=1, random_state=1).sort_values("petal width (cm)").to_csv(
        tmp_path / "shuffled.csv")  # an index that is not 0, 1, 2 ...
    new[list(reversed(new.columns))].to_csv(tmp_path / "reordered.csv")  # the label included
    out, err = _predict(capsys, model, tmp_path / "index.csv")
    assert out == clean and "left out the column unnamed (pandas' index)" in err
    out, _ = _predict(capsys, model, tmp_path / "reordered.csv")
    assert out == clean
    out, _ = _predict(capsys, model, tmp_path / "shuffled.csv")
    order = features.sample(frac=1, random_state=1).sort_values("petal width (cm)").index
    by_row = dict(zip(features.index, rows[1:]))
    shuffled = list(csv.reader(out.splitlines()))[1:]
    assert [row[0] for row in shuffled] == [by_row[index][0] for index in order]
    # the same probabilities, up to the order the BLAS sums a batch of other rows in
    np.testing.assert_allclose(np.array([row[1:] for row in shuffled], dtype=float),
                               np.array([by_row[index][1:] for index in order], dtype=float),
                               rtol=1e-4, atol=1e-7)


def test_predict_refuses_a_file_without_a_feature_naming_it(iris_run, iris, tmp_path, capsys):
    iris.drop(columns=["species", "sepal width (cm)"]).to_csv(tmp_path / "short.csv")
    status, _, err = _gpunn(capsys, "predict", iris_run / "run" / "model.npz",
                            tmp_path / "short.csv", "--out", "-")
    assert status == 1 and "lacks the column 'sepal width (cm)'" in err
    # without a header, one column more is never taken for "features + label"
    iris.to_csv(tmp_path / "bare.csv", header=False, index=False)
    status, _, err = _gpunn(capsys, "predict", iris_run / "run" / "model.npz",
                            tmp_path / "bare.csv", "--out", "-")
    assert status == 1 and "bare.csv has 5 columns, but " in err
    assert "takes 4 feature columns" in err


def test_predictions_as_csv_files_and_npz_with_the_labels(iris_run, iris, tmp_path, capsys):
    model = iris_run / "run" / "model.npz"
    iris.drop(columns="species").head(5).to_csv(tmp_path / "new.csv")
    status, out, _ = _gpunn(capsys, "predict", model, tmp_path / "new.csv", "--out",
                            tmp_path / "p.csv")
    assert status == 0 and "wrote predictions for 5 samples" in out
    frame = pd.read_csv(tmp_path / "p.csv")
    assert frame["species"].tolist() == ["setosa"] * 5
    np.testing.assert_allclose(frame.filter(like="P(").sum(axis=1), 1, rtol=1e-5)
    assert _gpunn(capsys, "predict", model, tmp_path / "new.csv", "--out",
                  tmp_path / "p.csv")[0] == 0  # its own predictions are replaced
    status, _, err = _gpunn(capsys, "predict", model, tmp_path / "new.csv", "--out",
                            tmp_path / "p.txt")
    assert status == 2 and "expected a path ending in .csv (CSV) or .npz" in err
    assert _gpunn(capsys, "predict", model, tmp_path / "new.csv", "--out",
                  tmp_path / "p.npz")[0] == 0
    with np.load(tmp_path / "p.npz") as arrays:
        assert arrays["labels"].tolist() == ["setosa"] * 5


def test_evaluate_and_onnx_know_the_classes_and_the_columns(iris_run, tmp_path, capsys):
    status, out, err = _gpunn(capsys, "evaluate", iris_run / "run" / "model.npz")
    assert status == 0 and "validation split (seed 0), 30 samples" in out
    assert float(out.split("accuracy ")[1].split()[0].rstrip(",")) >= 0.9
    onnx = pytest.importorskip("onnx")
    assert _gpunn(capsys, "export", iris_run / "run" / "model.npz", tmp_path / "m.onnx")[0] == 0
    props = {prop.key: prop.value for prop in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert json.loads(props["classes"]) == ["setosa", "versicolor", "virginica"]
    assert json.loads(props["feature_names"])[0] == "sepal length (cm)"


def test_a_training_file_with_an_index_trains_on_the_features_alone(iris, tmp_path, capsys):
    # sorted by species, the index gave the label away: validation 1.0000, then every
    # virginica misclassified on new rows
    iris.sort_values("species").reset_index(drop=True).to_csv(tmp_path / "sorted.csv")
    status, out, err = _gpunn(capsys, "train", *FAST, "--dataset", tmp_path / "sorted.csv",
                              "--out", tmp_path / "run")
    assert status == 0 and "Dropped the first column (unnamed: the index pandas writes" in out
    assert "4 features: 'sepal length (cm)'" in out
    with np.load(tmp_path / "run" / "model.npz") as arrays:
        header = json.loads(arrays["__gpunn__"].tobytes())
    assert header["feature_names"] == list(iris.columns[:-1])
    assert _gpunn(capsys, "train", *FAST, "--dataset", tmp_path / "sorted.csv", "--out",
                  tmp_path / "kept", "--keep-first-column")[1].count("5 features") == 1


def test_whole_number_prices_default_to_a_scaled_regression(tmp_path, capsys):
    rng = np.random.default_rng(0)
    area, rooms = rng.uniform(50, 300, 200), rng.integers(1, 6, 200)
    price = (1500 * area + 20000 * rooms + rng.normal(0, 10000, 200)).round().astype(int)
    pd.DataFrame({"area": area.round(1), "rooms": rooms, "price": price}).to_csv(
        tmp_path / "houses.csv", index=False)
    status, out, _ = _gpunn(capsys, "train", *FAST, "--dataset", tmp_path / "houses.csv",
                            "--out", tmp_path / "run")
    assert status == 0 and "regression (" in out and "network 2-64-64-1" in out
    r2 = float(out.rsplit("R² ", 1)[1].split()[0])
    assert r2 >= 0.95, out
    pd.DataFrame({"rooms": [3], "area": [120.0]}).to_csv(tmp_path / "new.csv", index=False)
    out, _ = _predict(capsys, tmp_path / "run" / "model.npz", tmp_path / "new.csv")
    assert out.splitlines()[0] == "price"
    assert abs(float(out.splitlines()[1]) - (1500 * 120 + 20000 * 3)) < 30000  # dollars


def test_several_targets_from_a_csv_by_name(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["low"], frame["high"] = X @ [1.0, 2, 0] * 50 + 7, X @ [0.0, 1, -1] * 3
    frame.to_csv(tmp_path / "two.csv", index=False)
    status, out, _ = _gpunn(capsys, "train", *FAST, "--dataset", tmp_path / "two.csv",
                            "--label", "low,high", "--out", tmp_path / "run")
    assert status == 0 and "regression (2 target columns)" in out and "3-64-64-2" in out
    assert float(out.rsplit("R² ", 1)[1].split()[0]) >= 0.9
    out, _ = _predict(capsys, tmp_path / "run" / "model.npz", tmp_path / "two.csv")
    assert out.splitlines()[0] == "low,high"


def test_an_npz_column_of_labels_is_a_classification_on_the_command_line(tmp_path, capsys):
    X, y = gn.datasets.spiral_data(samples=30, classes=3, seed=0)
    np.savez(tmp_path / "col.npz", X=X, y=y.reshape(-1, 1))
    for task in ([], ["--task", "classify"]):  # was "targets that are not whole numbers"
        status, out, _ = _gpunn(capsys, "train", "--device", "cpu", "--epochs", "2", "--dataset",
                                tmp_path / "col.npz", *task, "--out", tmp_path / f"r{len(task)}")
        assert status == 0 and "classification into 3 classes" in out


def test_text_labels_with_task_regress_are_refused_with_the_reason(iris, tmp_path, capsys):
    iris.to_csv(tmp_path / "iris.csv", index=False)
    status, _, err = _gpunn(capsys, "train", *FAST, "--dataset", tmp_path / "iris.csv", "--task",
                            "regress", "--out", tmp_path / "run")
    assert status == 2 and "--task regress needs numbers; " in err
    assert "iris.csv's targets are text (e.g. '" in err


# ---- the Python API's mistakes, refused early ---------------------------------------------------

def _model(*layers, loss, accuracy):
    model = gn.Model(device="cpu")
    for layer in layers:
        model.add(layer)
    model.set(loss=loss, optimizer=gn.Adam(), accuracy=accuracy)
    return model


def test_categorical_crossentropy_without_softmax_is_refused_at_finalize():
    model = _model(gn.Dense(2, 3), loss=gn.CategoricalCrossentropy(),
                   accuracy=gn.CategoricalAccuracy())
    with pytest.raises(gn.InvalidArgumentError, match=r"add gn.Softmax\(\) as the last layer"):
        model.finalize()


def test_one_sigmoid_output_with_the_categorical_accuracy_counts_each_sample_once():
    X, y = gn.datasets.spiral_data(samples=50, classes=2, seed=0)
    model = _model(gn.Dense(2, 8), gn.ReLU(), gn.Dense(8, 1), gn.Sigmoid(),
                   loss=gn.BinaryCrossentropy(), accuracy=gn.CategoricalAccuracy())
    model.finalize()
    history = model.train(X, y, epochs=3, verbose=0)  # was 50.0: 100 x 100 comparisons
    assert all(0 <= value <= 1 for value in history["accuracy"])
    assert history["accuracy"][-1] == pytest.approx(model.evaluate(X, y)[1], abs=0.05)


def test_train_for_zero_epochs_is_refused():
    model = _model(gn.Dense(2, 3), gn.Softmax(), loss=gn.CategoricalCrossentropy(),
                   accuracy=gn.CategoricalAccuracy())
    model.finalize()
    with pytest.raises(gn.InvalidArgumentError, match="epochs must be >= 1; received epochs=0"):
        model.train(np.zeros((2, 2)), [0, 1], epochs=0)


def test_predict_on_a_dataframe_takes_the_columns_by_name(iris):
    model = _model(gn.Dense(4, 3), gn.Softmax(), loss=gn.CategoricalCrossentropy(),
                   accuracy=gn.CategoricalAccuracy())
    model.finalize()
    features = iris.drop(columns="species")
    model.train(features, iris["species"], epochs=2, verbose=0)
    assert model.feature_names == list(features.columns)
    np.testing.assert_array_equal(model.predict(features[features.columns[::-1]]),
                                  model.predict(features))
    with pytest.raises(gn.InvalidArgumentError, match="X lacks the column 'petal width"):
        model.predict(features.drop(columns="petal width (cm)"))


# ---- on every device -------------------------------------------------------------------------

def test_user_labels_and_target_scaling_on_every_device(backend, tmp_path):
    """Text classes and a scaled regression train, predict and reload alike on each device
    (on the CuPy double: the host code that moves labels and scales, not a GPU's numbers)."""
    from helpers import build_model

    X, index = gn.datasets.spiral_data(samples=40, classes=3, seed=0)
    names = np.array(["arm a", "arm b", "arm c"])[index]
    gn.seed(0)
    model = build_model(backend, (2, 16, 3), learning_rate=0.05)
    model.train(X, names, epochs=60, batch_size=32, verbose=0)
    assert model.classes == ["arm a", "arm b", "arm c"]
    labels = model.predict_labels(X)
    np.testing.assert_array_equal(labels, np.array(model.classes)[model.predict(X).argmax(1)])
    assert model.evaluate(X, names) == model.evaluate(X, index)  # the same classes either way
    model.save(tmp_path / "classes.npz")
    np.testing.assert_array_equal(gn.Model.load(tmp_path / "classes.npz",
                                                device=backend).predict_labels(X), labels)
    y = 5e4 * X[:, 0] + 2e5
    regression = build_model(backend, (2, 16, 1), head="linear", learning_rate=0.01)
    regression.set(target_scaling=gn.Standardize.fit(y.reshape(-1, 1)))
    regression.finalize()
    regression.train(X, y, epochs=40, batch_size=32, verbose=0)
    predicted = regression.predict(X)
    assert gn.accuracy.r_squared(predicted, y) > 0.9 and abs(predicted.mean() - 2e5) < 2e4
    regression.save(tmp_path / "scaled.npz")
    np.testing.assert_allclose(gn.Model.load(tmp_path / "scaled.npz", device=backend).predict(X),
                               predicted, rtol=1e-6)
