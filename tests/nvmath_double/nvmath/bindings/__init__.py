"""``nvmath.bindings`` of the double: only ``cublas``."""
