"""Run: python -m benchmarks.sklearn_mlp            (a few minutes on 2 cores)
       python -m benchmarks.sklearn_mlp --quick    (seconds, to runs/benchmarks/)

gpunn.sklearn.MLPClassifier / MLPRegressor against scikit-learn's own MLP estimators
(sklearn.neural_network), on the CPU, in one process: scikit-learn's digits, breast cancer, wine
and diabetes, and a 100,000-row synthetic classification (make_classification). Both get the
same settings: hidden layer sizes, ReLU, Adam with the same learning rate, batch size 200, L2
alpha 1e-4, the same number of epochs (n_iter_no_change = max_iter, so that neither stops
early), on the same split (80/20, stratified for classes) scaled by a StandardScaler fitted to
the training part, as float32 (so scikit-learn computes in float32 too). The two alternate over
the rounds (each round its own random_state for both, so the scores' spread is the seeds'
noise); the table gives the medians of fit time and test score (accuracy, or R² for diabetes)
with their ranges, and scikit-learn's time over gpunn's.

Results go to benchmarks/results/<machine>/<machine>-sklearn-mlp-<date>.json and .md (then run
python -m benchmarks.index). The times are wall-clock seconds of ``fit``; another busy process
on the machine slows both alike (the run records the load average).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy

from benchmarks import machine
from benchmarks.timing import settle, summary

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (task, hidden layer sizes, epochs, learning rate); the epochs are where scikit-learn's
# own default stopping rule would end about (digits, wine, breast cancer), or a fixed budget.
DATASETS = {
    "digits": ("classify", (100,), 100, 0.001),
    "breast_cancer": ("classify", (100,), 100, 0.001),
    "wine": ("classify", (100,), 100, 0.001),
    "diabetes": ("regress", (100,), 300, 0.01),
    "synthetic_100k": ("classify", (100,), 10, 0.001),
}
QUICK = {"digits": ("classify", (32,), 5, 0.001), "synthetic_100k": ("classify", (32,), 1, 0.001)}


def load(name: str, quick: bool) -> tuple[numpy.ndarray, numpy.ndarray]:
    from sklearn import datasets

    if name == "synthetic_100k":
        rows = 5_000 if quick else 100_000
        return datasets.make_classification(rows, n_features=20, n_informative=10,
                                            n_classes=3, random_state=0)
    return getattr(datasets, f"load_{name}")(return_X_y=True)


def split(X: numpy.ndarray, y: numpy.ndarray, task: str) -> tuple:
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=0, stratify=y if task == "classify" else None)
    scaler = StandardScaler().fit(X_train)
    # float32 for both: gpunn's dtype, and scikit-learn's MLP then computes in float32 too
    return (scaler.transform(X_train).astype(numpy.float32),
            scaler.transform(X_test).astype(numpy.float32), y_train, y_test)


def estimators(task: str, hidden: tuple, epochs: int, learning_rate: float,
               seed: int) -> dict[str, Any]:
    from sklearn import neural_network

    from gpunn import sklearn as ours

    settings = {"hidden_layer_sizes": hidden, "activation": "relu", "alpha": 1e-4,
                "batch_size": 200, "learning_rate_init": learning_rate, "max_iter": epochs,
                "n_iter_no_change": epochs, "random_state": seed}
    kind = "MLPClassifier" if task == "classify" else "MLPRegressor"
    return {"scikit-learn": getattr(neural_network, kind)(solver="adam", **settings),
            "gpunn": getattr(ours, kind)(device="cpu", **settings)}


def measure(name: str, spec: tuple, rounds: int, quick: bool) -> dict[str, Any]:
    task, hidden, epochs, learning_rate = spec
    X_train, X_test, y_train, y_test = split(*load(name, quick), task)
    times: dict[str, list[float]] = {"scikit-learn": [], "gpunn": []}
    scores: dict[str, list[float]] = {"scikit-learn": [], "gpunn": []}
    epochs_run: dict[str, list[int]] = {"scikit-learn": [], "gpunn": []}
    for seed in range(rounds):
        pair = estimators(task, hidden, epochs, learning_rate, seed)
        order = list(pair) if seed % 2 == 0 else list(pair)[::-1]  # alternate who goes first
        for library in order:
            estimator = pair[library]
            settle()
            with warnings.catch_warnings():  # scikit-learn's ConvergenceWarning at max_iter
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                estimator.fit(X_train, y_train)
                times[library].append(time.perf_counter() - start)
            scores[library].append(float(estimator.score(X_test, y_test)))
            epochs_run[library].append(int(estimator.n_iter_))
    return {"task": task, "hidden_layer_sizes": list(hidden), "epochs": epochs,
            "learning_rate_init": learning_rate, "training_rows": len(X_train),
            "test_rows": len(X_test), "features": X_train.shape[1],
            "outputs": len(numpy.unique(y_train)) if task == "classify" else 1,
            "metric": "accuracy" if task == "classify" else "R²",
            "fit_seconds": {library: summary(values) for library, values in times.items()},
            "score": {library: summary(values) for library, values in scores.items()},
            "epochs_run": epochs_run,
            "speedup": statistics.median(times["scikit-learn"]) / statistics.median(
                times["gpunn"])}


def markdown(record: dict[str, Any]) -> str:
    lines = [f"# gpunn.sklearn against scikit-learn's MLP ({record['machine']['cpu']}, "
             f"{record['machine']['cores']} cores)", "",
             f"{record['rounds']} rounds, the two alternating, medians [min-max]; CPU, "
             f"float32 data for both; {record['threads']} BLAS threads; other processes took "
             f"{_share(record['other_processes_share'])} of the CPUs (load average before "
             f"{record['load_before']}, after {record['load_after']}). {record['note']}", "",
             "| data | rows x features | network, epochs | metric | scikit-learn | gpunn "
             "| fit s scikit-learn | fit s gpunn | speed-up |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, result in record["results"].items():
        score, seconds = result["score"], result["fit_seconds"]
        network = "-".join(map(str, [result["features"], *result["hidden_layer_sizes"],
                                     result["outputs"]]))
        lines.append(
            f"| {name} | {result['training_rows']:,} x {result['features']} | {network}, "
            f"{result['epochs']} | {result['metric']} | {_spread(score['scikit-learn'], 3)} | "
            f"{_spread(score['gpunn'], 3)} | {_spread(seconds['scikit-learn'], 2)} | "
            f"{_spread(seconds['gpunn'], 2)} | {result['speedup']:.1f}x |")
    lines += ["", f"Whole run: {record['wall_seconds']:.0f} s. Command: `{record['command']}`."]
    return "\n".join(lines) + "\n"


def _share(share: float | None) -> str:
    return "an unknown share" if share is None else f"{share:.0%}"


def _spread(values: dict[str, Any], digits: int) -> str:
    return (f"{values['median']:.{digits}f} [{values['min']:.{digits}f}-"
            f"{values['max']:.{digits}f}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    parser.add_argument("--only", nargs="+", choices=list(DATASETS))
    parser.add_argument("--threads", type=int, default=machine.cores(),
                        help="NumPy's BLAS threads, for both (default: the cores this process "
                        "may use)")
    parser.add_argument("--note", default="", help="said in the table (e.g. the machine was "
                        "shared)")
    parser.add_argument("--out", type=Path, help="folder (default: benchmarks/results/<machine>"
                        "/, or runs/benchmarks/ with --quick)")
    args = parser.parse_args(argv)
    import sklearn

    specs = QUICK if args.quick else {name: DATASETS[name]
                                      for name in (args.only or list(DATASETS))}
    rounds = 2 if args.quick else args.rounds
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_before, start = machine.load_average(), time.perf_counter()
    results = {}
    with machine.pinned_threads(args.threads, None), machine.OtherProcesses() as others:
        for name, spec in specs.items():
            results[name] = measure(name, spec, rounds, args.quick)
            print(f"{name}: done ({results[name]['speedup']:.1f}x)", flush=True)
    record = {"benchmark": "sklearn_mlp", "date": started, "rounds": rounds,
              "command": shlex.join(["python", "-m", "benchmarks.sklearn_mlp",
                                    *(sys.argv[1:] if argv is None else argv)]),
              "machine": {"cpu": machine.cpu_model(), "cores": machine.cores(),
                          "blas": machine.blas()},
              "versions": {"numpy": numpy.__version__, "scikit-learn": sklearn.__version__,
                           "python": sys.version.split()[0]},
              "load_before": load_before, "load_after": machine.load_average(),
              "wall_seconds": time.perf_counter() - start, "note": args.note,
              "threads": args.threads, "other_processes_share": others.share,
              "results": results}
    threads = f"-{args.threads}-threads" if args.threads != machine.cores() else ""
    name = (f"{machine.result_name()}-sklearn-mlp{'-quick' if args.quick else ''}{threads}-"
            f"{machine.stamp(started)}")
    folder = args.out or (Path("runs/benchmarks") if args.quick
                          else RESULTS / machine.result_name())
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(record)
    for suffix, content in ((".json", json.dumps(record, indent=1) + "\n"), (".md", text)):
        path = folder / f"{name}{suffix}"
        if path.exists():
            raise SystemExit(f"{path} exists; not overwriting it")
        path.write_text(content, encoding="utf-8")
    print(text)
    print(f"wrote {folder / name}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
