"""Run: python -m benchmarks [--quick] [--repeats N] [--device all|cpu|cuda] [--out DIR]"""

from benchmarks.run import main

raise SystemExit(main())
