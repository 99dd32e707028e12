"""Importing official EDM network pickles: nothing in them runs, the network comes out equal.

The fixtures are written in the official files' structure without the official code: objects that
pickle as `torch_utils.persistence._reconstruct_persistent_obj(meta)`, with a `module_src` that
would create a marker file if anything executed it, modules held in `torch.nn.ModuleDict`, tensors
as torch pickles them (storages through `torch.storage._load_from_bytes`). The comparison with the
official code itself is `scripts/check_official_networks.py` (it needs a checkout of NVlabs/edm).
"""

from __future__ import annotations

import copyreg
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harness.cli.main import main as harness_main
from harness.config.presets import get_preset
from harness.config.run_config import NetworkConfig
from harness.networks.precond import Precond
from harness.teachers.convert import TeacherImportError, import_teacher, load_teacher, read_teacher
from harness.teachers.official_pickle import (
    ALLOWED_GLOBALS,
    OfficialPickleError,
    PersistentObject,
    read_official_pickle,
)


def _install_module(monkeypatch: pytest.MonkeyPatch, package: str, module: str,
                    name: str, obj: Any) -> None:
    """`package.module.name` = `obj`, importable (and so picklable by reference) in this test."""
    obj.__module__, obj.__qualname__ = f"{package}.{module}", name
    inner = types.ModuleType(f"{package}.{module}")
    setattr(inner, name, obj)
    outer = types.ModuleType(package)
    setattr(outer, module, inner)
    monkeypatch.setitem(sys.modules, package, outer)
    monkeypatch.setitem(sys.modules, f"{package}.{module}", inner)


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `torch_utils.persistence` module for pickling fixtures; the marker file appears if
    anything ever reconstructs an object by running its module source."""

    def _reconstruct_persistent_obj(meta: dict[str, Any]) -> None:
        exec(meta["module_src"], {})  # what the official loader does: never reached here

    _install_module(monkeypatch, "torch_utils", "persistence", "_reconstruct_persistent_obj",
                    _reconstruct_persistent_obj)
    return tmp_path / "EXECUTED"


class _Persistent:
    """Pickles as the official persistence decorator makes objects pickle."""

    def __init__(self, class_name: str, state: dict[str, Any], marker: Path) -> None:
        self.meta = {"type": "class", "version": 6, "class_name": class_name, "state": state,
                     "module_src": f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"}

    def __reduce__(self) -> tuple[Any, ...]:
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))


class _ModuleDict:
    """Pickles as a `torch.nn.ModuleDict` of persistent modules does."""

    def __init__(self, modules: dict[str, Any]) -> None:
        self.state = {"training": False, "_parameters": OrderedDict(), "_buffers": OrderedDict(),
                      "_modules": OrderedDict(modules)}

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # pickle checks that NEWOBJ's class is the object's
        return torch.nn.ModuleDict

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (copyreg.__newobj__, (torch.nn.ModuleDict,), self.state)


def _module_state(params: dict[str, torch.Tensor], modules: dict[str, Any],
                  buffers: dict[str, torch.Tensor | None] | None = None,
                  init_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"training": False,
            "_parameters": OrderedDict((k, torch.nn.Parameter(v, requires_grad=False))
                                       for k, v in params.items()),
            "_buffers": OrderedDict(buffers or {}), "_non_persistent_buffers_set": set(),
            "_modules": OrderedDict(modules), "_forward_hooks": OrderedDict(),
            "_init_args": (), "_init_kwargs": init_kwargs or {}}


def _official_names(net: Precond, cfg: NetworkConfig, augment_dim: int) -> dict[str, torch.Tensor]:
    """SongUNet's tensors by their official names, from the project's network: the inverse of the
    import (halves of the embedding swapped back, qkv interleaved per channel, output layers
    under the decoder's aux names), plus what only the official network has."""
    res = f"{cfg.img_resolution}x{cfg.img_resolution}"
    out: dict[str, torch.Tensor] = {}
    for name, tensor in net.unet.state_dict().items():
        tensor = tensor.clone()
        if name == "emb_noise.freqs":
            continue  # SongUNet computes them in forward
        if name == "emb_layer0.weight":
            half = tensor.shape[1] // 2
            tensor = torch.cat([tensor[:, half:], tensor[:, :half]], dim=1)
        if name.startswith("emb_label."):
            half = tensor.shape[0] // 2
            tensor = torch.cat([tensor[half:], tensor[:half]], dim=0)
        if ".qkv." in name:
            c = tensor.shape[0] // 3
            tensor = tensor.reshape(3, c, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
        for ours, official in (("emb_noise.", "map_noise."), ("emb_label.", "map_label."),
                               ("emb_layer0.", "map_layer0."), ("emb_layer1.", "map_layer1."),
                               ("out_norm.", f"dec.{res}_aux_norm."),
                               ("out_conv.", f"dec.{res}_aux_conv.")):
            if name.startswith(ours):
                name = official + name[len(ours):]
        out[name] = tensor
    if augment_dim:
        out["map_augment.weight"] = torch.randn(cfg.model_channels, augment_dim)
    return out


def _nest(tensors: dict[str, torch.Tensor], marker: Path, dtype: torch.dtype) -> dict[str, Any]:
    """Nested module states from dotted names (enc/dec as ModuleDicts, layers persistent)."""
    tree: dict[str, Any] = {}
    for name, tensor in tensors.items():
        *path, leaf = name.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = tensor.to(dtype)

    def build(name: str, node: dict[str, Any]) -> Any:
        params = {k: v for k, v in node.items() if isinstance(v, torch.Tensor)}
        children = {k: build(k, v) for k, v in node.items() if isinstance(v, dict)}
        if name in ("enc", "dec"):
            return _ModuleDict(children)
        buffers: dict[str, torch.Tensor | None] = {}
        if name in ("conv0", "skip"):  # EDM registers its resampling filter on every Conv2d
            buffers["resample_filter"] = torch.tensor([[[[0.25, 0.25], [0.25, 0.25]]]])
        return _Persistent("Conv2d" if "weight" in params and params["weight"].dim() == 4
                           else "Layer", _module_state(params, children, buffers), marker)

    return {k: build(k, v) for k, v in tree.items()}


def write_official_file(path: Path, cfg: NetworkConfig, marker: Path, *, precond: str =
                        "EDMPrecond", augment_dim: int = 9, dtype: torch.dtype = torch.float32,
                        seed: int = 0) -> Precond:
    """An official-structure EDM network pickle of `cfg`'s DDPM++ network with random weights;
    returns the project's network with the same weights."""
    torch.manual_seed(seed)
    net = Precond(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tensors = _official_names(net, cfg, augment_dim)
    children = _nest(tensors, marker, dtype)
    model_kwargs = {"model_type": "SongUNet", "embedding_type": "positional",
                    "encoder_type": "standard", "decoder_type": "standard",
                    "channel_mult_noise": 1, "resample_filter": [1, 1],
                    "model_channels": cfg.model_channels, "channel_mult": list(cfg.channel_mult),
                    "num_blocks": cfg.num_blocks, "attn_resolutions": list(cfg.attn_resolutions),
                    "dropout": np.float64(0.13), "augment_dim": augment_dim}
    params = {k: v for k, v in children.items() if isinstance(v, torch.Tensor)}
    model_state = _module_state(params, {k: v for k, v in children.items()
                                         if not isinstance(v, torch.Tensor)},
                                init_kwargs={"img_resolution": cfg.img_resolution,
                                             "in_channels": cfg.img_channels,
                                             "out_channels": cfg.img_channels,
                                             "label_dim": cfg.label_dim, **model_kwargs})
    model = _Persistent("SongUNet", model_state, marker)
    top_kwargs = {"img_resolution": cfg.img_resolution, "img_channels": cfg.img_channels,
                  "label_dim": cfg.label_dim, "use_fp16": False, **model_kwargs}
    wrapper = _Persistent(precond, _module_state({}, {"model": model}, init_kwargs=top_kwargs),
                          marker)
    loss_fn = _Persistent("EDMLoss", {"P_mean": -1.2, "P_std": 1.2, "sigma_data": 0.5}, marker)
    with path.open("wb") as f:
        pickle.dump({"ema": wrapper, "loss_fn": loss_fn, "augment_pipe": None,
                     "dataset_kwargs": {"class_name": "training.dataset.ImageFolderDataset",
                                        "resolution": cfg.img_resolution}}, f)
    return net


@pytest.fixture
def dnnlib_util(monkeypatch: pytest.MonkeyPatch) -> type:
    """A `dnnlib.util` with EDM2's `EasyDict`, for pickling an EDM2-style file."""

    class EasyDict(dict):
        pass

    _install_module(monkeypatch, "dnnlib", "util", "EasyDict", EasyDict)
    return EasyDict


def write_official_edm2_file(path: Path, cfg: NetworkConfig, marker: Path, easydict: type, *,
                             encoder: str = "StandardRGBEncoder", seed: int = 0) -> Precond:
    """An EDM2-structure network pickle (an EasyDict with `encoder`, `dataset_kwargs`,
    `loss_fn` and the `ema` Precond in float16, its UNet's names as the project's, plus the
    log-variance head) of `cfg`'s mp network; returns the project's network with the same
    (float16-rounded) weights."""
    torch.manual_seed(seed)
    net = Precond(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for t in net.state_dict().values():  # EDM2 stores the whole module, buffers too, in fp16
            t.copy_(t.half().float())
    tensors = {k: v.clone() for k, v in net.state_dict().items()}
    tensors["logvar_fourier.freqs"] = torch.randn(128)
    tensors["logvar_fourier.phases"] = torch.rand(128)
    tensors["logvar_linear.weight"] = torch.randn(1, 128)
    children = _nest(tensors, marker, torch.float16)
    unet_kwargs = {"img_resolution": cfg.img_resolution, "img_channels": cfg.img_channels,
                   "label_dim": cfg.label_dim, "model_channels": cfg.model_channels,
                   "channel_mult": list(cfg.channel_mult), "num_blocks": cfg.num_blocks,
                   "attn_resolutions": list(cfg.attn_resolutions),
                   "channels_per_head": cfg.channels_per_head, "dropout": cfg.dropout}
    unet = children.pop("unet")
    unet.meta["class_name"] = "UNet"
    unet.meta["state"]["_init_kwargs"] = unet_kwargs
    wrapper = _Persistent("Precond", _module_state({}, {"unet": unet, **children}, init_kwargs={
        "img_resolution": cfg.img_resolution, "img_channels": cfg.img_channels,
        "label_dim": cfg.label_dim, "use_fp16": True, "model_channels": cfg.model_channels,
        "dropout": cfg.dropout}), marker)
    data = easydict(encoder=_Persistent(encoder, {}, marker),
                    dataset_kwargs=easydict(resolution=cfg.img_resolution),
                    loss_fn=_Persistent("EDM2Loss", {"P_mean": -0.8, "P_std": 1.6}, marker))
    data["ema"] = wrapper
    with path.open("wb") as f:
        pickle.dump(data, f)
    return net


SMALL = NetworkConfig(family="ddpmpp", img_resolution=16, img_channels=3, model_channels=16,
                      channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.13)
SMALL_WIDE_STEM = NetworkConfig(family="ddpmpp", img_resolution=16, img_channels=3, label_dim=10,
                                model_channels=16, channel_mult=(2, 2), num_blocks=2,
                                attn_resolutions=(16,), dropout=0.13)


def _compare(ours: torch.nn.Module, net: Precond, cfg: NetworkConfig) -> float:
    torch.manual_seed(1)
    x = torch.randn(4, cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
    sigma = torch.tensor([0.002, 0.3, 2.0, 80.0])
    labels = (torch.nn.functional.one_hot(torch.arange(4) % cfg.label_dim, cfg.label_dim).float()
              if cfg.label_dim else None)
    with torch.no_grad():
        a, b = ours(x, sigma, labels), net(x, sigma, labels)
    return float((a - b).abs().max() / b.pow(2).mean().sqrt())


@pytest.mark.parametrize("cfg", [SMALL, SMALL_WIDE_STEM], ids=["uncond", "cond-wide-stem"])
def test_an_official_file_imports_to_the_same_network_and_runs_nothing(
        cfg: NetworkConfig, tmp_path: Path, marker: Path) -> None:
    src, dst = tmp_path / "network-snapshot.pkl", tmp_path / "teacher.pt"
    net = write_official_file(src, cfg, marker)
    report = import_teacher(src, dst)
    assert not marker.exists()
    assert report.network.architecture() == cfg.architecture()
    assert report.official_class == "EDMPrecond(SongUNet)"
    assert any(d.startswith("map_augment.weight:") for d in report.dropped)
    assert report.other_entries == ("augment_pipe", "dataset_kwargs", "loss_fn")
    assert report.num_parameters == sum(p.numel() for p in net.parameters())
    assert _compare(load_teacher(dst), net, cfg) <= 1e-6
    pickle.loads(src.read_bytes())  # the ordinary way runs the file's module source
    assert marker.exists()


def test_a_float16_file_imports_in_float32(tmp_path: Path, marker: Path) -> None:
    src, dst = tmp_path / "fp16.pkl", tmp_path / "teacher.pt"
    net = write_official_file(src, SMALL, marker, dtype=torch.float16)
    import_teacher(src, dst)
    ours = load_teacher(dst)
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    # The file holds the weights rounded to float16: the same network up to that rounding.
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.half().float())
    assert _compare(ours, net, SMALL) <= 1e-5


def test_a_vp_file_is_put_under_edm_preconditioning_and_says_so(
        tmp_path: Path, marker: Path) -> None:
    src, dst = tmp_path / "edm-cifar10-32x32-uncond-vp.pkl", tmp_path / "teacher.pt"
    net = write_official_file(src, SMALL, marker, precond="VPPrecond")
    report = import_teacher(src, dst)
    assert report.official_class == "VPPrecond(SongUNet)"
    assert any("EDM's preconditioning" in n for n in report.notes)
    assert _compare(load_teacher(dst), net, SMALL) <= 1e-6


def test_the_cifar10_ddpmpp_preset_is_edms_network() -> None:
    """EDM's DDPM++ CIFAR-10 network (NVlabs/edm: SongUNet, 128 channels, [2, 2, 2], 4 blocks,
    attention at 16x16, augment_dim 9) has 55,733,891 parameters, 1,152 of them the augmentation
    mapping that sampling never uses (measured with the official code)."""
    cfg = get_preset("ect-cifar10-l").network
    assert sum(p.numel() for p in Precond(cfg).parameters()) == 55_733_891 - 1_152
    assert Precond(cfg).state_dict()["unet.enc.32x32_conv.weight"].shape == (128, 3, 3, 3)


def test_the_import_drops_into_its_preset(tmp_path: Path, marker: Path) -> None:
    """An imported teacher of a preset's architecture passes the check tuning runs make."""
    import dataclasses

    from harness.config.run_config import RunConfig
    from harness.training.start import load_init_network

    cfg = get_preset("ect-cifar10-tiny").network
    src, dst = tmp_path / "tiny.pkl", tmp_path / "tiny.pt"
    write_official_file(src, dataclasses.replace(cfg, dropout=0.13), marker)
    import_teacher(src, dst)
    run = RunConfig(network=cfg, init_checkpoint=str(dst))
    assert set(load_init_network(run, tmp_path)["ema"]) == set(Precond(cfg).state_dict())


def test_refused_globals_are_named(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("ran",))

    path.write_bytes(pickle.dumps({"ema": Evil()}))
    with pytest.raises(OfficialPickleError, match=r"refused global builtins\.print"):
        read_official_pickle(path)
    for module, _ in ALLOWED_GLOBALS:  # nothing that could run code is allowed
        assert module.startswith(("torch", "collections", "dnnlib", "numpy"))


def test_a_numpy_object_scalar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "np.pkl"
    path.write_bytes(pickle.dumps({"x": np.array([object()], dtype=object)}))
    with pytest.raises(OfficialPickleError, match="refused global"):
        read_official_pickle(path)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path: Path, marker: Path) -> None:
    src = tmp_path / "net.pkl"
    write_official_file(src, SMALL, marker)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(OfficialPickleError, match="truncated"):
        read_official_pickle(cut)
    zipped = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, zipped)
    with pytest.raises(OfficialPickleError, match="zip file"):
        read_official_pickle(zipped)
    with pytest.raises(TeacherImportError, match=r"no entry 'ema_0\.1'.*--ema"):
        import_teacher(src, tmp_path / "x.pt", ema="ema_0.1")
    assert not marker.exists()


def test_unsupported_networks_are_refused_with_the_reason(tmp_path: Path, marker: Path) -> None:
    src = tmp_path / "ncsn.pkl"
    write_official_file(src, SMALL, marker)
    contents = read_official_pickle(src)
    model = contents["ema"].modules["model"]
    assert isinstance(model, PersistentObject) and model.class_name == "SongUNet"
    from harness.teachers.convert import convert_official

    ncsn = dict(contents)
    ncsn["ema"] = PersistentObject(
        class_name="EDMPrecond", module_src_sha256="", init_kwargs={},
        modules={"model": PersistentObject(
            class_name="SongUNet", module_src_sha256="",
            init_kwargs={**model.init_kwargs, "embedding_type": "fourier"})})
    with pytest.raises(TeacherImportError, match="embedding_type = 'fourier'"):
        convert_official(ncsn)
    edm2 = {"ema": PersistentObject(class_name="Precond", module_src_sha256="")}
    with pytest.raises(TeacherImportError, match="EDM2 Precond wraps NoneType, not UNet"):
        convert_official(edm2)
    other = {"ema": PersistentObject(class_name="DhariwalUNet", module_src_sha256="")}
    with pytest.raises(TeacherImportError, match="'DhariwalUNet': supported are"):
        convert_official(other)


def test_the_command_never_overwrites_and_prints_what_it_did(
        tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "net.pkl", tmp_path / "out" / "teacher.pt"
    write_official_file(src, SMALL, marker)
    assert harness_main(["import-teacher", str(src), "--out", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "EDMPrecond(SongUNet) -> ddpmpp U-Net" in out and "not carried over: map_augment" in out
    before = dst.read_bytes()
    assert harness_main(["import-teacher", str(src), "--out", str(dst)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert dst.read_bytes() == before
    payload = read_teacher(dst)
    assert payload["source"]["file"] == "net.pkl" and len(payload["source"]["sha256"]) == 64
    assert not marker.exists()


EDM2_SMALL = NetworkConfig(family="mp", img_resolution=16, img_channels=3, label_dim=10,
                           model_channels=16, channel_mult=(1, 2, 3, 4), num_blocks=3,
                           attn_resolutions=(8, 4), channels_per_head=8, dropout=0.0)


def test_an_edm2_file_imports_to_the_same_network(tmp_path: Path, marker: Path,
                                                  dnnlib_util: type) -> None:
    src, dst = tmp_path / "edm2-img16-test-0000001-0.100.pkl", tmp_path / "edm2.pt"
    net = write_official_edm2_file(src, EDM2_SMALL, marker, dnnlib_util)
    report = import_teacher(src, dst)
    assert not marker.exists()
    assert report.official_class == "Precond(UNet) [EDM2]"
    assert report.network.architecture() == EDM2_SMALL.architecture()
    assert [d.split(":")[0] for d in report.dropped] == ["logvar_fourier", "logvar_linear"]
    assert any("float16" in n for n in report.notes)
    assert report.other_entries == ("dataset_kwargs", "encoder", "loss_fn")
    assert _compare(load_teacher(dst), net, EDM2_SMALL) <= 1e-6


def test_edm2_latent_models_are_refused(tmp_path: Path, marker: Path, dnnlib_util: type) -> None:
    src = tmp_path / "edm2-img512-xs.pkl"
    write_official_edm2_file(src, EDM2_SMALL, marker, dnnlib_util, encoder="StabilityVAEEncoder")
    with pytest.raises(TeacherImportError, match=r"StabilityVAEEncoder.*latent"):
        import_teacher(src, tmp_path / "x.pt")


def test_the_imagenet64_presets_are_edm2s_networks() -> None:
    """EDM2 img64 S/M/L/XL (NVlabs/edm2 train_edm2.py: 192/256/320/384 channels, 1000 classes)
    have 280,209,381 / 497,803,173 / 777,492,325 / 1,119,276,837 parameters, 128 of them the
    log-variance head (measured with the official code)."""
    from harness.cost.flops import measure_network_cost

    official = {"s": 280_209_381, "m": 497_803_173, "l": 777_492_325, "xl": 1_119_276_837}
    for size, count in official.items():
        cfg = get_preset(f"ect-imagenet64-{size}").network
        assert measure_network_cost(cfg).params == count - 128, size


class _RangeHandler:
    """A file server on 127.0.0.1 that honours HTTP Range and can cut a response short."""

    @staticmethod
    def serve(payload: bytes, cut_first_at: int | None = None) -> tuple[Any, list[str | None]]:
        import http.server
        import threading

        ranges: list[str | None] = []
        state = {"cut": cut_first_at}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asked = self.headers.get("Range")
                ranges.append(asked)
                start = int(asked.split("=")[1].split("-")[0]) if asked else 0
                body = payload[start:]
                self.send_response(206 if asked else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if state["cut"] is not None:  # announce everything, send a part, hang up
                    self.wfile.write(body[: state["cut"]])
                    state["cut"] = None
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, ranges


def test_fetch_teacher_resumes_an_interrupted_download_and_imports(
        tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixture = tmp_path / "fixture.pkl"
    net = write_official_file(fixture, SMALL, marker, precond="VPPrecond")
    payload = fixture.read_bytes()
    server, ranges = _RangeHandler.serve(payload, cut_first_at=len(payload) // 3)
    url = f"http://127.0.0.1:{server.server_address[1]}/edm-cifar10-32x32-uncond-vp.pkl"
    teachers = tmp_path / "teachers"
    try:
        argv = ["fetch-teacher", "edm-cifar10-32x32-uncond-vp.pkl", "--url", url,
                "--download-dir", str(teachers), "--out", str(teachers / "small.pt")]
        assert harness_main(argv) == 2  # the connection dropped after a third
        assert "run again to resume" in capsys.readouterr().err
        partial = teachers / "edm-cifar10-32x32-uncond-vp.pkl.partial"
        assert partial.stat().st_size == len(payload) // 3
        assert not (teachers / "edm-cifar10-32x32-uncond-vp.pkl").exists()
        assert harness_main(argv) == 0
    finally:
        server.shutdown()
    assert ranges == [None, f"bytes={len(payload) // 3}-"]
    assert (teachers / "edm-cifar10-32x32-uncond-vp.pkl").read_bytes() == payload
    assert "VPPrecond(SongUNet) -> ddpmpp U-Net" in capsys.readouterr().out
    assert _compare(load_teacher(teachers / "small.pt"), net, SMALL) <= 1e-6
    assert not marker.exists()


def test_fetch_teacher_refuses_unknown_names_and_other_schemes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert harness_main(["fetch-teacher", "edm-mystery.pkl"]) == 2
    assert "edm2-img64-s-1073741-0.075.pkl" in capsys.readouterr().err
    assert harness_main(["fetch-teacher", "x.pkl", "--url", "file:///etc/passwd",
                         "--download-dir", str(tmp_path)]) == 2
    assert "only http:// and https://" in capsys.readouterr().err


def test_a_missing_official_teacher_says_where_it_comes_from(tmp_path: Path) -> None:
    """planning a sweep whose teacher file is missing names the file, the official file it is
    imported from and the commands, before anything is submitted."""
    from harness.planning.plan import plan
    from harness.planning.sweep import load_sweep

    fake = tmp_path / "cifar" / "cifar-10-batches-py"
    fake.mkdir(parents=True)
    for i in range(1, 6):
        (fake / f"data_batch_{i}").write_bytes(b"\x80\x04")
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(
        'name = "t"\n[grid]\npreset = ["ect-cifar10-l"]\nbudget_nimg = [1000]\n'
        f'[base]\n"data.path" = "{fake.parent}"\n'
        '[pretrain]\ncheckpoint = "teachers/edm-cifar10-32x32-uncond-vp.pt"\n')
    (missing,) = plan(load_sweep(sweep_file), tmp_path, tmp_path).missing
    text = "\n".join([missing.text(), *missing.provide])
    assert "teachers/edm-cifar10-32x32-uncond-vp.pt" in text and "does not exist" in text
    assert "edm-cifar10-32x32-uncond-vp.pkl" in text and "nvlabs-fi-cdn" in text
    assert "harness fetch-teacher edm-cifar10-32x32-uncond-vp.pkl" in text
    assert "harness import-teacher edm-cifar10-32x32-uncond-vp.pkl" in text
