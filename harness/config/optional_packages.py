"""The optional packages a run's config asks for (the loggers of `train.loggers`), and whether
they are installed here. Torch-free: planning refuses a sweep whose loggers are missing before
anything is submitted, and the training loop checks again on the node it runs on.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

# The module each logger of train.loggers needs, and how to install it.
_PACKAGES = {"tensorboard": ("tensorboard", "pip install tensorboard"),
             "wandb": ("wandb", "pip install wandb"),
             "mlflow": ("mlflow", "pip install mlflow")}


def missing_packages(names: Iterable[str]) -> list[str]:
    """The loggers of `names` whose package is not installed, each with its install command.
    The planner checks this before anything is submitted, and the
    loop again where it runs."""
    out = []
    for name in names:
        module, install = _PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            out.append(f"{name} (no '{module}' package: {install})")
    return out
