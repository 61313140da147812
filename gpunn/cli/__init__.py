"""The command line: ``gpunn train``, ``evaluate``, ``predict``, ``export``, ``info`` (or
``python -m gpunn``).

``gpunn train`` with no options trains a small network on the book's spiral data in about a
second on a laptop CPU, and writes model.npz, metrics.csv, checkpoint.npz and training.png to a
new runs/<date-time>, which runs/latest then points at. Every error reaches the user as one
line, ``gpunn: error: ...``, with exit status 2 for a bad command line, 1 for anything else
and 130 after Ctrl-C; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

import gpunn as gn
from gpunn import distributed, progress
from gpunn.cli import evaluate, export, info, predict, train
from gpunn.cli._common import Parser, UsageError
from gpunn.errors import GpunnError

__all__ = ["main"]

# One module per command, each with add_parser(commands) and the function that runs it; the
# order is that of `gpunn --help`.
COMMANDS = (train, evaluate, predict, export, info)


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status. Example: ``main(["train", "--quiet"])``."""
    args, stdout = None, sys.stdout
    sys.stdout = progress.ReaderMayLeave(stdout)
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: train, evaluate, predict, export or info "
                             "(see gpunn --help)")
        return args.run(args)
    except SystemExit as exit:  # --help and --version
        return exit.code if isinstance(exit.code, int) else 0
    except UsageError as error:
        return _fail(error, 2)
    except KeyboardInterrupt:  # outside training, which turns Ctrl-C into a clean stop
        return _fail("interrupted", 130)
    except (GpunnError, OSError) as error:
        if args is not None and args.debug:
            raise
        return _fail(error, 1)
    finally:
        sys.stdout = stdout


def _fail(error: Exception | str, status: int) -> int:
    message = " ".join(str(error).split())
    comm = distributed.current()
    if comm.size > 1:
        # The same error on every rank (a bad option, a data file) is said once, by rank 0,
        # and the job ends normally; a rank failing alone would leave the others waiting for
        # ever: it ends them all.
        if not comm.all_failing():
            comm.abort(status, f"failed: {message}")
        if comm.rank != 0:
            return status
    elif distributed.launched_rank() > 0:  # an error before the ranks connect (the options)
        return status
    prefix = "gpunn: " if isinstance(error, str) else "gpunn: error: "
    print(prefix + message, file=sys.stderr)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gpunn", description="Neural networks from scratch on NumPy or CUDA.")
    parser.add_argument("--version", action="version", version=f"gpunn {gn.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser
