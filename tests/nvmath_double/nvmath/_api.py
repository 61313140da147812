"""The real nvmath-python's names (nvmath_api.json, made by generate_api.py) and the checks that
keep the double to them: it may define no name, parameter or enum member the real one lacks."""

from __future__ import annotations
import __future__

import enum
import inspect
import json
from pathlib import Path

API = json.loads((Path(__file__).resolve().parent.parent / "nvmath_api.json").read_text())


def entry(namespace: str, name: str) -> dict:
    found = API["namespaces"].get(namespace, {}).get(name)
    if found is None:
        raise AttributeError(f"the nvmath double would expose {namespace}.{name}, which "
                             f"nvmath-python {API['nvmath_version']} does not have")
    return found


def real_enum(namespace: str, name: str) -> type:
    """The enumeration as the real package defines it: its members and values."""
    return enum.IntEnum(name, entry(namespace, name)["members"], module=namespace)


def verify(namespace: str, names: dict) -> None:
    """Fail at import when a public name of the double is not the real package's, or a
    function's parameters differ from the real signature."""
    for name, value in names.items():
        if name.startswith("_") or inspect.ismodule(value) or isinstance(value,
                                                                          __future__._Feature):
            continue
        real = entry(namespace, name)
        if inspect.isfunction(value):
            params = list(inspect.signature(value).parameters)
            if real.get("params") != params:
                raise TypeError(f"the nvmath double's {namespace}.{name}{tuple(params)} differs "
                                f"from the real {real.get('signature')}")
        elif isinstance(value, type) and issubclass(value, enum.Enum):
            if {m: int(v.value) for m, v in value.__members__.items()} != real["members"]:
                raise TypeError(f"the nvmath double's {namespace}.{name} members differ")
        elif real["kind"] in ("function", "enum"):
            raise TypeError(f"the nvmath double's {namespace}.{name} is not a {real['kind']}")
