"""Run: python -m benchmarks.real_datasets [--seeds 10] [--out DIR]

scikit-learn's four small real data sets, written as users write them (``DataFrame.to_csv()``
with pandas' defaults: the index first, a header, the target last under its own name), trained
with ``gpunn train``'s defaults for a file and nothing else (no --task, no --label), seeds
0..N-1, on the CPU; beside each, a linear model (scikit-learn's StandardScaler then
LogisticRegression or LinearRegression) on the very same split. Prints a Markdown table and
writes it with the raw scores (JSON) to benchmarks/results/<machine>/. Needs pandas and
scikit-learn (the dev extra).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import statistics
import tempfile
from pathlib import Path

import numpy

from benchmarks import index, machine

SETS = {  # name -> (loader, the score the summary line ends with)
    "digits": ("load_digits", "accuracy"),
    "breast_cancer": ("load_breast_cancer", "accuracy"),
    "wine": ("load_wine", "accuracy"),
    "diabetes": ("load_diabetes", "R²"),
}


def _frame(loader: str):
    import sklearn.datasets

    kwargs = {"scaled": False} if loader == "load_diabetes" else {}
    return getattr(sklearn.datasets, loader)(as_frame=True, **kwargs).frame


def _gpunn(path: Path, seed: int, out: Path) -> tuple[float, str]:
    from gpunn import cli

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(io.StringIO()):
        status = cli.main(["train", "--device", "cpu", "--dataset", str(path), "--seed",
                           str(seed), "--out", str(out)])
    lines = text.getvalue().splitlines()
    if status != 0:
        raise RuntimeError("\n".join(lines))
    summary = next(line for line in lines if line.startswith("trained epochs"))
    score = summary.rsplit("R² ", 1)[1] if "R² " in summary else \
        summary.rsplit("accuracy ", 1)[1]
    return float(score.split()[0].rstrip(",")), lines[0]


def _linear(frame, seed: int, regression: bool) -> float:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from gpunn import datasets

    X, y = frame.iloc[:, :-1].to_numpy("float32"), frame.iloc[:, -1].to_numpy()
    X, y, X_val, y_val = datasets.split(X, y, seed)  # gpunn train's split of the same file
    model = make_pipeline(StandardScaler(), LinearRegression() if regression else
                          LogisticRegression(max_iter=5000))
    return float(model.fit(X, y).score(X_val, y_val))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (loader, score) in SETS.items():
            frame = _frame(loader)
            path = Path(folder) / f"{name}.csv"
            frame.to_csv(path)
            ours, theirs, header = [], [], ""
            for seed in range(args.seeds):
                value, header = _gpunn(path, seed, Path(folder) / f"{name}-{seed}")
                ours.append(value)
                theirs.append(_linear(frame, seed, score == "R²"))
            raw[name] = {"gpunn": ours, "linear": theirs, "header": header}
            rows.append(f"| {name} | {header.split(', ', 1)[1].split(' (')[0]} | {score} "
                        f"{min(ours):.3f} to {max(ours):.3f} | {statistics.median(ours):.3f} | "
                        f"{statistics.median(theirs):.3f} (lowest {min(theirs):.3f}) |")
    table = "\n".join([
        f"Machine: {machine.cpu_model()}, {machine.cores()} cores; seeds 0-{args.seeds - 1}; "
        f"files from DataFrame.to_csv(), gpunn train's defaults.", "",
        "| data set | what gpunn chose | validation score, gpunn | median | linear model, "
        "median |", "|---|---|---|---|---|", *rows])
    print(table)
    date = datetime.datetime.now(datetime.timezone.utc)
    out = args.out or index.RESULTS / machine.result_name()
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{machine.result_name()}-real-datasets-{date.strftime('%Y%m%dT%H%M')}"
    stem.with_suffix(".md").write_text(table + "\n")
    stem.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"wrote {stem}.md and .json; {index.write()}")


if __name__ == "__main__":
    numpy.seterr(all="ignore")
    main()
