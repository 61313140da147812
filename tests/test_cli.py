"""The command line, run in-process through gpunn.cli.main and, where a real process matters
(the console entry, Ctrl-C), as ``python -m gpunn``."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import cuda_available

import gpunn as gn
from gpunn import checkpoint, cli, plots, progress, runs

PNG = b"\x89PNG\r\n\x1a\n"
QUICK = ["--device", "cpu", "--epochs", "10", "--batch-size", "32", "--dropout", "0.1"]


def _gpunn(capsys, *argv):
    """(exit status, stdout, stderr) of ``gpunn argv``."""
    status = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _process(*argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "gpunn", *map(str, argv)], capture_output=True,
                          text=True, timeout=120, **kwargs)


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunn: error: "), err
    return lines[0]


def _arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _assert_same_model(first, second):
    a, b = _arrays(first), _arrays(second)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # the header too


# ---- gpunn train -------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [[], ["--batch-size", "32", "--epochs", "30",
                                        "--dropout", "0.1"]], ids=["default", "minibatch"])
def test_gpunn_train_on_cuda_learns_what_the_cpu_learns(tmp_path, capsys, argv):
    # The GPU path, end to end through the command line (on the CuPy double: cuda-sim:0).
    if not cuda_available():
        pytest.skip("no CUDA device: runs with pytest --cupy-double or on a GPU")
    histories = {}
    for device in ("cpu", "cuda"):
        status, stdout, err = _gpunn(capsys, "train", "--device", device, *argv, "--out",
                                     tmp_path / device)
        assert status == 0 and err == "", err
        assert f"on {gn.device(device).device}: loss" in stdout
        # CUDA says whether its step runs as a CUDA graph, in the first lines, and it does
        lines = stdout.splitlines()
        assert ("CUDA graph: on" in lines[:4]) == (device == "cuda")
        assert "CUDA graph: off" not in stdout
        histories[device] = checkpoint.load(tmp_path / device / "checkpoint.npz",
                                            device="cpu").history
    cpu, cuda = histories["cpu"], histories["cuda"]
    print(f"final accuracy cpu {cpu['accuracy'][-1]:.4f} cuda {cuda['accuracy'][-1]:.4f}; "
          f"loss cpu {cpu['loss'][-1]:.6f} cuda {cuda['loss'][-1]:.6f}")
    if "--dropout" in argv:  # masks come from each device's own generator
        assert abs(cpu["accuracy"][-1] - cuda["accuracy"][-1]) < 0.05
    else:
        # The same float32 math up to summation order (softmax_ce sums a row in order, NumPy
        # pairwise, cuBLAS in its own order: the nvmath double sums k backwards, issue 27): the
        # first epoch agrees to float32 rounding; at the book's learning rate the spiral's path
        # amplifies those differences (final losses 0.157 on the CPU and 0.212 on the double
        # once the products were reordered), so the end is compared as learning: from ln 3 =
        # 1.10 to well below, at about the same accuracy.
        assert cpu["loss"][0] == pytest.approx(cuda["loss"][0], rel=1e-6)
        assert cpu["accuracy"][-1] == pytest.approx(cuda["accuracy"][-1], abs=0.03)
        assert max(cpu["loss"][-1], cuda["loss"][-1]) < 0.3


def test_default_train_reaches_the_promised_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    status, stdout, err = _gpunn(capsys, "train", "--out", out)
    assert status == 0 and err == ""
    saved = checkpoint.load(out / "checkpoint.npz", device="cpu")
    assert saved.epoch == 1000 and saved.settings["hidden"] == [64, 64]
    assert saved.history["accuracy"][-1] > 0.9
    assert f"accuracy {saved.history['accuracy'][-1]:.4f}" in stdout
    assert f"validation loss {saved.history['val_loss'][-1]:.4g}" in stdout
    assert str(out / "model.npz") in stdout and str(out / "training.png") in stdout
    model = gn.Model.load(out / "model.npz", device="cpu")
    X, y, _, _ = gn.datasets.load("spiral", seed=0)
    assert (model.predict(X).argmax(axis=1) == y).mean() > 0.9
    assert (out / "training.png").read_bytes()[:8] == PNG
    with open(out / "metrics.csv") as file:
        assert len(list(csv.reader(file))) == 1001


def test_metrics_csv_has_one_row_per_epoch_matching_the_checkpoint(tmp_path, capsys):
    status, stdout, _ = _gpunn(capsys, "train", *QUICK, "--epochs", "7", "--out", tmp_path)
    assert status == 0
    with open(tmp_path / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["epoch", "loss", "data_loss", "regularization_loss", "accuracy",
                             "learning_rate", "val_loss", "val_accuracy"]
    history = checkpoint.load(tmp_path / "checkpoint.npz", device="cpu").history
    assert [int(row["epoch"]) for row in rows] == list(range(1, 8))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert [float(row[key]) for row in rows] == history[key]
    assert stdout.count("\nepoch ") == 7  # a plain line per epoch when there are few


def test_without_matplotlib_the_plot_is_skipped_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    status, stdout, err = _gpunn(capsys, "train", *QUICK, "--out", tmp_path)
    assert status == 0 and err == ""
    skipped = [line for line in stdout.splitlines() if "training.png" in line]
    assert len(skipped) == 1 and skipped[0].startswith("training.png skipped")
    assert "pip install 'gpunn[plot]'" in skipped[0]
    assert not (tmp_path / "training.png").exists() and (tmp_path / "model.npz").exists()


def test_a_new_run_never_touches_the_previous_one(tmp_path, capsys, monkeypatch):
    # A new run once deleted the previous model.npz and training.png within seconds, and a
    # failed or interrupted run then left nothing of either.
    monkeypatch.chdir(tmp_path)
    assert _gpunn(capsys, "train", "--device", "cpu", "--epochs", "5", "--quiet")[0] == 0
    first = (tmp_path / "runs" / "latest").resolve()
    files = {path.name: path.read_bytes() for path in first.iterdir()}
    assert {"model.npz", "training.png", "metrics.csv", "checkpoint.npz"} <= set(files)

    def disk_full(self, path, **options):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gn.Model, "save", disk_full)
    status, stdout, err = _gpunn(capsys, "train", "--device", "cpu", "--epochs", "5")
    assert status == 1 and "No space left on device" in err
    relative = first.relative_to(tmp_path)
    assert f"the previous complete run stays in {relative}, which runs/latest points at" in stdout
    assert (tmp_path / "runs" / "latest").resolve() == first  # still the complete run
    assert {path.name: path.read_bytes() for path in first.iterdir()} == files
    assert len(list((tmp_path / "runs").iterdir())) == 3  # first, the failed one, latest


def test_an_explicit_out_holding_a_run_is_refused_untouched(tmp_path, capsys):
    assert _gpunn(capsys, "train", *QUICK, "--quiet", "--out", tmp_path)[0] == 0
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    status, _, err = _gpunn(capsys, "train", *QUICK, "--out", tmp_path)
    assert status == 2 and "already holds a run" in _one_error_line(err) and "--resume" in err
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_a_reader_that_leaves_does_not_stop_training(tmp_path):
    # `gpunn train | head -2` failed with "[Errno 32] Broken pipe" after one epoch.
    process = subprocess.Popen([sys.executable, "-m", "gpunn", "train", "--device", "cpu",
                                "--out", str(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines = [process.stdout.readline() for _ in range(2)]
    process.stdout.close()  # as head does after two lines
    status = process.wait(timeout=120)
    with process.stderr:
        err = process.stderr.read()
    assert lines[0].startswith("spiral:") and (status, err) == (0, "")
    assert checkpoint.load(tmp_path / "checkpoint.npz", device="cpu").epoch == 1000
    assert (tmp_path / "model.npz").is_file()


def test_quiet_prints_nothing(tmp_path, capsys):
    assert _gpunn(capsys, "train", *QUICK, "--quiet", "--out", tmp_path) == (0, "", "")


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("options, shown, wide", [
    (["--batch-size", "10", "--epochs", "2"], ["epoch 2/2", "| val "], ["samples/s"]),
    (["--epochs", "300"], ["300/300", "| val "], ["epoch/s", "samples/s"]),
])
def test_terminal_progress_bars_fit_the_terminal(tmp_path, capsys, monkeypatch, columns,
                                                  options, shown, wide):
    # In 80 columns the bar once shrank to one character and the line was cut before the
    # validation numbers.
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    status, stdout, _ = _gpunn(capsys, "train", "--device", "cpu", *options, "--out", tmp_path)
    assert status == 0
    bars = [line for line in stdout.replace("\r", "\n").splitlines() if "%|" in line]
    final = [line for line in bars if "| val " in line]
    assert final and all(len(line) <= columns for line in bars), max(bars, key=len)
    assert all(line.count("█") + line.count(" ") >= 10 for line in final)  # a real bar
    for text in shown + (wide if columns >= 200 else []):
        assert text in stdout


def test_a_terminal_reporting_zero_columns_gets_bars_not_blank_lines(tmp_path, capsys,
                                                                      monkeypatch):
    # A pseudo-terminal without a size reports 0 columns (before Python 3.11 shutil passed it
    # on), and tqdm's ncols=0 drew an empty line per epoch.
    import os
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a, **k: os.terminal_size((0, 0)))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    status, stdout, _ = _gpunn(capsys, "train", "--device", "cpu", "--epochs", "300", "--out",
                               tmp_path)
    assert status == 0
    bars = [line for line in stdout.replace("\r", "\n").splitlines() if "%|" in line]
    assert bars and all(len(line) <= 80 for line in bars) and "| val " in bars[-1]
    assert bars[-1].count("#") + bars[-1].count("█") >= 10  # a real bar, 80 columns wide


def test_a_batch_size_larger_than_the_data_is_reported_as_the_full_batch(tmp_path, capsys):
    X, y = gn.datasets.spiral_data(4, 2, seed=0)  # 8 rows: 6 train, 2 validation or so
    np.savez(tmp_path / "tiny.npz", X=X, y=y)
    status, stdout, _ = _gpunn(capsys, "train", "--device", "cpu", "--dataset",
                               tmp_path / "tiny.npz", "--batch-size", "1000", "--epochs", "2",
                               "--out", tmp_path / "run")
    assert status == 0
    assert "batch 1000" not in stdout
    assert "batch full (" in stdout and "--batch-size 1000 is not smaller" in stdout


def test_regression_on_sine(tmp_path, capsys):
    status, stdout, _ = _gpunn(capsys, "train", "--device", "cpu", "--dataset", "sine",
                               "--epochs", "5", "--out", tmp_path)
    assert status == 0 and "regression" in stdout
    model = gn.Model.load(tmp_path / "model.npz", device="cpu")
    assert isinstance(model.layers[-1], gn.Linear)
    assert isinstance(model.loss, gn.MeanSquaredError)
    assert isinstance(model.accuracy, gn.RegressionAccuracy)
    assert isinstance(model.layers[1], gn.Tanh)  # the sine preset


def test_regression_logs_show_small_losses_and_say_what_accuracy_means(tmp_path, capsys):
    # From about epoch 1000 the sine's loss printed as 0.0000 and "acc" was unexplained.
    status, stdout, _ = _gpunn(capsys, "train", "--device", "cpu", "--dataset", "sine",
                               "--out", tmp_path)
    assert status == 0
    saved = checkpoint.load(tmp_path / "checkpoint.npz", device="cpu")
    final = saved.history["loss"][-1]
    assert final < 1e-3 and f"loss {final:.4g}" in stdout and "loss 0.0000" not in stdout
    precision = gn.Model.load(tmp_path / "model.npz", device="cpu").accuracy.precision
    assert f"acc(±{precision:.2g}) is the book's regression accuracy" in stdout
    assert f"within ±{precision:.2g} (std(y) / 250) of the target" in stdout
    assert f"acc(±{precision:.2g}) " in stdout.splitlines()[-3]  # the progress lines use it


def test_own_data_files_classify_whole_labels_and_regress_the_rest(tmp_path, capsys):
    X, y = gn.datasets.spiral_data(20, 4, seed=0)
    np.savez(tmp_path / "classes.npz", X=X, y=y.astype(np.int32))
    np.savetxt(tmp_path / "targets.csv", np.c_[X, X[:, 0] * 0.3 + 0.1], delimiter=",")
    for name, last, outputs in (("classes.npz", gn.Softmax, 4), ("targets.csv", gn.Linear, 1)):
        out = tmp_path / name.replace(".", "_")
        status, _, err = _gpunn(capsys, "train", "--device", "cpu", "--dataset",
                                tmp_path / name, "--epochs", "3", "--hidden", "8",
                                "--activation", "leaky_relu", "--optimizer", "rmsprop",
                                "--dtype", "float64", "--out", out)
        assert status == 0, err
        model = gn.Model.load(out / "model.npz", device="cpu")
        assert isinstance(model.layers[-1], last) and model.dtype == "float64"
        assert model.trainable_layers[-1].n_neurons == outputs


def _whole_targets(tmp_path):
    """A diabetes-like file: 60 samples, 4 features, whole-number targets from 25 to 346."""
    X = np.random.default_rng(0).standard_normal((60, 4))
    y = np.round(185 + 60 * X[:, 0] - 30 * X[:, 1]).clip(25, 346)
    np.savetxt(tmp_path / "diabetes.csv", np.c_[X, y], delimiter=",", fmt="%.6g")
    return tmp_path / "diabetes.csv"


TINY = ["--device", "cpu", "--epochs", "2", "--hidden", "8"]


def test_whole_numbers_that_look_like_targets_default_to_a_regression(tmp_path, capsys):
    # issue 24: 296 distinct values for 60 samples made a 296-class softmax, on a warning
    status, out, err = _gpunn(capsys, "train", *TINY, "--dataset", _whole_targets(tmp_path),
                              "--out", tmp_path / "inferred")
    assert status == 0 and err == ""
    header = out.splitlines()[0]
    assert "regression (54 distinct whole numbers for 60 samples, too many for classes" in header
    assert "--task classify makes them classes" in header
    status, out, _ = _gpunn(capsys, "train", *TINY, "--dataset", _whole_targets(tmp_path),
                            "--task", "classify", "--out", tmp_path / "classes")
    assert status == 0 and "classification into 54 classes (--task classify" in out


def test_task_regress_trains_whole_number_targets_as_a_regression(tmp_path, capsys):
    data = _whole_targets(tmp_path)
    status, out, err = _gpunn(capsys, "train", *TINY, "--dataset", data, "--task", "regress",
                              "--out", tmp_path / "run")
    assert status == 0 and err == ""
    assert "regression (--task regress)" in out.splitlines()[0]
    model = gn.Model.load(tmp_path / "run" / "model.npz", device="cpu")
    assert isinstance(model.layers[-1], gn.Linear) and model.trainable_layers[-1].n_neurons == 1
    # --resume carries the task: the run goes on as a regression, and another --task is refused
    status, _, err = _gpunn(capsys, "train", "--resume", "--device", "cpu", "--task", "classify",
                            "--out", tmp_path / "run")
    assert status == 2 and "started with --task regress" in _one_error_line(err)
    status, out, err = _gpunn(capsys, "train", "--resume", "--device", "cpu", "--epochs", "3",
                              "--out", tmp_path / "run")
    assert status == 0 and err == "" and "resuming at epoch 3 of 3" in out
    saved = checkpoint.load(tmp_path / "run" / "checkpoint.npz", device="cpu")
    assert saved.settings["task"] == "regress" and saved.epoch == 3


def test_task_classify_refuses_targets_that_are_not_classes(tmp_path, capsys):
    np.savetxt(tmp_path / "t.csv", np.c_[np.eye(10)[:, :2], np.linspace(0, 1, 10)],
               delimiter=",")
    status, _, err = _gpunn(capsys, "train", *TINY, "--dataset", tmp_path / "t.csv", "--task",
                            "classify", "--out", tmp_path / "run")
    assert status == 2 and "--task classify needs class labels" in _one_error_line(err)
    assert not (tmp_path / "run").exists()


def test_one_hot_and_plus_minus_one_labels_make_a_classifier(tmp_path, capsys):
    X, y = gn.datasets.spiral_data(20, 2, seed=0)
    np.savez(tmp_path / "onehot.npz", X=X, y=np.eye(2)[y])
    np.savetxt(tmp_path / "signs.csv", np.c_[X, 2 * y.astype(int) - 1], delimiter=",")
    for name, why in (("onehot.npz", "one-hot labels in 2 columns"),
                      ("signs.csv", "labels -1 and +1")):
        status, out, err = _gpunn(capsys, "train", *TINY, "--dataset", tmp_path / name,
                                  "--out", tmp_path / name.replace(".", "_"))
        assert status == 0 and err == "", err
        assert f"classification into 2 classes ({why}" in out.splitlines()[0]
        model = gn.Model.load(tmp_path / name.replace(".", "_") / "model.npz", device="cpu")
        assert isinstance(model.layers[-1], gn.Softmax)
    status, out, err = _gpunn(capsys, "evaluate", tmp_path / "signs_csv" / "model.npz")
    assert status == 0, err


# ---- errors --------------------------------------------------------------------------------------

def test_cuda_where_there_is_none_is_one_line_and_a_failure():
    if cuda_available():
        pytest.skip("this machine has a working CUDA device")
    result = _process("train", "--device", "cuda", "--out", "unused")
    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert "CUDA is not available" in line and "gpunn[cuda12]" in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv, named", [
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--lr", "fast"], "--lr"),
    (["train", "--decay", "nan"], "--decay"),
    (["train", "--hidden", "64,x"], "--hidden"),
    (["train", "--hidden", "64,0"], "--hidden"),
    (["train", "--dropout", "1.5"], "--dropout"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch-size", "-3"], "--batch-size"),
    (["train", "--device", "tpu"], "--device"),
    (["train", "--activation", "swish"], "--activation"),
    (["train", "--dataset", "imagenet"], "--dataset"),
    (["train", "--unknown"], "--unknown"),
    (["predict", "model.npz"], "INPUT"),
    (["launch"], "launch"),
    ([], "choose a command"),
])
def test_bad_command_lines_are_usage_errors(capsys, argv, named):
    status, stdout, err = _gpunn(capsys, *argv)
    assert status == 2 and stdout == ""
    assert named in _one_error_line(err)


def test_a_bad_device_in_the_environment_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setenv("GPUNN_DEVICE", "gpu")
    status, _, err = _gpunn(capsys, "train", "--out", "unused")
    assert status == 2 and "GPUNN_DEVICE" in _one_error_line(err)


def test_bad_dataset_files_are_one_line_errors(tmp_path, capsys):
    status, _, err = _gpunn(capsys, "train", "--device", "cpu", "--dataset",
                            tmp_path / "missing.npz", "--out", tmp_path / "a")
    assert status == 1 and "missing.npz" in _one_error_line(err)
    np.savez(tmp_path / "no_labels.npz", X=np.zeros((4, 2)))
    status, _, err = _gpunn(capsys, "train", "--device", "cpu", "--dataset",
                            tmp_path / "no_labels.npz", "--out", tmp_path / "b")
    assert status == 1 and "no array y" in _one_error_line(err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_data_errors_come_before_the_run_folder_and_name_line_and_column(tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [f"{i % 7},{i % 3},{i % 2}" for i in range(20)]
    rows[6] = "1,nan,0"
    (tmp_path / "nan.csv").write_text("\n".join(rows) + "\n")
    status, out, err = _gpunn(capsys, "train", "--device", "cpu", "--dataset", "nan.csv")
    assert status == 1 and "nan.csv, line 7, column 2 is nan" in _one_error_line(err)
    assert out == "" and not (tmp_path / runs.RUNS).exists()


def test_the_index_pandas_writes_is_dropped_with_a_line_saying_so(tmp_path, capsys):
    rows = [f"{i},{i % 7},{i % 3},{i % 2}" for i in range(20)]
    (tmp_path / "pandas.csv").write_text(",a,b,label\n" + "\n".join(rows) + "\n")
    status, out, err = _gpunn(capsys, "train", *QUICK, "--epochs", "1", "--dataset",
                              tmp_path / "pandas.csv", "--out", tmp_path / "run")
    assert status == 0 and "2 features: 'a', 'b'" in out and err == ""
    assert out.splitlines()[1] == ("Dropped the first column (unnamed: the index pandas writes "
                                   "with DataFrame.to_csv()); --keep-first-column keeps it")
    status, _, err = _gpunn(capsys, "evaluate", tmp_path / "run" / "model.npz")
    assert status == 0
    assert len(err.splitlines()) == 1 and "left out the column unnamed (pandas' index)" in err


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(gn.GpunnError, match="missing.npz"):
        cli.main(["train", "--debug", "--device", "cpu", "--dataset",
                  str(tmp_path / "missing.npz")])


# ---- resume and Ctrl-C -------------------------------------------------------------------------

def test_resumed_run_ends_exactly_where_an_uninterrupted_run_ends(tmp_path, capsys):
    assert _gpunn(capsys, "train", *QUICK, "--out", tmp_path / "straight")[0] == 0
    assert _gpunn(capsys, "train", *QUICK, "--epochs", "5", "--out", tmp_path / "split")[0] == 0
    status, stdout, _ = _gpunn(capsys, "train", "--resume", "--device", "cpu", "--epochs", "10",
                               "--out", tmp_path / "split")
    assert status == 0 and "resuming at epoch 6 of 10" in stdout
    assert "classes (as the run was started)" in stdout  # once "(None)"
    _assert_same_model(tmp_path / "straight" / "model.npz", tmp_path / "split" / "model.npz")
    _assert_same_model(tmp_path / "straight" / "checkpoint.npz",
                       tmp_path / "split" / "checkpoint.npz")


def test_resume_refuses_options_that_change_the_run(tmp_path, capsys):
    status, _, err = _gpunn(capsys, "train", "--resume", "--out", tmp_path)
    assert status == 1 and "no checkpoint" in _one_error_line(err)
    assert _gpunn(capsys, "train", *QUICK, "--out", tmp_path)[0] == 0
    status, _, err = _gpunn(capsys, "train", "--resume", "--lr", "0.1", "--out", tmp_path)
    assert status == 2 and "--lr 0.05" in _one_error_line(err)
    status, _, err = _gpunn(capsys, "train", "--resume", "--epochs", "3", "--out", tmp_path)
    assert status == 2 and "holds 10 epochs" in _one_error_line(err)
    status, stdout, _ = _gpunn(capsys, "train", "--resume", "--batch-size", "32", "--out",
                               tmp_path)  # the same value as before is fine
    assert status == 0 and "already trained 10 epochs" in stdout


def test_ctrl_c_keeps_the_last_complete_epoch_and_resume_finishes_the_run(tmp_path, capsys,
                                                                         monkeypatch):
    # Only the first epoch reaches the disk on its own, so epoch 5 must come from the snapshot.
    monkeypatch.setattr(runs, "CHECKPOINT_SECONDS", 1e9)
    epoch_end = progress.Lines.epoch_end

    def press_ctrl_c_in_epoch_6(self, epoch, logs):
        epoch_end(self, epoch, logs)
        if epoch == 5:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(progress.Lines, "epoch_end", press_ctrl_c_in_epoch_6)
    out = tmp_path / "stopped"
    status, _, err = _gpunn(capsys, "train", *QUICK, "--out", out)
    assert status == 130
    assert err.strip() == (f"interrupted: {out / 'checkpoint.npz'} keeps epoch 5 of 10; "
                           f"continue with: gpunn train --out {out} --resume")
    assert checkpoint.load(out / "checkpoint.npz", device="cpu").epoch == 5
    with open(out / "metrics.csv") as file:
        assert len(list(csv.reader(file))) == 6
    assert not (out / "model.npz").exists()

    monkeypatch.undo()
    assert _gpunn(capsys, "train", "--resume", "--device", "cpu", "--out", out)[0] == 0
    assert _gpunn(capsys, "train", *QUICK, "--out", tmp_path / "straight")[0] == 0
    _assert_same_model(tmp_path / "straight" / "model.npz", out / "model.npz")


def _ctrl_c_after_epoch(patch, epoch):
    """Make the next `gpunn train` stop on Ctrl-C pressed just after ``epoch``."""
    patch.setattr(runs, "CHECKPOINT_SECONDS", 1e9)
    epoch_end = progress.Lines.epoch_end

    def press_ctrl_c(self, done, logs):
        epoch_end(self, done, logs)
        if done == epoch:
            os.kill(os.getpid(), signal.SIGINT)

    patch.setattr(progress.Lines, "epoch_end", press_ctrl_c)


@pytest.mark.parametrize("explicit", [False, True], ids=["newest", "out"])
def test_resume_continues_the_interrupted_run_and_latest_follows_it(tmp_path, capsys,
                                                                   monkeypatch, explicit):
    # After Ctrl-C, `gpunn train --resume` continued (and rewrote) the previous complete run
    # that runs/latest pointed at; the interrupted run, finished with --out, never became
    # runs/latest.
    monkeypatch.chdir(tmp_path)
    assert _gpunn(capsys, "train", *QUICK, "--quiet")[0] == 0
    complete = (tmp_path / "runs" / "latest").resolve()
    files = {path.name: path.read_bytes() for path in complete.iterdir()}
    with monkeypatch.context() as patch:
        _ctrl_c_after_epoch(patch, 4)
        assert _gpunn(capsys, "train", *QUICK)[0] == 130
    (stopped,) = {path.resolve() for path in (tmp_path / "runs").iterdir()} - {complete}
    assert (tmp_path / "runs" / "latest").resolve() == complete  # not complete yet

    where = ["--out", stopped.relative_to(tmp_path)] if explicit else []
    status, stdout, err = _gpunn(capsys, "train", "--resume", "--device", "cpu", *where)
    assert status == 0 and err == ""
    assert "resuming at epoch 5 of 10" in stdout
    assert f"writing to {stopped.relative_to(tmp_path)}" in stdout
    assert ("the newest run in runs/" in stdout) == (not explicit)
    assert f"runs/latest -> {stopped.relative_to(tmp_path)}" in stdout
    assert (tmp_path / "runs" / "latest").resolve() == stopped
    assert checkpoint.load(stopped / "checkpoint.npz", device="cpu").epoch == 10
    assert (stopped / "model.npz").is_file()
    assert {path.name: path.read_bytes() for path in complete.iterdir()} == files


def test_resume_takes_the_run_written_last_and_latest_the_run_completed_last(tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = _gpunn(capsys, "train", "--resume", "--device", "cpu")
    assert status == 1 and "no run to continue" in _one_error_line(err)
    assert _gpunn(capsys, "train", *QUICK, "--quiet", "--out", "runs/first")[0] == 0
    assert (tmp_path / "runs" / "latest").resolve() == tmp_path / "runs" / "first"
    assert _gpunn(capsys, "train", *QUICK, "--quiet", "--out", "runs/second")[0] == 0
    assert (tmp_path / "runs" / "latest").resolve() == tmp_path / "runs" / "second"
    # The older run, continued by name, becomes the newest: written and completed last.
    status, stdout, _ = _gpunn(capsys, "train", "--resume", "--epochs", "12", "--device", "cpu",
                               "--out", "runs/first")
    assert status == 0 and "runs/latest -> runs/first" in stdout
    status, stdout, _ = _gpunn(capsys, "train", "--resume", "--epochs", "14", "--device", "cpu")
    assert status == 0 and "writing to runs/first" in stdout
    assert "resuming at epoch 13 of 14" in stdout
    assert checkpoint.load(tmp_path / "runs" / "second" / "checkpoint.npz").epoch == 10
    # A run outside runs/ leaves runs/latest alone.
    status, stdout, _ = _gpunn(capsys, "train", *QUICK, "--out", tmp_path / "elsewhere")
    assert status == 0 and "runs/latest" not in stdout
    assert (tmp_path / "runs" / "latest").resolve() == tmp_path / "runs" / "first"


def test_sigint_to_a_real_process(tmp_path, capsys):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "gpunn", "train", "--device", "cpu", "--epochs", "1000000",
         "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.npz").exists():
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.02)
        time.sleep(0.3)  # some epochs past the checkpoint on disk
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert err.startswith("interrupted: ") and err.count("\n") == 1 and "--resume" in err
    epoch = checkpoint.load(out / "checkpoint.npz", device="cpu").epoch
    assert f"keeps epoch {epoch} of 1000000" in err

    target = str(epoch + 3)
    assert _gpunn(capsys, "train", "--resume", "--epochs", target, "--device", "cpu",
                  "--out", out)[0] == 0
    assert _gpunn(capsys, "train", "--device", "cpu", "--epochs", target,
                  "--out", tmp_path / "straight")[0] == 0
    _assert_same_model(tmp_path / "straight" / "model.npz", out / "model.npz")


# ---- evaluate, predict, info, --version ----------------------------------------------------------

@pytest.fixture
def trained(tmp_path, capsys):
    assert _gpunn(capsys, "train", *QUICK, "--out", tmp_path)[0] == 0
    return tmp_path / "model.npz"


def test_evaluate_reports_the_validation_split(trained, capsys):
    status, stdout, _ = _gpunn(capsys, "evaluate", trained, "--device", "cpu")
    history = checkpoint.load(trained.parent / "checkpoint.npz", device="cpu").history
    assert status == 0
    assert stdout.strip() == (f"spiral validation split (seed 0), 300 samples: loss "
                              f"{history['val_loss'][-1]:.4g}, accuracy "
                              f"{history['val_accuracy'][-1]:.4f}")
    status, _, err = _gpunn(capsys, "evaluate", trained, "--dataset", "sine")
    assert status == 1 and "features" in _one_error_line(err)


def test_predict_writes_outputs_and_predicted_classes(trained, tmp_path, capsys):
    X, _ = gn.datasets.spiral_data(7, 3, seed=3)
    np.savez(tmp_path / "input.npz", X=X)
    status, stdout, _ = _gpunn(capsys, "predict", trained, tmp_path / "input.npz", "--out",
                               tmp_path / "preds.npz", "--device", "cpu")
    assert status == 0 and "21 samples" in stdout
    predictions = _arrays(tmp_path / "preds.npz")
    expected = gn.Model.load(trained, device="cpu").predict(X)
    np.testing.assert_array_equal(predictions["outputs"], expected)
    np.testing.assert_array_equal(predictions["predictions"], expected.argmax(axis=1))

    np.savez(tmp_path / "wrong.npz", inputs=X)
    status, _, err = _gpunn(capsys, "predict", trained, tmp_path / "wrong.npz")
    assert status == 1 and "no array X" in _one_error_line(err)


def _features(samples, seed):
    """4 features and 3 classes: the spiral's 2, and 2 made from them."""
    X, y = gn.datasets.spiral_data(samples, 3, seed=seed)
    return np.c_[X, X[:, :1] * 2, X[:, 1:] - 1].astype(np.float32), y


@pytest.fixture
def own(tmp_path, capsys):
    """A model trained on a user's CSV (120 rows: 96 to train, 24 held out), a test CSV of 30
    rows it never saw, and the same test data as .npz."""
    X, y = _features(40, seed=1)
    np.savetxt(tmp_path / "train.csv", np.c_[X, y], delimiter=",")
    X_test, y_test = _features(10, seed=2)
    np.savetxt(tmp_path / "test.csv", np.c_[X_test, y_test], delimiter=",")
    np.savez(tmp_path / "test.npz", X=X_test, y=y_test)
    status, _, err = _gpunn(capsys, "train", *QUICK, "--dataset", tmp_path / "train.csv",
                            "--out", tmp_path / "run")
    assert status == 0, err
    return tmp_path / "run" / "model.npz"


def test_evaluate_scores_the_held_out_split_of_the_data_the_model_was_trained_on(own, capsys):
    # `gpunn evaluate runs/latest/model.npz` ignored the data set the model was trained on and
    # evaluated spiral.
    history = checkpoint.load(own.parent / "checkpoint.npz", device="cpu").history
    status, stdout, err = _gpunn(capsys, "evaluate", own, "--device", "cpu")
    assert status == 0 and err == ""
    assert stdout.strip() == (f"{own.parent.parent / 'train.csv'} validation split (seed 0), "
                              f"24 samples: loss {history['val_loss'][-1]:.4g}, accuracy "
                              f"{history['val_accuracy'][-1]:.4f}")
    # The training file under another name is still the training file.
    copy = own.parent.parent / "copy.csv"
    copy.write_bytes((own.parent.parent / "train.csv").read_bytes())
    status, stdout, _ = _gpunn(capsys, "evaluate", own, "--dataset", copy, "--device", "cpu")
    assert status == 0 and "copy.csv validation split (seed 0), 24 samples" in stdout
    assert f"accuracy {history['val_accuracy'][-1]:.4f}" in stdout


def test_evaluate_refuses_a_seed_whose_split_overlaps_the_training_data(own, capsys):
    # A different --seed silently scored a validation split overlapping the training data.
    train = own.parent.parent / "train.csv"
    for argv in (["--seed", "1"], ["--dataset", train, "--seed", "1"]):
        status, stdout, err = _gpunn(capsys, "evaluate", own, *argv, "--device", "cpu")
        line = _one_error_line(err)
        assert status == 2 and stdout == ""
        assert "--seed 0" in line and "--seed 1" in line and "overlap" in line
    status, stdout, _ = _gpunn(capsys, "evaluate", own, "--seed", "0", "--device", "cpu")
    assert status == 0 and "24 samples" in stdout  # the model's own seed is fine


def test_evaluate_scores_a_separate_test_file_whole_and_warns_when_that_is_training_data(
        own, capsys):
    # A held-out test file was scored on its 20% validation split only.
    folder = own.parent.parent
    for name in ("test.csv", "test.npz"):
        status, stdout, err = _gpunn(capsys, "evaluate", own, "--dataset", folder / name,
                                     "--device", "cpu")
        assert status == 0 and err == "" and f"{name}, all 30 samples: loss " in stdout
    status, stdout, _ = _gpunn(capsys, "evaluate", own, "--dataset", folder / "test.csv",
                               "--split", "validation", "--device", "cpu")
    assert status == 0 and "test.csv validation split (seed 0), 6 samples" in stdout
    # The whole training file, asked for: scored, and said to include the training data.
    status, stdout, err = _gpunn(capsys, "evaluate", own, "--split", "all", "--device", "cpu")
    assert status == 0 and "train.csv, all 120 samples" in stdout
    (warning,) = err.splitlines()
    assert warning.startswith("gpunn: warning: ") and "96" in warning and "trained on" in warning


def test_evaluate_and_predict_refuse_data_that_does_not_fit_the_model(own, capsys):
    folder = own.parent.parent
    X, y = _features(5, seed=3)
    np.savetxt(folder / "three.csv", np.c_[X[:, :3], y], delimiter=",")
    np.savez(folder / "three.npz", X=X[:, :3])
    np.savetxt(folder / "six.csv", np.c_[X, X[:, :1], y], delimiter=",")
    np.savetxt(folder / "classes.csv", np.c_[X, np.arange(15) % 6], delimiter=",")
    for argv, named, found in (
            (["evaluate", own, "--dataset", folder / "three.csv"], "three.csv", "4 columns"),
            (["predict", own, folder / "three.npz", "--out", folder / "p.npz"], "three.npz",
             "3 features"),
            (["predict", own, folder / "six.csv", "--out", folder / "p.npz"], "six.csv",
             "6 columns"),
            (["evaluate", own, "--dataset", folder / "classes.csv"], "classes.csv",
             "labels from 0 to 5")):
        status, _, err = _gpunn(capsys, *argv, "--device", "cpu")
        line = _one_error_line(err)
        assert status == 1 and named in line and found in line and str(own) in line, line
        assert ("3 classes" if "classes" in named else "4 feature") in line
    assert not (folder / "p.npz").exists()


def test_predict_reads_csv_of_exactly_the_features_without_a_header(own, capsys):
    # predict read only .npz, though train reads CSV too; then it guessed "features + label"
    # from one column more, which silently dropped a feature of a file with pandas' index
    folder = own.parent.parent
    X, y = _features(10, seed=2)
    np.savetxt(folder / "features.csv", X, delimiter=",")
    expected = gn.Model.load(own, device="cpu").predict(X)
    for name in ("features.csv", "test.npz"):
        out = folder / f"predicted-{name}.npz"
        status, stdout, err = _gpunn(capsys, "predict", own, folder / name, "--out", out,
                                     "--device", "cpu")
        assert status == 0 and err == "" and "30 samples" in stdout
        np.testing.assert_allclose(_arrays(out)["outputs"], expected, rtol=1e-6)
    status, _, err = _gpunn(capsys, "predict", own, folder / "test.csv", "--out",
                            folder / "no.npz", "--device", "cpu")
    assert status == 1 and "test.csv has 5 columns, but" in err and "4 feature columns" in err


def test_evaluate_on_a_regression_says_what_its_accuracy_counts(tmp_path, capsys):
    # It printed "accuracy 0.0000" without the ±P that train shows.
    assert _gpunn(capsys, "train", "--device", "cpu", "--dataset", "sine", "--epochs", "5",
                  "--quiet", "--out", tmp_path)[0] == 0
    precision = gn.Model.load(tmp_path / "model.npz", device="cpu").accuracy.precision
    status, stdout, err = _gpunn(capsys, "evaluate", tmp_path / "model.npz", "--dataset", "sine",
                                 "--device", "cpu")
    assert status == 0 and stdout.startswith("sine validation split, 1000 samples: loss ")
    assert f"(predictions within ±{precision:.2g} of the target)" in stdout
    # The sine's validation split is its training curve (the book's): not a held-out score.
    (warning,) = err.splitlines()
    assert warning.startswith("gpunn: warning: sine's validation split is its training data")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_batch_size_has_help_in_evaluate_and_predict(capsys, command):
    status, stdout, _ = _gpunn(capsys, command, "--help")
    help_text = " ".join(stdout.split())
    assert status == 0
    assert "--batch-size N samples per forward pass, or 'full'" in help_text


def _without_record(path):
    """``path`` as a gpunn before issue 20 wrote it: no trained_on in its header."""
    arrays = _arrays(path)
    header = json.loads(arrays["__gpunn__"].tobytes())
    del header["trained_on"]
    arrays["__gpunn__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def test_older_model_files_use_the_checkpoint_beside_them_or_ask_for_the_data_set(own, capsys):
    _without_record(own)
    _without_record(own.parent / "checkpoint.npz")
    assert gn.Model.load(own, device="cpu").trained_on is None
    status, stdout, err = _gpunn(capsys, "evaluate", own, "--device", "cpu")
    assert status == 0 and err == "" and "train.csv validation split (seed 0), 24 samples" in \
        stdout
    status, _, err = _gpunn(capsys, "evaluate", own, "--seed", "2", "--device", "cpu")
    assert status == 2 and "overlap" in _one_error_line(err)
    # A model saved in Python, alone: nothing says what it was trained on.
    alone = own.parent.parent / "alone.npz"
    gn.Model.load(own, device="cpu").save(alone)
    status, _, err = _gpunn(capsys, "evaluate", alone, "--device", "cpu")
    line = _one_error_line(err)
    assert status == 2 and "does not record" in line and "--dataset" in line
    status, stdout, err = _gpunn(capsys, "evaluate", alone, "--dataset",
                                 own.parent.parent / "test.csv", "--device", "cpu")
    assert status == 0 and "all 30 samples" in stdout
    (warning,) = err.splitlines()
    assert warning.startswith("gpunn: warning: ") and "cannot check" in warning


def test_resume_refuses_a_data_file_changed_since_the_run_started(tmp_path, capsys):
    X, y = _features(20, seed=1)
    data = tmp_path / "data.csv"
    np.savetxt(data, np.c_[X, y], delimiter=",")
    assert _gpunn(capsys, "train", *QUICK, "--epochs", "2", "--quiet", "--dataset", data,
                  "--out", tmp_path / "run")[0] == 0
    np.savetxt(data, np.c_[X[::-1], y[::-1]], delimiter=",")
    status, _, err = _gpunn(capsys, "train", "--resume", "--epochs", "4", "--device", "cpu",
                            "--out", tmp_path / "run")
    line = _one_error_line(err)
    assert status == 1 and "data.csv" in line and "changed" in line
    assert checkpoint.load(tmp_path / "run" / "checkpoint.npz", device="cpu").epoch == 2


# ---- the files gpunn writes (the rules themselves: test_files.py) --------------------------------

def test_predict_never_writes_over_its_model_or_its_input(trained, tmp_path, capsys):
    # issue 20: --out runs/cancer/model.npz replaced the model with the predictions
    np.savez(tmp_path / "input.npz", X=gn.datasets.spiral_data(7, 3, seed=3)[0])
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    for out, role in [(trained, "the model"), (tmp_path / "input.npz", "the input data")]:
        for force in [[], ["--force"]]:
            status, stdout, err = _gpunn(capsys, "predict", trained, tmp_path / "input.npz",
                                         "--out", out, "--device", "cpu", *force)
            assert (status, stdout) == (1, "")
            assert _one_error_line(err) == (
                f"gpunn: error: Not writing the predictions to {out}: that is {role} this "
                f"command reads, which gpunn never replaces. Give another path for the "
                f"predictions.")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_predict_replaces_predictions_and_anything_else_only_with_force(trained, tmp_path,
                                                                        capsys):
    np.savez(tmp_path / "input.npz", X=gn.datasets.spiral_data(7, 3, seed=3)[0])
    out = tmp_path / "predictions.npz"
    for _ in range(2):  # the second run replaces the first one's predictions
        assert _gpunn(capsys, "predict", trained, tmp_path / "input.npz", "--out", out)[0] == 0
    assert runs.io.kind_of(out) == "predictions"
    np.savez(tmp_path / "mine.npz", outputs=np.zeros(3))
    for name, why in [("mine.npz", "it is not one of gpunn's predictions files, and gpunn "
                                   "replaces no other file"),
                      ("checkpoint.npz", "it is a gpunn checkpoint file, not a predictions "
                                         "file")]:
        before = (tmp_path / name).read_bytes()
        status, stdout, err = _gpunn(capsys, "predict", trained, tmp_path / "input.npz",
                                     "--out", tmp_path / name)
        assert (status, stdout) == (1, "")
        assert _one_error_line(err) == (f"gpunn: error: Not replacing {tmp_path / name} with "
                                        f"the predictions: {why}. Give another path, or "
                                        f"--force to replace it.")
        assert (tmp_path / name).read_bytes() == before
    status, stdout, _ = _gpunn(capsys, "predict", trained, tmp_path / "input.npz", "--out",
                               tmp_path / "mine.npz", "--force")
    assert status == 0 and "21 samples" in stdout
    assert runs.io.kind_of(tmp_path / "mine.npz") == "predictions"


def test_predict_to_a_missing_folder_is_one_line(trained, tmp_path, capsys):
    # issue 20: "[Errno 2] No such file or directory: 'nodir/p.npz'"
    np.savez(tmp_path / "input.npz", X=np.zeros((2, 2)))
    out = tmp_path / "nodir" / "p.npz"
    status, stdout, err = _gpunn(capsys, "predict", trained, tmp_path / "input.npz", "--out", out)
    assert (status, stdout) == (1, "")
    assert _one_error_line(err) == (f"gpunn: error: Cannot write the predictions to {out}: the "
                                    f"folder {out.parent} does not exist. Create it, or give a "
                                    f"path in an existing folder.")


def test_train_out_naming_a_file_is_one_line(tmp_path, capsys):
    # issue 20: --out cancer.csv, an existing file, gave "[Errno 17] File exists"
    data = tmp_path / "cancer.csv"
    data.write_text("0.5,1.5,0\n")
    status, stdout, err = _gpunn(capsys, "train", *QUICK, "--out", data)
    assert (status, stdout) == (1, "")
    assert _one_error_line(err) == (f"gpunn: error: --out {data} is a file, not a folder: --out "
                                    f"names the folder a run writes its files into. Give a new "
                                    f"folder's name, such as runs/cancer.")
    assert data.read_text() == "0.5,1.5,0\n"


def test_train_replaces_files_gpunn_did_not_write_only_with_force(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "metrics.csv").write_text("my,own\n1,2\n")
    status, stdout, err = _gpunn(capsys, "train", *QUICK, "--out", out)
    assert (status, stdout) == (1, "")
    assert _one_error_line(err) == (
        f"gpunn: error: Not replacing {out / 'metrics.csv'} with the metrics: it is not one of "
        f"gpunn's metrics files, and gpunn replaces no other file. Give another path, or "
        f"--force to replace it.")
    assert [path.name for path in out.iterdir()] == ["metrics.csv"]  # refused before training
    assert _gpunn(capsys, "train", *QUICK, "--quiet", "--out", out, "--force")[0] == 0
    assert runs.metrics_kind(out / "metrics.csv") == "metrics"
    (out / "metrics.csv").write_text("my,own\n1,2\n")  # and again, before a --resume
    status, _, err = _gpunn(capsys, "train", "--resume", "--epochs", "12", "--out", out)
    assert status == 1 and "--force to replace it" in _one_error_line(err)
    assert checkpoint.load(out / "checkpoint.npz", device="cpu").epoch == 10
    assert _gpunn(capsys, "train", "--resume", "--epochs", "12", "--quiet", "--out", out,
                  "--force")[0] == 0
    assert checkpoint.load(out / "checkpoint.npz", device="cpu").epoch == 12


def test_train_never_writes_over_its_data_set(tmp_path, capsys):
    X, y = gn.datasets.spiral_data(20, 3, seed=0)
    np.savetxt(tmp_path / "metrics.csv", np.c_[X, y], delimiter=",")  # data named like a run's
    before = (tmp_path / "metrics.csv").read_bytes()
    status, _, err = _gpunn(capsys, "train", *QUICK, "--dataset", tmp_path / "metrics.csv",
                            "--out", tmp_path, "--force")
    assert status == 1 and _one_error_line(err).startswith(
        f"gpunn: error: Not writing the metrics to {tmp_path / 'metrics.csv'}: that is the data "
        f"set this command reads, which gpunn never replaces.")
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.csv"]
    assert (tmp_path / "metrics.csv").read_bytes() == before


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_a_runs_files_and_predictions_get_the_users_umask(tmp_path, capsys):
    # issue 20: model.npz and checkpoint.npz were 0600 whatever the umask
    np.savez(tmp_path / "input.npz", X=np.zeros((2, 2)))
    previous = os.umask(0o022)
    try:
        assert _gpunn(capsys, "train", *QUICK, "--quiet", "--out", tmp_path / "run")[0] == 0
        assert _gpunn(capsys, "predict", tmp_path / "run" / "model.npz", tmp_path / "input.npz",
                      "--out", tmp_path / "predictions.npz")[0] == 0
    finally:
        os.umask(previous)
    written = [*(tmp_path / "run").iterdir(), tmp_path / "predictions.npz"]
    assert {"model.npz", "checkpoint.npz", "metrics.csv"} <= {path.name for path in written}
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_training_png_is_known_by_the_software_text_gpunn_gives_it(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert _gpunn(capsys, "train", *QUICK, "--quiet", "--out", tmp_path)[0] == 0
    drawn = (tmp_path / "training.png").read_bytes()
    assert drawn.startswith(PNG) and plots.kind_of(tmp_path / "training.png") == plots.KIND
    for name, content in [("theirs.png", drawn.replace(b"Software\0gpunn ", b"Software\0Gimp  ")),
                          ("signature.png", PNG), ("text.png", b"not a picture")]:
        (tmp_path / name).write_bytes(content)
        assert plots.kind_of(tmp_path / name) is None, name


@pytest.mark.parametrize("command", ["train", "predict", "export"])
def test_the_commands_that_write_say_what_force_does(capsys, command):
    status, stdout, _ = _gpunn(capsys, command, "--help")
    assert status == 0 and "--force" in stdout and "never" in stdout.split("--force")[-1]


def test_info_reports_versions_devices_and_the_kernel_compile(capsys):
    status, stdout, _ = _gpunn(capsys, "info")
    assert status == 0
    fields = dict(line.split(":", 1) for line in stdout.splitlines())
    assert fields["gpunn"].strip() == gn.__version__
    assert fields["NumPy"].strip() == np.__version__
    assert "cpu (NumPy)" in fields["devices"]
    for name in ("Python", "CuPy", "CUDA runtime", "CUDA driver", "default device"):
        assert fields[name].strip()
    try:
        import cuda.bindings  # noqa: F401
    except ImportError:
        assert fields["CUDA kernels"].strip().startswith("not checked: cuda-bindings")
    else:
        assert "compile with NVRTC" in fields["CUDA kernels"] or "not checked" in \
            fields["CUDA kernels"]
        if "compile with NVRTC" in fields["CUDA kernels"]:  # the 16-bit ones are checked too
            assert "float16/bfloat16" in fields["CUDA kernels"]
    # what each device can train with, and that compiling is not running (issues 19 and 20)
    assert "cpu: float32, bfloat16" in fields["precisions"]
    assert "not yet run on a GPU" in fields["tested"]


def test_version_and_help_from_a_real_process():
    result = _process("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"gpunn {gn.__version__}"
    result = _process("train", "--help")
    assert result.returncode == 0 and "checkpoint.npz" in result.stdout


# ---- standardization and R² --------------------------------------------------------------------

def _scaled_csv(path, samples=400, seed=0):
    """Two classes split by x0 + x1 once scaled; raw, x0 is in thousands around 5000 and x1 in
    thousandths, so an unscaled network sees one huge constant-like input and one it cannot
    see. Returns (X, y)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((samples, 2))
    X, y = z * [1e3, 1e-3] + [5e3, 0.0], (z.sum(axis=1) > 0).astype(int)
    np.savetxt(path, np.c_[X, y], delimiter=",", fmt="%.10g")
    return X, y


def test_standardize_is_on_for_files_and_off_for_built_in_sets_and_the_header_says_which(
        tmp_path, capsys):
    _scaled_csv(tmp_path / "scaled.csv", samples=40)
    for name, dataset, extra, on in (
            ("spiral", "spiral", [], False), ("file", tmp_path / "scaled.csv", [], True),
            ("file_off", tmp_path / "scaled.csv", ["--no-standardize"], False),
            ("spiral_on", "spiral", ["--standardize"], True)):
        out = tmp_path / name
        status, stdout, err = _gpunn(capsys, "train", *TINY, "--dataset", dataset, *extra,
                                     "--out", out)
        assert status == 0, err
        header = stdout.splitlines()[0]
        said = ("features standardized (the training split's mean and std, kept in the model)"
                if on else "features as they are (not standardized)")
        assert header.endswith(said), header
        model = gn.Model.load(out / "model.npz", device="cpu")
        assert isinstance(model.layers[0], gn.Standardize) is on
        assert checkpoint.load(out / "checkpoint.npz", device="cpu").settings["standardize"] is on
    # --resume keeps it, and refuses the other
    status, _, err = _gpunn(capsys, "train", "--resume", "--no-standardize", "--out",
                            tmp_path / "file")
    assert status == 2
    assert "started with --standardize; received --no-standardize" in _one_error_line(err)


def test_standardization_comes_from_the_training_split_only(tmp_path, capsys):
    X, _ = _scaled_csv(tmp_path / "data.csv", samples=100)
    X_train, _, X_val, _ = gn.datasets.load(tmp_path / "data.csv", seed=0)
    assert abs(X_val[:, 0].mean() - X_train[:, 0].mean()) > 10  # the splits differ
    assert _gpunn(capsys, "train", *TINY, "--dataset", tmp_path / "data.csv", "--out",
                  tmp_path / "run")[0] == 0
    layer = gn.Model.load(tmp_path / "run" / "model.npz", device="cpu").layers[0]
    X_train = X_train.astype(np.float64)  # read as float32; the statistics are float64
    np.testing.assert_allclose(layer.mean_values, X_train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.std_values, X_train.std(axis=0), rtol=1e-12)
    assert abs(layer.mean_values[0] - X.mean(axis=0)[0]) > 1  # not the whole file's


def test_standardization_is_what_makes_features_of_very_different_scales_train(tmp_path,
                                                                               capsys):
    _scaled_csv(tmp_path / "scaled.csv")
    scores = {}
    for extra in ([], ["--no-standardize"]):
        out = tmp_path / ("raw" if extra else "standardized")
        status, _, err = _gpunn(capsys, "train", "--device", "cpu", "--quiet", "--dataset",
                                tmp_path / "scaled.csv", *extra, "--out", out)
        assert status == 0, err
        scores[out.name] = checkpoint.load(out / "checkpoint.npz",
                                           device="cpu").history["val_accuracy"][-1]
    assert scores["standardized"] > 0.95 and scores["raw"] < 0.85, scores


def test_evaluate_and_predict_take_raw_features_through_the_models_scaling(tmp_path, capsys):
    _scaled_csv(tmp_path / "scaled.csv")
    _, y_new = _scaled_csv(tmp_path / "new.csv", samples=200, seed=5)
    assert _gpunn(capsys, "train", "--device", "cpu", "--quiet", "--dataset",
                  tmp_path / "scaled.csv", "--out", tmp_path / "run")[0] == 0
    model_path = tmp_path / "run" / "model.npz"
    history = checkpoint.load(tmp_path / "run" / "checkpoint.npz", device="cpu").history
    status, stdout, _ = _gpunn(capsys, "evaluate", model_path, "--device", "cpu")
    assert status == 0 and stdout.endswith(f"loss {history['val_loss'][-1]:.4g}, accuracy "
                                           f"{history['val_accuracy'][-1]:.4f}\n")
    status, stdout, _ = _gpunn(capsys, "evaluate", model_path, "--dataset", tmp_path / "new.csv")
    assert status == 0 and float(stdout.split("accuracy ")[1]) > 0.95
    X_read = gn.datasets.load_inputs(tmp_path / "new.csv")[:, :-1]  # the features alone
    np.savetxt(tmp_path / "new-features.csv", X_read, delimiter=",", fmt="%.9g")
    status, _, err = _gpunn(capsys, "predict", model_path, tmp_path / "new-features.csv",
                            "--out", tmp_path / "p.npz", "--device", "cpu")
    assert status == 0, err
    predictions = _arrays(tmp_path / "p.npz")
    np.testing.assert_array_equal(predictions["outputs"],
                                  gn.Model.load(model_path, device="cpu").predict(X_read))
    assert (predictions["predictions"] == y_new).mean() > 0.95  # raw features, scaled inside


def test_a_regression_reports_r_squared_in_the_summary_and_in_evaluate(tmp_path, capsys):
    status, stdout, _ = _gpunn(capsys, "train", *TINY, "--dataset", _whole_targets(tmp_path),
                               "--task", "regress", "--out", tmp_path / "run")
    assert status == 0
    model = gn.Model.load(tmp_path / "run" / "model.npz", device="cpu")
    _, _, X_val, y_val = gn.datasets.load(_whole_targets(tmp_path), seed=0)
    r2 = gn.accuracy.r_squared(model.predict(X_val), y_val)
    assert f", R² {r2:.4f}\n" in stdout and "validation R² (1 - SS_res / SS_tot)" in stdout
    status, stdout, _ = _gpunn(capsys, "evaluate", tmp_path / "run" / "model.npz")
    assert status == 0 and stdout.endswith(f"of the standardized target), R² {r2:.4f}\n")
    status, stdout, _ = _gpunn(capsys, "train", *TINY, "--out", tmp_path / "spiral")
    assert status == 0 and "R²" not in stdout  # a classifier has none


def test_early_stopping_saves_the_best_epoch_and_the_checkpoint_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    status, stdout, _ = _gpunn(capsys, "train", "--device", "cpu", "--epochs", "300", "--lr",
                               "0.2", "--decay", "0", "--early-stopping", "3", "--out", out)
    assert status == 0
    summary = next(line for line in stdout.split("\n") if "stopped early" in line)
    stopped_at, best = (int(n) for n in re.search(r"epochs 1-(\d+) of 300 .* model.npz holds "
                                                   r"epoch (\d+)", summary).groups())
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == stopped_at < 300
    val_losses = [float(row["val_loss"]) for row in rows]
    assert best == 1 + int(np.argmin(val_losses)) and stopped_at >= best + 3
    model = gn.Model.load(out / "model.npz", device="cpu")
    X, y, X_val, y_val = gn.datasets.load("spiral", seed=0)
    assert model.evaluate(X_val, y_val)[0] == pytest.approx(val_losses[best - 1], rel=1e-5)
    assert f"validation loss {val_losses[best - 1]:.4g}" in summary
    assert checkpoint.load(out / "checkpoint.npz", device="cpu").epoch == stopped_at


def test_validation_split_holds_out_that_share_of_a_file_and_evaluate_scores_it(tmp_path,
                                                                               capsys):
    pandas = pytest.importorskip("pandas")
    X, y = gn.datasets.spiral_data(40, 3, seed=3)
    table = pandas.DataFrame({"a": X[:, 0], "b": X[:, 1], "label": y})
    table.to_csv(tmp_path / "spiral.csv", index=False)
    status, out, err = _gpunn(capsys, "train", *TINY, "--dataset", tmp_path / "spiral.csv",
                              "--validation-split", "0.35", "--out", tmp_path / "run")
    assert status == 0, err
    assert ": 78 training and 42 validation samples" in out.splitlines()[0]  # int(120 * 0.35)
    status, out, err = _gpunn(capsys, "evaluate", tmp_path / "run" / "model.npz")
    assert status == 0 and err == "", err
    assert "validation split (seed 0), 42 samples" in out
    status, _, err = _gpunn(capsys, "train", *TINY, "--validation-split", "0.3", "--out",
                            tmp_path / "spiral")
    assert status == 1 and "applies to .npz and .csv files only" in _one_error_line(err)
    status, _, err = _gpunn(capsys, "train", *TINY, "--validation-split", "1", "--out",
                            tmp_path / "whole")
    assert status == 2 and "expected a number > 0 and < 1" in err
