"""Datasets: the book's generators, the IDX reader and downloader (no network), npz and csv."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import struct
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest

import gpunn
from gpunn import datasets

# ---- synthetic data ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [datasets.spiral_data, datasets.vertical_data])
def test_class_data_has_the_books_shapes_and_layout(make):
    X, y = make(100, 3, seed=0)
    assert X.shape == (300, 2) and X.dtype == np.float32
    assert y.shape == (300,) and y.dtype == np.uint8
    np.testing.assert_array_equal(y, np.repeat([0, 1, 2], 100))


def test_spiral_radius_is_linspace_and_angle_follows_the_formula():
    X, _ = datasets.spiral_data(50, 3, seed=1)
    for c in range(3):
        arm = X[50 * c:50 * (c + 1)].astype(np.float64)
        np.testing.assert_allclose(np.hypot(arm[:, 0], arm[:, 1]), np.linspace(0, 1, 50),
                                   atol=1e-6)
        # Without noise t would be linspace(4c, 4(c+1)); the noise has std 0.2.
        t = np.arctan2(arm[1:, 0], arm[1:, 1]) / 2.5
        drift = (t - np.linspace(4 * c, 4 * (c + 1), 50)[1:]) * 2.5
        wrapped = (drift + np.pi) % (2 * np.pi) - np.pi  # the angle is known modulo 2 pi
        assert np.abs(wrapped).max() < 2.5 * 0.2 * 5


def test_spiral_matches_nnfs_with_the_same_normal_draws():
    rng = np.random.default_rng(7)
    noise = [rng.standard_normal(20) for _ in range(2)]
    X, _ = datasets.spiral_data(20, 2, seed=7)
    for c in range(2):
        r, t = np.linspace(0, 1, 20), np.linspace(4 * c, 4 * (c + 1), 20) + noise[c] * 0.2
        expected = np.c_[r * np.sin(t * 2.5), r * np.cos(t * 2.5)]
        np.testing.assert_allclose(X[20 * c:20 * (c + 1)], expected, rtol=1e-6, atol=1e-7)


def test_vertical_blobs_sit_at_c_over_3_and_one_half():
    X, _ = datasets.vertical_data(4000, 3, seed=2)
    for c in range(3):
        blob = X[4000 * c:4000 * (c + 1)]
        np.testing.assert_allclose(blob.mean(axis=0), [c / 3, 0.5], atol=0.01)
        np.testing.assert_allclose(blob.std(axis=0), [0.1, 0.1], atol=0.01)


def test_sine_data_exact_values():
    X, y = datasets.sine_data(8)
    assert X.shape == y.shape == (8, 1) and X.dtype == y.dtype == np.float32
    np.testing.assert_array_equal(X[:, 0], np.arange(8, dtype=np.float32) / 8)
    np.testing.assert_allclose(y[[0, 2, 4, 6], 0], [0, 1, 0, -1], atol=1e-7)
    assert datasets.sine_data()[0].shape == (1000, 1)


@pytest.mark.parametrize("make", [datasets.spiral_data, datasets.vertical_data])
def test_seeding_makes_draws_repeatable(make):
    gpunn.seed(3)
    first = make(10, 2)[0]
    second = make(10, 2)[0]
    gpunn.seed(3)
    np.testing.assert_array_equal(make(10, 2)[0], first)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(make(10, 2, seed=5)[0], make(10, 2, seed=5)[0])
    assert not np.array_equal(make(10, 2, seed=5)[0], make(10, 2, seed=6)[0])


@pytest.mark.parametrize("arguments, error", [
    ((0, 3), gpunn.InvalidArgumentError), ((5, 0), gpunn.InvalidArgumentError),
    ((2.5, 3), gpunn.InvalidTypeError), ((5, 300), gpunn.InvalidArgumentError),
])
def test_generators_refuse_bad_sizes(arguments, error):
    with pytest.raises(error, match="samples|classes"):
        datasets.spiral_data(*arguments)


# ---- IDX files --------------------------------------------------------------------------------

STEMS = datasets.IDX_FILES


def idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x803, *images.shape) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()


def write_idx_set(directory, *, gz=False, n_train=5, n_test=3, n_test_labels=None):
    """Small IDX files: train images whose pixels are 0..255 patterns, labels 0..n-1."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 28, 28))
    test = rng.integers(0, 256, (n_test, 28, 28))
    contents = [idx_images(train), idx_labels(np.arange(n_train)), idx_images(test),
                idx_labels(np.arange(n_test if n_test_labels is None else n_test_labels))]
    for stem, data in zip(STEMS, contents, strict=True):
        if gz:
            (directory / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)
    return train, test


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_returns_scaled_flat_images_and_labels(tmp_path, gz):
    train, test = write_idx_set(tmp_path, gz=gz)
    X, y, X_test, y_test = datasets.fashion_mnist(tmp_path, download=False)
    assert X.shape == (5, 784) and X.dtype == np.float32 and X_test.shape == (3, 784)
    np.testing.assert_allclose(X, (train.reshape(5, 784) - 127.5) / 127.5, rtol=1e-6)
    assert X.min() >= -1 and X.max() <= 1
    np.testing.assert_array_equal(y, np.arange(5))
    np.testing.assert_array_equal(y_test, np.arange(3))


def test_gpunn_data_environment_variable_names_the_root(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "mnist")
    monkeypatch.setenv("GPUNN_DATA", str(tmp_path))
    assert datasets.mnist(download=False)[0].shape == (5, 784)


def test_cache_dir_respects_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("GPUNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datasets.data_dir("mnist") == tmp_path / "gpunn" / "mnist"


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_file_is_named(tmp_path, gz):
    write_idx_set(tmp_path)
    data = (tmp_path / STEMS[0]).read_bytes()[:-10]
    (tmp_path / STEMS[0]).unlink()
    target = tmp_path / (STEMS[0] + (".gz" if gz else ""))
    target.write_bytes(gzip.compress(data)[:-20] if gz else data)
    with pytest.raises(gpunn.FileFormatError, match=f"{STEMS[0]}.*(truncated|could not be read)"):
        datasets.mnist(tmp_path, download=False)


def test_short_header_is_truncated(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / STEMS[1]).write_bytes(b"\x00\x00\x08")
    with pytest.raises(gpunn.FileFormatError, match="truncated.*8-byte header, received 3"):
        datasets.mnist(tmp_path, download=False)


def test_wrong_magic_is_named(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / STEMS[1]).write_bytes(idx_images(np.zeros((5, 28, 28))))  # images as labels
    with pytest.raises(gpunn.FileFormatError,
                       match=f"{STEMS[1]} is not an IDX labels file: expected magic number "
                             f"0x00000801, found 0x00000803"):
        datasets.mnist(tmp_path, download=False)


def test_count_mismatch_names_both_files(tmp_path):
    write_idx_set(tmp_path, n_test_labels=4)
    with pytest.raises(gpunn.FileFormatError, match=f"{STEMS[2]} holds 3 images but .*{STEMS[3]} "
                                                    f"holds 4 labels"):
        datasets.mnist(tmp_path, download=False)


# ---- downloading, with urlopen replaced ---------------------------------------------------------


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


class CutResponse(FakeResponse):
    def read(self, size=-1):
        raise http.client.IncompleteRead(b"", 100)


@pytest.mark.parametrize("failure", [urllib.error.URLError("no route to host"),
                                     TimeoutError("timed out"), "cut"])
def test_offline_download_says_which_files_go_where(tmp_path, monkeypatch, failure):
    def offline(url, timeout=None):
        assert timeout is not None  # a download without a timeout can hang forever
        if failure == "cut":
            return CutResponse(b"")
        raise failure

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("GPUNN_DATA", str(tmp_path))
    with pytest.raises(gpunn.GpunnError) as caught:
        datasets.fashion_mnist()
    message = str(caught.value)
    assert "Downloading Fashion-MNIST failed" in message
    assert str(tmp_path / "fashion-mnist") in message
    assert all(stem + ".gz" in message for stem in STEMS)
    assert list((tmp_path / "fashion-mnist").iterdir()) == []  # no temporary file left behind
    # the way out names what a command-line user can type, not only Python's path=
    assert "gpunn train --dataset fashion-mnist --data-dir DIR" in message


def test_the_command_line_reads_images_from_data_dir(tmp_path, monkeypatch, capsys):
    from gpunn import cli

    write_idx_set(tmp_path / "files", n_train=20, n_test=10)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    status = cli.main(["train", "--dataset", "fashion-mnist", "--data-dir",
                       str(tmp_path / "files"), "--epochs", "1", "--device", "cpu", "--out",
                       str(tmp_path / "run"), "--quiet"])
    assert (status, capsys.readouterr().err) == (0, "")
    status = cli.main(["evaluate", str(tmp_path / "run" / "model.npz"), "--dataset",
                       "fashion-mnist", "--data-dir", str(tmp_path / "files"), "--device", "cpu"])
    assert status == 0 and "10 samples" in capsys.readouterr().out


def test_missing_files_without_download_say_where(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / STEMS[3]).unlink()
    with pytest.raises(gpunn.GpunnError, match=f"download=False: put {STEMS[3]}.gz .* in"):
        datasets.mnist(tmp_path, download=False)


def serve(monkeypatch, files: dict[str, bytes]):
    """Replace urlopen with one serving ``files`` by name, and record the URLs asked for."""
    asked = []

    def urlopen(url, timeout=None):
        asked.append(url)
        return FakeResponse(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def test_download_fetches_checks_and_keeps_the_files(tmp_path, monkeypatch):
    source = tmp_path / "source"
    train, _ = write_idx_set(source, gz=True)
    files = {path.name: path.read_bytes() for path in source.iterdir()}
    for name, data in files.items():
        monkeypatch.setitem(datasets.MD5["mnist"], name, hashlib.md5(data).hexdigest())
    asked = serve(monkeypatch, files)
    X, y, _, _ = datasets.mnist(tmp_path / "data")
    assert sorted(asked) == sorted(datasets.MIRRORS["mnist"][1] + name for name in files)
    np.testing.assert_allclose(X, (train.reshape(5, 784) - 127.5) / 127.5, rtol=1e-6)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(files)
    asked.clear()
    datasets.mnist(tmp_path / "data")
    assert asked == []  # present files are not fetched again


def test_downloads_get_the_users_umask_not_a_private_mode(tmp_path, monkeypatch):
    # Written through tempfile.mkstemp, downloaded MNIST files were 0600 whatever the umask.
    source = tmp_path / "source"
    write_idx_set(source, gz=True)
    files = {path.name: path.read_bytes() for path in source.iterdir()}
    for name, data in files.items():
        monkeypatch.setitem(datasets.MD5["mnist"], name, hashlib.md5(data).hexdigest())
    serve(monkeypatch, files)
    previous = os.umask(0o022)
    try:
        datasets.mnist(tmp_path / "data")
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "data").iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_checksum_mismatch_deletes_the_download(tmp_path, monkeypatch):
    serve(monkeypatch, {stem + ".gz": b"not the real file" for stem in STEMS})
    with pytest.raises(gpunn.FileFormatError, match="arrived with MD5 .*expected "
                                                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d"):
        datasets.fashion_mnist(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---- npz and csv ---------------------------------------------------------------------------------


def test_load_npz_round_trip(tmp_path):
    X, y = np.arange(12.0).reshape(4, 3), np.array([0, 1, 1, 0])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    X2, y2 = datasets.load_npz(tmp_path / "d.npz")
    assert X2.dtype == np.float32
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("arrays, message", [
    ({"X": np.ones((3, 2)), "labels": np.ones(3)}, r"no array y: .*found \['X', 'labels'\]"),
    ({"X": np.ones(3), "y": np.ones(3)}, r"X must be 2-D .*received shape \(3,\)"),
    ({"X": np.ones((3, 2)), "y": np.ones(4)}, r"one label .* 3 in all; received y of shape \(4,\)"),
    ({"X": np.array([[1, "a"]], dtype=object), "y": np.ones(1)}, "pickled object array"),
    ({"X": np.array([["a", "b"]]), "y": np.ones(1)}, "X must be numeric; received dtype <U1"),
])
def test_load_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(gpunn.FileFormatError, match=message):
        datasets.load_npz(tmp_path / "d.npz")


def test_load_npz_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(gpunn.InvalidArgumentError, match="No file at .*nothing.npz"):
        datasets.load_npz(tmp_path / "nothing.npz")
    (tmp_path / "junk.npz").write_bytes(b"hello, world")
    with pytest.raises(gpunn.FileFormatError, match="not a readable .npz"):
        datasets.load_npz(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(gpunn.FileFormatError, match="single array"):
        datasets.load_npz(tmp_path / "single.npy")


def test_load_csv_with_and_without_header(tmp_path):
    (tmp_path / "a.csv").write_text("x1,x2,label\n0.5,1.5,1\n\n2,3,0\n")
    X, y = datasets.load_csv(tmp_path / "a.csv")
    np.testing.assert_array_equal(X, [[0.5, 1.5], [2, 3]])
    assert X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, [1, 0])
    (tmp_path / "b.csv").write_text("1,0.5,1.5\n0,2,3.25\n")
    X, y = datasets.load_csv(tmp_path / "b.csv", label_column=0, skip_header=False)
    np.testing.assert_array_equal(X, [[0.5, 1.5], [2, 3.25]])
    np.testing.assert_array_equal(y, [1, 0])
    X, y = datasets.load_csv(tmp_path / "b.csv", skip_header=True)
    assert X.shape == (1, 2) and y.dtype == np.float32 and y[0] == 3.25


@pytest.mark.parametrize("text, message", [
    ("1,2,0\n3,oops,1\n", r"column 2 \('oops' on line 2\) holds text, not a number"),
    ("a,b,c\n1,2,0\n4,5\n", "line 3: expected 3 cells like the header, found 2"),
    ("a,b,c\n", "no data rows"),
])
def test_load_csv_errors_name_the_line(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(gpunn.FileFormatError, match=message):
        datasets.load_csv(tmp_path / "bad.csv")


def test_load_csv_refuses_a_label_column_out_of_range(tmp_path):
    (tmp_path / "a.csv").write_text("1,2,0\n")
    with pytest.raises(gpunn.InvalidArgumentError,
                       match=r"label_column 3: .* has 3 columns, so a position is in \[-3, 2\]"):
        datasets.load_csv(tmp_path / "a.csv", label_column=3)


def test_load_inputs_reads_every_column_of_a_csv_and_the_x_of_an_npz(tmp_path):
    (tmp_path / "a.csv").write_text("x1,x2\n0.5,1.5\n2,3\n")
    X = datasets.load_inputs(tmp_path / "a.csv")
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, [[0.5, 1.5], [2, 3]])
    (tmp_path / "one.csv").write_text("0.25\n4\n")  # one feature: a column load_csv refuses
    np.testing.assert_array_equal(datasets.load_inputs(tmp_path / "one.csv"), [[0.25], [4]])
    np.savez(tmp_path / "a.npz", X=np.arange(6).reshape(3, 2), y=np.zeros(3))
    np.testing.assert_array_equal(datasets.load_inputs(tmp_path / "a.npz"), [[0, 1], [2, 3],
                                                                             [4, 5]])
    np.savez(tmp_path / "flat.npz", X=np.ones(3))
    with pytest.raises(gpunn.FileFormatError, match=r"flat.npz: X must be a 2-D numeric"):
        datasets.load_inputs(tmp_path / "flat.npz")


# ---- load ---------------------------------------------------------------------------------------


def test_load_synthetic_sets_draw_a_fresh_validation_set():
    X, y, X_val, y_val = datasets.load("spiral", seed=0)
    assert X.shape == X_val.shape == (300, 2) and not np.array_equal(X, X_val)
    np.testing.assert_array_equal(X, datasets.spiral_data(100, 3, seed=0)[0])
    np.testing.assert_array_equal(y, y_val)
    gpunn.seed(1)
    X, _, X_val, _ = datasets.load("vertical")
    assert X.shape == (300, 2) and not np.array_equal(X, X_val)
    assert datasets.load("sine")[0].shape == (1000, 1)


def test_load_files_hold_out_the_last_fifth_after_a_seeded_shuffle(tmp_path):
    X = np.arange(20.0).reshape(10, 2)
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(10))
    X_train, y_train, X_val, y_val = datasets.load(tmp_path / "d.npz", seed=4)
    assert len(X_train) == 8 and len(X_val) == 2
    np.testing.assert_array_equal(X_train[:, 0], 2 * y_train)  # rows stay paired with labels
    assert sorted(np.r_[y_train, y_val]) == list(range(10))
    np.testing.assert_array_equal(datasets.load(tmp_path / "d.npz", seed=4)[3], y_val)
    (tmp_path / "d.csv").write_text("".join(f"{i},{i}\n" for i in range(10)))
    assert len(datasets.load(str(tmp_path / "d.csv"), seed=4)[2]) == 2


def test_load_routes_mnist_names(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "fashion-mnist")
    monkeypatch.setenv("GPUNN_DATA", str(tmp_path))
    assert datasets.load("Fashion_MNIST")[0].shape == (5, 784)


def test_load_unknown_name_lists_the_valid_ones():
    with pytest.raises(gpunn.InvalidArgumentError,
                       match="Unknown dataset 'cifar': expected one of spiral, vertical, sine, "
                             "fashion-mnist, mnist, or a path ending in .npz or .csv"):
        datasets.load("cifar")


# ---- data errors name the file, line and column (issue 20, finding 6) ---------------------------

@pytest.mark.parametrize("text, message", [
    ("a,b,c\n1,2,0\n3,4,1\n5,6,1\n7,,0\n", r"bad.csv: 1 empty cell \(line 5, column 2 \('b'\)\)"),
    ("a,b,c\n1,2,0\n\n3,nan,1\n", r"bad.csv, line 4, column 2 \('b'\) is nan"),
    ("1,2,0\n3,4,inf\n", r"bad.csv, line 2, column 3 is inf"),
])
def test_csv_errors_name_the_line_and_column(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(gpunn.FileFormatError, match=message):
        datasets.load_csv(tmp_path / "bad.csv")


def test_npz_nan_names_the_array_row_and_column(tmp_path):
    X = np.zeros((5, 3))
    X[3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=np.zeros(5))
    with pytest.raises(gpunn.FileFormatError, match=r"nan.npz: X row 3, column 2 .* is nan"):
        datasets.load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "inf.npz", X=np.zeros((5, 3)), y=[0, 1, np.inf, 0, 1])
    with pytest.raises(gpunn.FileFormatError, match=r"inf.npz: y row 2 .* is inf"):
        datasets.load_npz(tmp_path / "inf.npz")


@pytest.mark.parametrize("separator", [";", "\t"])
def test_semicolon_and_tab_separated_files_are_read(tmp_path, separator):
    text = "x1,5;x2;label\n0,5;1.5;1\n2;3;0\n" if separator == ";" else \
        "x1\tx2\tlabel\n0.5\t1.5\t1\n2\t3\t0\n"
    (tmp_path / "a.csv").write_text(text)
    if separator == ";":  # a decimal comma is not a number gpunn reads: named, not misread
        with pytest.raises(gpunn.FileFormatError,
                           match=r"line 2, column 1 \('x1,5'\): '0,5' .* with a point"):
            datasets.load_csv(tmp_path / "a.csv")
        (tmp_path / "a.csv").write_text(text.replace(",", "."))
    X, y = datasets.load_csv(tmp_path / "a.csv")
    np.testing.assert_array_equal(X, [[0.5, 1.5], [2, 3]])
    np.testing.assert_array_equal(y, [1, 0])


def test_a_one_column_csv_is_named_without_label_column(tmp_path):
    (tmp_path / "one.csv").write_text("1\n2\n3\n")
    with pytest.raises(gpunn.FileFormatError, match="one.csv has one column") as error:
        datasets.load_csv(tmp_path / "one.csv")
    assert "label_column" not in str(error.value)


def test_a_leading_index_column_without_a_header_is_warned_about(tmp_path):
    # DataFrame.to_csv(header=False): nothing says it is an index but its counting
    (tmp_path / "pandas.csv").write_text("0,0.5,1.5,1\n1,2,3,0\n2,4,1,1\n3,7,2,0\n")
    with pytest.warns(UserWarning, match="first column counts the rows .* index=False"):
        X, _ = datasets.load_csv(tmp_path / "pandas.csv")
    assert X.shape[1] == 3  # still read as it is: the warning says what to do


def test_the_index_pandas_writes_is_dropped(tmp_path):
    # DataFrame.to_csv() writes its index first, under an empty header cell (issue 24)
    (tmp_path / "pandas.csv").write_text(",x1,x2,label\n0,0.5,1.5,1\n1,2,3,0\n2,4,1,1\n")
    X, y = datasets.load_csv(tmp_path / "pandas.csv")
    np.testing.assert_array_equal(X, [[0.5, 1.5], [2, 3], [4, 1]])
    np.testing.assert_array_equal(y, [1, 0, 1])


def test_a_first_column_that_does_not_count_is_not_warned_about(tmp_path):
    (tmp_path / "a.csv").write_text("x0,x1,label\n0,0.5,1\n1,2,0\n1,4,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        datasets.load_csv(tmp_path / "a.csv")
