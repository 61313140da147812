"""Run: python -m benchmarks.profile_gpunn [--batch-size 128] [--samples 60000] [--top 25]

Where gpunn's time goes in one MLP training epoch (the benchmark's 784-128-128-10 network and
data): cProfile's top functions by own time and by cumulative time, with BLAS threads pinned as
in the benchmark. For native frames (inside NumPy and BLAS), sample instead with
``py-spy record --native -o profile.svg -- python -m benchmarks.profile_gpunn``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats

from benchmarks import machine, mlp
from benchmarks.trainers import GpunnTrainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_gpunn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--threads", type=int, default=machine.cores())
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    X, y = mlp.synthetic_data(args.samples, 0)
    with machine.pinned_threads(args.threads, None):
        trainer = GpunnTrainer(mlp.SIZES, X, y, device="cpu", learning_rate=mlp.LEARNING_RATE,
                               decay=0.0, seed=0, shuffle=True)
        trainer.epoch(min(args.samples, 200 * args.batch_size), args.batch_size)  # warm up
        profiler = cProfile.Profile()
        profiler.runcall(trainer.epoch, args.samples, args.batch_size)
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(args.top)
        print(f"--- gpunn, batch {args.batch_size}, {args.samples} samples, "
              f"{args.threads} BLAS threads: top {args.top} by {order} ---")
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
