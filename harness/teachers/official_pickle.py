"""Read the official EDM and EDM2 network pickles as plain data, executing nothing from them.

Both NVlabs/edm and NVlabs/edm2 save networks with `pickle.dump` of objects whose classes are
decorated by `torch_utils/persistence.py`: such an object pickles as a call
`_reconstruct_persistent_obj(meta)`, where `meta` holds the whole source code of the class's module
(`module_src`), the class name and the object's state (for a network, the module's `__dict__`:
`_parameters`, `_buffers`, `_modules`, `_init_args`, `_init_kwargs`, hooks). Unpickling such a
file the ordinary way executes `module_src`. This reader never does: its unpickler resolves a short
list of globals (`ALLOWED_GLOBALS`) to stand-ins that build plain data, turns every persistent
object into a `PersistentObject` (its class name, a hash of the source that was not run, its init
arguments, parameters, buffers and submodules), loads tensor storages with
`torch.load(..., weights_only=True)` (torch's own `torch.storage._load_from_bytes` would load them
with `weights_only=False`), and refuses every other global with an error that names it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


class OfficialPickleError(ValueError):
    """An official network pickle that cannot be read safely, or is damaged."""


@dataclass(frozen=True)
class PersistentObject:
    """One object of a persistent class, as data: nothing of its class was imported or run.

    `parameters` and `buffers` are the object's own tensors (for a `torch.nn.Module`), `modules`
    its direct submodules by name (`PersistentObject`, `ModuleContainer`, or None), and
    `attributes` every other plain entry of its state (e.g. a loss function's constants)."""

    class_name: str
    module_src_sha256: str
    init_args: tuple[Any, ...] = ()
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    modules: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)

    def named_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every parameter and buffer below this object, by its dotted `state_dict` name."""
        yield from _named_tensors(self, "")


@dataclass(frozen=True)
class ModuleContainer:
    """A `torch.nn.ModuleDict` or `ModuleList` of the file: its class name and its submodules."""

    class_name: str
    modules: dict[str, Any]


def _named_tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, PersistentObject):
        for name, tensor in (*obj.parameters.items(), *obj.buffers.items()):
            if tensor is not None:
                yield prefix + name, tensor
    if isinstance(obj, PersistentObject | ModuleContainer):
        for name, child in obj.modules.items():
            yield from _named_tensors(child, f"{prefix}{name}.")


class _EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a dict subclass): pickle rebuilds it as a dict."""


class _ContainerStub:
    """Stand-in for torch.nn's ModuleDict / ModuleList: collects the state pickle gives it."""

    class_name = "torch.nn.Module"

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state

    def as_container(self) -> ModuleContainer:
        modules = getattr(self, "state", {}).get("_modules", {}) or {}
        return ModuleContainer(self.class_name, {str(k): _finish(v) for k, v in modules.items()})


def _container_class(name: str) -> type:
    return type(f"_{name}Stub", (_ContainerStub,), {"class_name": f"torch.nn.{name}"})


def _load_storage(data: bytes) -> Any:
    """`torch.storage._load_from_bytes` without its `weights_only=False`."""
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises several types for a bad or refused storage
        raise OfficialPickleError(f"a tensor storage could not be read with weights_only=True: "
                                  f"{e}") from e


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any,
                       *state: Any) -> torch.Tensor:
    """A parameter's tensor, without its gradient flag or hooks (nothing here trains)."""
    return data


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    """A numpy scalar of a plain numeric or boolean dtype (EDM stores some init kwargs so)."""
    if isinstance(dtype, _DtypeWithState):
        dtype = dtype.dtype
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or dtype.hasobject:
        raise OfficialPickleError(f"refused numpy scalar of dtype {dtype!r}: only plain numeric "
                                  "and boolean scalars are read")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise OfficialPickleError(f"a numpy {dtype} scalar with {type(data).__name__} data of the "
                                  "wrong size")
    return np.frombuffer(data, dtype=dtype)[0].item()


class _SafeDtype:
    """Stand-in for `numpy.dtype`: only plain numeric and boolean dtypes are built."""

    def __new__(cls, spec: Any, align: bool = False, copy: bool = False) -> Any:
        if not isinstance(spec, str):
            raise OfficialPickleError(f"refused numpy dtype {spec!r}")
        dtype = np.dtype(spec)
        if dtype.kind not in "biufc" or dtype.hasobject:
            raise OfficialPickleError(f"refused numpy dtype {spec!r}: only plain numeric and "
                                      "boolean dtypes are read")
        return _DtypeWithState(dtype)


class _DtypeWithState:
    """Holds a dtype while pickle applies the state it stored after `numpy.dtype(...)`; the
    state (byte order, flags) of a plain dtype is implied by its string and ignored."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.dtype = self.dtype.newbyteorder(state[1]) if state[1] in "<>" else self.dtype


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """What the persistence hook gets: `meta` as data, its `module_src` hashed and never run."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        kind = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise OfficialPickleError(f"a persistent object of type {kind!r}: only persistent "
                                  "classes ('class') are read")
    src = meta.get("module_src")
    if not isinstance(src, str) or not isinstance(meta.get("class_name"), str):
        raise OfficialPickleError("a persistent object without module_src or class_name")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise OfficialPickleError(f"persistent object {meta['class_name']}: its state is a "
                                  f"{type(state).__name__}, not a dict")
    return PersistentObject(
        class_name=meta["class_name"],
        module_src_sha256=hashlib.sha256(src.encode()).hexdigest(),
        init_args=tuple(_finish(state.get("_init_args") or ())),
        init_kwargs=dict(_finish(state.get("_init_kwargs") or {})),
        parameters={str(k): v for k, v in (state.get("_parameters") or {}).items()},
        buffers={str(k): v for k, v in (state.get("_buffers") or {}).items()},
        modules={str(k): _finish(v) for k, v in (state.get("_modules") or {}).items()},
        attributes={k: _finish(v) for k, v in state.items()
                    if not k.startswith("_") and k != "training"},
    )


def _finish(value: Any) -> Any:
    """Replace the unpickler's stand-ins by plain data, recursively."""
    if isinstance(value, _ContainerStub):
        return value.as_container()
    if isinstance(value, _DtypeWithState):
        return value.dtype
    if isinstance(value, dict):
        return {k: _finish(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finish(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_finish(v) for v in value)
    return value


# (module, name) -> what the reader builds in its place. Nothing else resolves.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.nn.modules.container", "ModuleDict"): _container_class("ModuleDict"),
    ("torch.nn.modules.container", "ModuleList"): _container_class("ModuleList"),
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _SafeDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise OfficialPickleError(
                f"{self.source}: refused global {module}.{name}: an official EDM/EDM2 network "
                f"pickle needs only {allowed}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise OfficialPickleError(f"{self.source}: a persistent id {pid!r}: official network "
                                  "pickles have none (a torch.save zip file is not one of them)")


def read_official_pickle(path: str | Path) -> Any:
    """The contents of an official EDM/EDM2 network pickle as plain data.

    Dicts stay dicts (EDM2's `EasyDict` becomes a plain dict),
    persistent objects become `PersistentObject`, tensors stay tensors (on the CPU, in the
    file's dtype). Raises `OfficialPickleError` for a refused global, a truncated or non-pickle
    file, or a storage that cannot be read with `weights_only=True`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OfficialPickleError(f"{path}: cannot read: {e.strerror or e}") from e
    if data[:2] == b"PK":
        raise OfficialPickleError(f"{path}: a zip file (torch.save), not an official network "
                                  "pickle: load it with torch.load(..., weights_only=True)")
    try:
        contents = _RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except OfficialPickleError:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        if isinstance(e, pickle.UnpicklingError) and "truncated" not in str(e):
            raise OfficialPickleError(f"{path}: not a readable network pickle "
                                      f"(UnpicklingError: {e})") from e
        raise OfficialPickleError(f"{path}: truncated ({len(data)} bytes): the file ends inside "
                                  "the pickle; download it again") from e
    except (ValueError, TypeError, KeyError, IndexError,
            AttributeError, RuntimeError) as e:
        raise OfficialPickleError(f"{path}: not a readable network pickle ({type(e).__name__}: "
                                  f"{e})") from e
    return _finish(contents)
