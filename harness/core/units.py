"""Image counts as users write them (12800, '25.6M', '10Ki'): every duration is in images."""

from __future__ import annotations

import re

_NIMG_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(Ki|Mi|Gi|k|M|G)?\s*$")
_NIMG_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def parse_nimg(value: str | int) -> int:
    """Parse an image count such as 12800, '25.6M' or '10Ki' into an integer number of images."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _NIMG_RE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not an image count (examples: 12800, '25.6M', '10Ki')")
    return round(float(match.group(1)) * _NIMG_UNITS[match.group(2)])
