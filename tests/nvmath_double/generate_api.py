"""Dump the parts of the REAL nvmath-python that gpunn calls (and their neighbours) to JSON.

Usage (the real nvmath-python importable; it imports without a GPU or driver)::

    python tests/nvmath_double/generate_api.py tests/nvmath_double/nvmath_api.json

For ``nvmath.bindings.cublas``, every public name: functions with their parameter names (from
the first docstring line, ``gemm_ex(intptr_t handle, int transa, ...) -> ...``, which is how the
Cython bindings document their signatures), enumerations with their members and values,
exception classes. For ``nvmath``, the enumerations (``CudaDataType``). The double in this
folder refuses at import to define a name, parameter or enum member the list lacks. Written
deterministically (sorted keys), so the same nvmath-python version gives the same file.
"""

from __future__ import annotations

import enum
import json
import os
import re
import sys
from importlib import metadata

_SIGNATURE = re.compile(r"^(\w+)\((.*?)\)(?:\s*->\s*(.+))?$")


def _function(value) -> dict:
    first = (value.__doc__ or "").strip().splitlines()[0] if value.__doc__ else ""
    match = _SIGNATURE.match(first.strip())
    if match is None:
        return {"kind": "function", "params": None}
    params = [part.split("=")[0].strip().split()[-1] for part in match.group(2).split(",")
              if part.strip()]
    return {"kind": "function", "params": params, "signature": first.strip(),
            "returns": match.group(3)}


def _namespace(module, names: list[str] | None = None) -> dict:
    entries = {}
    for name in names or sorted(n for n in dir(module) if not n.startswith("_")):
        value = getattr(module, name)
        if isinstance(value, type) and issubclass(value, enum.Enum):
            entries[name] = {"kind": "enum", "members": {key: int(member.value) for key, member
                                                       in value.__members__.items()}}
        elif isinstance(value, type) and issubclass(value, BaseException):
            entries[name] = {"kind": "exception",
                             "bases": [base.__name__ for base in value.__mro__[1:]]}
        elif isinstance(value, type):
            entries[name] = {"kind": "class"}
        elif callable(value):
            entries[name] = _function(value)
        elif isinstance(value, (int, float, str)):
            entries[name] = {"kind": "constant", "value": value}
        else:
            entries[name] = {"kind": "other"}
    return entries


def main(argv: list[str]) -> int:
    # Run as a script, this folder comes first on the path, and with it the double: list the
    # real package.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    import nvmath
    from nvmath.bindings import cublas

    api = {"nvmath_version": metadata.version("nvmath-python"),
           "namespaces": {
               "nvmath": _namespace(nvmath, sorted(
                   n for n in dir(nvmath) if not n.startswith("_")
                   and isinstance(getattr(nvmath, n), type)
                   and issubclass(getattr(nvmath, n), enum.Enum))),
               "nvmath.bindings.cublas": _namespace(cublas)}}
    text = json.dumps(api, indent=1, sort_keys=True) + "\n"
    if len(argv) > 1:
        with open(argv[1], "w") as file:
            file.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
