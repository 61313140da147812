"""gpunn's benchmarks: gpunn against PyTorch in one process, on the same data (issue #5).

Run everything with ``python -m benchmarks`` (``--help`` lists the options); README.md in this
folder says what each number means and how to get fair ones.
"""
