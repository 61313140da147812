"""User data in the forms people hold it (gpunn/_data.py): pandas DataFrames and Series, beside
the NumPy, CuPy and DLPack arrays that tests/test_model.py covers."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import require
from helpers import build_model

import gpunn as gn
from gpunn import _data


def _pandas():
    try:
        import pandas
    except ImportError:
        pandas = None
    require(pandas is not None, "pandas is not installed (the dev extra brings it)")
    return pandas


def _classifier(backend, features=2):
    return build_model(backend, (features, 16, 3), learning_rate=0.05)


@pytest.fixture
def spiral():
    X, y = gn.datasets.spiral_data(samples=50, classes=3, seed=1)
    X_val, y_val = gn.datasets.spiral_data(samples=20, classes=3, seed=2)
    return X, y, X_val, y_val


def test_dataframes_and_series_train_evaluate_and_predict_like_numpy_arrays(backend, spiral):
    # A DataFrame was refused: "X must be an array ...; received DataFrame".
    pd = _pandas()
    X, y, X_val, y_val = spiral
    frames = (lambda a: pd.DataFrame(a, columns=["x", "y"]), lambda a: pd.Series(a, name="arm"))
    columns = (pd.DataFrame, lambda a: pd.DataFrame({"arm": a}))  # labels in one column
    results = []
    for to_X, to_y in [(np.asarray, np.asarray), frames, columns]:
        gn.seed(5)
        model = _classifier(backend)
        history = model.train(to_X(X), to_y(y), epochs=3, batch_size=32, verbose=0,
                              validation_data=(to_X(X_val), to_y(y_val)))
        results.append((history, model.evaluate(to_X(X_val), to_y(y_val)),
                        model.predict(to_X(X_val))))
    for result in results[1:]:
        assert result[:2] == results[0][:2]
        np.testing.assert_array_equal(result[2], results[0][2])


def test_a_frame_of_one_dtype_is_shared_not_copied(spiral):
    pd = _pandas()
    X, y, *_ = spiral
    # float32 and int64: the model's dtype and the class indices' (as for NumPy arrays)
    frame, labels = pd.DataFrame(X), pd.Series(y.astype(np.int64))
    prepared, prepared_y = _data.prepare(_classifier("cpu"), frame, labels, "X", "y")
    assert np.shares_memory(prepared, frame.to_numpy())
    assert np.shares_memory(prepared_y, labels.to_numpy())


def test_a_frame_of_mixed_dtypes_is_copied_once_into_the_models_dtype():
    pd = _pandas()
    frame = pd.DataFrame({"rooms": np.array([1, 2, 3], dtype=np.int64),
                          "area": np.array([20.5, 41.0, 63.5]),
                          "garden": pd.array([True, False, True], dtype="boolean")})
    prepared, _ = _data.prepare(_classifier("cpu", 3), frame, [0, 1, 2], "X", "y")
    assert prepared.dtype == np.float32
    np.testing.assert_array_equal(prepared, [[1, 20.5, 1], [2, 41, 0], [3, 63.5, 1]])


def test_non_numeric_columns_are_named_with_their_dtypes_and_what_to_do():
    pd = _pandas()
    frame = pd.DataFrame({"rooms": [1.0, 2.0], "city": ["Oslo", "Bergen"],
                          "kind": pd.Categorical(["flat", "house"]),
                          "sold": pd.to_datetime(["2020-01-01", "2021-06-30"])})
    with pytest.raises(gn.GpunnError) as error:
        _classifier("cpu", 4).predict(frame)
    message = str(error.value)
    assert "X has non-numeric columns 'city' (" in message
    assert "'kind' (category)" in message and "'sold' (datetime64" in message
    assert "'rooms'" not in message and "pandas.get_dummies(X" in message


@pytest.mark.parametrize("dtype", ["str", "object", "category"])
def test_text_labels_are_the_classes_in_training_and_read_by_them_after(dtype):
    # issue 24: text labels were refused; they are the classes, sorted (LabelEncoder's order)
    pd = _pandas()
    y = pd.Series(["dog", "cat", "dog", "bird"], dtype=dtype)
    model = _classifier("cpu")
    with pytest.raises(gn.GpunnError, match="y holds text labels, but the model has no classes"):
        model.evaluate(np.zeros((4, 2)), y)
    model.train(np.zeros((4, 2)), y, epochs=1, verbose=0)
    assert model.classes == ["bird", "cat", "dog"]
    assert model.predict_labels(np.zeros((2, 2))).tolist()[0] in model.classes
    with pytest.raises(gn.GpunnError, match=r"y has label 'fish' that the model does not know; "
                                            r"its classes are 'bird', 'cat', 'dog'"):
        model.evaluate(np.zeros((2, 2)), pd.Series(["cat", "fish"], dtype=dtype))


def test_nullable_columns_convert_and_missing_values_are_named():
    pd = _pandas()
    X = pd.DataFrame({"a": pd.array([1, 2, 3], dtype="Int64"),
                      "b": pd.array([0.5, 1.5, 2.5], dtype="Float64")})
    y = pd.Series(pd.array([0, 2, 1], dtype="Int64"))
    model = _classifier("cpu")
    prepared, labels = _data.prepare(model, X, y, "X", "y")
    np.testing.assert_array_equal(prepared, [[1, 0.5], [2, 1.5], [3, 2.5]])
    np.testing.assert_array_equal(labels, [0, 2, 1])
    X.loc[1, "b"] = pd.NA
    with pytest.raises(gn.InvalidArgumentError, match=r"X has missing values \(NA\) in columns "
                                                      r"'b' \(Float64\); fill them first"):
        model.train(X, y, verbose=0)
    y[0] = pd.NA
    with pytest.raises(gn.InvalidArgumentError, match=r"y has missing values \(NA\) in its "
                                                      r"Int64 values"):
        model.evaluate(X.fillna(0), y)


def test_numpy_data_never_imports_pandas(monkeypatch, spiral):
    X, y, *_ = spiral
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` fail
    model = _classifier("cpu")
    model.train(X, y, epochs=1, verbose=0)
    assert model.predict(X).shape == (len(X), 3)
