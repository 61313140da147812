"""``python -m gpunn``: the same command line as ``gpunn``."""

from gpunn.cli import main

raise SystemExit(main())
