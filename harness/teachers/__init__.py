"""Pretrained teachers: the catalogue of published EDM/EDM2 networks, a pickle reader that executes
nothing, and the conversion onto the harness's networks.
"""

from harness.teachers.convert import import_teacher, load_teacher

__all__ = ["import_teacher", "load_teacher"]
