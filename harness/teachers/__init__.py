"""Pretrained teachers: the catalogue of published EDM/EDM2 networks, a pickle reader that executes
nothing, and the conversion onto the harness's networks.
"""

from typing import Any

__all__ = ["import_teacher", "load_teacher"]


def __getattr__(name: str) -> Any:
    """`harness.teachers.load_teacher` and `import_teacher`, imported on first use (PEP 562):
    they need torch, and planning reads the catalogue beside them without it."""
    if name in __all__:
        from harness.teachers import convert

        return getattr(convert, name)
    raise AttributeError(f"module 'harness.teachers' has no attribute {name!r}")
