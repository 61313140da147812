"""Run, on the GPU machine (no network, nothing installed; benchmarks/README.md, "On a GPU
machine without network", gives the whole procedure):

    export PYTHONPATH="$PWD"
    timeout 480 python3 -m benchmarks.gpu_check --stage truth --out "$OUT"
    timeout 480 python3 -m benchmarks.gpu_check --stage speed --out "$OUT"

and in every CI run, as a rehearsal on the CuPy and nvmath-python doubles (simulated devices
cuda-sim:N, not a GPU; tests/test_gpu_check.py):

    python -m benchmarks.gpu_check --rehearse --stage truth --out DIR

What a GPU can show that the doubles cannot, in stages that each end within 8 minutes:
``truth`` (is the GPU path right: the test suite on CUDA, the CUDA graph, compute-sanitizer,
each kernel's distance from its NumPy twin, launches and waits per step) and ``speed`` (how fast:
gpunn with and without CUDA graphs against PyTorch eager and graphed, the kernels' bandwidth,
the first and second ``gpunn train``); ``all`` runs both. Every part runs in a process of its
own under a time limit cut to what is left of the stage's budget, and the stage writes its
results as it goes: gpu-check-<stage>.json (every figure, the versions; rewritten atomically
after every part), gpu-check-<stage>.md (the summary), gpu-check-<stage>.log (every command and
its output) and, for truth, pytest-truth.jsonl (one line per test as it ends). A stage killed at
its limit leaves what it measured. A missing optional package or tool is a skip with its
reason. Wheels that ``python -m benchmarks.gpu_wheels`` put in wheels/ are installed with
``pip install --no-index --no-deps --target`` into a temporary folder, on sys.path and on
PYTHONPATH for every part. It never writes under benchmarks/results/: copy what it wrote there
by hand, under a name with the device and the versions, and commit it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import gpu_wheels, step_counts

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 440  # per stage: under the README's `timeout 480`, with time left to write
LOG_LIMIT = 15 * 2**20  # the machine brings back files of at most 16 MiB
TAIL = 3000  # characters of a command's output kept in the JSON (the log has all of it)
TOOL_DOUBLES = ROOT / "tests" / "tool_doubles"  # stand-ins for compute-sanitizer and ncu
SIMULATED = "cuda-sim:0 (CuPy double, simulated: not a GPU)"


class Check:
    """One stage's run: its output folder, its clock, its record, its log; runs commands and
    worker parts under time limits and saves the record after every part."""

    def __init__(self, args: argparse.Namespace, stage: str, scratch: Path) -> None:
        self.out, self.stage, self.rehearse = args.out, stage, args.rehearse
        self.scratch = scratch
        self.started = time.monotonic()
        self.deadline = self.started + args.budget
        self.running: dict[str, tuple[subprocess.Popen, Path, Path]] = {}
        self.current: subprocess.Popen | None = None  # the command in the foreground
        self.json = self.out / f"gpu-check-{stage}.json"
        self.markdown = self.out / f"gpu-check-{stage}.md"
        self.log_path = self.out / f"gpu-check-{stage}.log"
        self.log_file = open(self.log_path, "a", encoding="utf-8", errors="replace")
        self.logged = self.log_path.stat().st_size
        self.environment = dict(args.environment)
        self.record: dict[str, Any] = {
            "schema": 1, "stage": stage, "rehearsal": self.rehearse, "simulated": self.rehearse,
            "device": SIMULATED if self.rehearse else "not known yet",
            "command": "python -m benchmarks.gpu_check " + " ".join(args.argv),
            "started": _now(), "budget_seconds": args.budget, "wheels": args.wheels,
            "shrunk": ("rehearsal: sizes, repeats and the test selection are shrunk; every "
                       "part still runs its code path") if self.rehearse else None,
            "parts": {},
        }

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, text: str) -> None:
        """Append to the log (and print), up to the size the machine brings back."""
        print(text, flush=True)
        if self.logged < LOG_LIMIT:
            text = text[:LOG_LIMIT - self.logged] + "\n"
            self.log_file.write(text)
            self.log_file.flush()
            self.logged += len(text.encode("utf-8", "replace"))

    def command(self, argv: list[str], *, timeout: float, env: dict | None = None,
                cwd: Path = ROOT) -> dict[str, Any]:
        """Run ``argv`` under ``timeout`` seconds; its output goes to the log as it comes."""
        self.log(f"$ {' '.join(argv)}    (limit {timeout:.0f} s)")
        started = time.monotonic()
        output: list[str] = []
        try:
            process = subprocess.Popen(argv, cwd=cwd, env=env or self.environment, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       errors="replace", start_new_session=True)
        except OSError as error:
            return {"command": " ".join(argv), "exit_status": None, "error": str(error)}
        timer = _Killer(process, timeout)
        self.current = process
        for line in process.stdout:
            output.append(line)
            self.log(line.rstrip("\n"))
        process.wait()
        timer.cancel()
        self.current = None
        text = "".join(output)
        return {"command": " ".join(argv), "exit_status": process.returncode,
                "timed_out": timer.fired, "seconds": round(time.monotonic() - started, 1),
                "tail": text[-TAIL:]}

    def worker(self, module: str, part: str, *, timeout: float, env: dict | None = None,
               options: tuple[str, ...] = ()) -> dict[str, Any]:
        """``python -m <module> <part> --json FILE``: the part's result, or why there is none."""
        result_file = self.scratch / f"{module}-{part}-{time.monotonic_ns()}.json"
        argv = [sys.executable, "-m", module, part, "--json", str(result_file), *options]
        if self.rehearse:
            argv.append("--rehearse")
        done = self.command(argv, timeout=timeout, env=env)
        if result_file.exists():
            result = json.loads(result_file.read_text())
            if done["exit_status"] != 0:
                result["worker"] = done
            return result
        return {"error": f"no result (exit status {done['exit_status']}"
                         f"{', timed out' if done.get('timed_out') else ''})", "worker": done}

    def background(self, name: str, argv: list[str], *, env: dict) -> None:
        """Start ``python -m <argv> --json FILE`` beside the parts (work that needs no GPU);
        ``wait(name)`` collects it."""
        result_file, output = (self.scratch / f"{name.replace(' ', '-')}.{suffix}"
                               for suffix in ("json", "log"))
        command = [sys.executable, "-m", *argv, "--json", str(result_file)]
        self.log(f"$ {' '.join(command)} &    (in the background; its output comes at the end)")
        with open(output, "w") as file:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=file,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.running[name] = (process, result_file, output)

    def wait(self, name: str, seconds: float) -> dict[str, Any]:
        """What the background work ``name`` wrote, waiting at most ``seconds`` for it."""
        process, result_file, output = self.running.pop(name)
        try:
            process.wait(timeout=max(seconds, 1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        text = output.read_text(errors="replace")
        self.log(f"--- {name} (exit status {process.returncode}) ---\n{text[-20000:]}")
        if result_file.exists():
            return json.loads(result_file.read_text())
        return {"error": f"no result (exit status {process.returncode})", "tail": text[-TAIL:]}

    def close(self, stopped: str | None = None) -> None:
        """End what still runs (``stopped``: why the stage ends early), say where the results
        are, close the log."""
        left = [process for process, _, _ in self.running.values()] + [self.current]
        for process in filter(None, left):
            try:
                os.killpg(process.pid, 9)
            except OSError:
                pass
            process.wait()
        if stopped:
            self.record["stopped"] = stopped
            self.save()
        self.log(f"wrote {self.json}, {self.markdown} and {self.log_path}")
        self.log_file.close()

    def save(self) -> None:
        """The JSON and the Markdown summary, each written whole and renamed into place."""
        self.record["saved"] = _now()
        self.record["elapsed_seconds"] = round(time.monotonic() - self.started, 1)
        _write_atomic(self.json, json.dumps(self.record, indent=1, default=str) + "\n")
        _write_atomic(self.markdown, summary(self.record))

    def run(self, parts: list[tuple[str, Any, float]], start: Any = None) -> None:
        """``start(self)``, then each part in turn, under min(its limit, what is left); the
        record saved after each."""
        self.save()
        if start is not None:
            start(self)
        for name, function, seconds in parts:
            left = self.remaining() - 5
            if left < 10:
                result: dict[str, Any] = {"skipped": "the stage's time budget is spent"}
            else:
                self.log(f"\n=== {self.stage}: {name} (limit {min(seconds, left):.0f} s) ===")
                started = time.monotonic()
                try:
                    result = function(self, min(seconds, left))
                except Exception:  # a part's own bug must not cost the others their turn
                    result = {"error": traceback.format_exc()[-TAIL:]}
                result["seconds"] = round(time.monotonic() - started, 1)
                result["limit_seconds"] = round(min(seconds, left), 1)
            result.setdefault("device", self.record["device"])
            self.record["parts"][name] = result
            self.save()
            if name == "versions" and result.get("refuse"):
                self.log(result["refuse"])
                raise SystemExit(result["refuse"])


class _Killer:
    """Kill a process group after ``seconds`` (a part's time limit)."""

    def __init__(self, process: subprocess.Popen, seconds: float) -> None:
        import threading

        self.fired = False
        self.process = process
        self.timer = threading.Timer(seconds, self.kill)
        self.timer.daemon = True
        self.timer.start()

    def kill(self) -> None:
        self.fired = True
        try:
            os.killpg(self.process.pid, 9)
        except OSError:
            pass

    def cancel(self) -> None:
        self.timer.cancel()


class _Terminated(BaseException):
    """SIGTERM arrived (``timeout``); not an Exception, so no part takes it for its own error."""


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def summary(record: dict[str, Any]) -> str:
    """The Markdown summary: what ran, on what, and each part's key lines."""
    title = f"# gpu_check {record['stage']}: {record['device']}"
    lines = [title, ""]
    if record["simulated"]:
        lines += ["**SIMULATED: a rehearsal on the CuPy and nvmath-python doubles (devices "
                  "cuda-sim:N). No figure here is a GPU figure.**", ""]
    lines += [f"`{record['command']}`, started {record['started']}, saved {record['saved']} "
              f"({record['elapsed_seconds']} s of a {record['budget_seconds']} s budget).", ""]
    if record.get("shrunk"):
        lines += [f"Shrunk for the {record['shrunk']}.", ""]
    for name, part in record["parts"].items():
        state = ("skipped: " + part["skipped"] if "skipped" in part else
                 "ERROR: " + part["error"].strip().splitlines()[-1] if "error" in part else "ok")
        lines += [f"## {name} ({part.get('seconds', 0)} s; {part['device']})", "", state, ""]
        lines += [*part.get("summary", []), ""]
    return "\n".join(lines) + "\n"


def environment(args: argparse.Namespace, scratch: Path) -> dict[str, str]:
    """What every part runs with: the checkout (and in a rehearsal the doubles and the tool
    stand-ins) first, then the wheels installed from ``args.wheels``."""
    paths = [str(ROOT)]
    if args.rehearse:
        paths[:0] = step_counts.doubles_path().split(os.pathsep)
    installed = gpu_wheels.install(Path(args.wheels), scratch / "site")
    args.wheels = installed
    if installed["installed"]:
        paths.append(str(scratch / "site"))
        sys.path.append(str(scratch / "site"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [*paths, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("GPUNN_DEVICE", None)
    env["GPUNN_RESULTS_DIR"] = str(scratch / "results")  # tests/conftest.py's CUDA record
    if args.rehearse:
        env["PATH"] = os.pathsep.join([str(TOOL_DOUBLES), env.get("PATH", "")])
    return env


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                     description=__doc__.split("\n\n")[4])
    parser.add_argument("--stage", choices=("truth", "speed", "all"), required=True)
    parser.add_argument("--out", type=Path, required=True,
                        help="the folder for the results (created; files are rewritten)")
    parser.add_argument("--rehearse", action="store_true",
                        help="run on the CuPy and nvmath-python doubles, shrunk: simulated "
                             "devices, not a GPU (what CI runs)")
    parser.add_argument("--wheels", default=str(gpu_wheels.FOLDER),
                        help=f"wheels to install first (default {gpu_wheels.FOLDER})")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS,
                        help=f"seconds per stage (default {BUDGET_SECONDS})")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    from benchmarks import gpu_speed, gpu_truth

    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)  # `timeout 480`: end the parts' processes too
    stages = ["truth", "speed"] if args.stage == "all" else [args.stage]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        scratch = Path(folder)
        args.environment = environment(args, scratch)
        failed = False
        for stage in stages:
            check = Check(args, stage, scratch)
            try:
                if stage == "truth":
                    check.run(gpu_truth.PARTS, start=gpu_truth.start)
                else:
                    check.run(gpu_speed.PARTS)
            except _Terminated:
                check.close(stopped=f"terminated (SIGTERM) at {_now()}, in the part after the "
                                    f"last one recorded")
                raise SystemExit(143) from None
            finally:
                if not check.log_file.closed:
                    check.close()
            failed |= any("error" in part for part in check.record["parts"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
