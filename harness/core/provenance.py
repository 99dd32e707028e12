"""Where a record's code came from: the harness checkout's git commit and whether it was dirty."""

from __future__ import annotations

import subprocess
from pathlib import Path

_REPO_DIR = Path(__file__).resolve().parents[2]  # harness/core/ -> the checkout

def git_sha() -> str | None:
    """Commit of the harness source tree, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO_DIR), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def git_dirty() -> bool | None:
    """Whether tracked files of the harness checkout differ from HEAD (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO_DIR), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None
