"""The published EDM and EDM2 teachers the harness can import, by official file name (torch-free).

Download locations are the ones the official code uses: NVlabs/edm README.md
(`https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/`) and NVlabs/edm2 generate_images.py
(`model_root = 'https://nvlabs-fi-cdn.nvidia.com/edm2/posthoc-reconstructions'`, the presets'
post-hoc EMA snapshots). A harness network file imported from one is named after it
(`teachers/<stem>.pt`), so a missing one can say where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_EDM = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/"
_EDM2 = "https://nvlabs-fi-cdn.nvidia.com/edm2/posthoc-reconstructions/"


@dataclass(frozen=True)
class OfficialTeacher:
    """One published network file and the preset whose architecture it has."""

    file: str
    url: str
    preset: str | None  # the harness preset it drops into (None: none has its architecture)
    what: str


OFFICIAL_TEACHERS: dict[str, OfficialTeacher] = {t.file: t for t in (
    OfficialTeacher("edm-cifar10-32x32-uncond-vp.pkl", _EDM + "edm-cifar10-32x32-uncond-vp.pkl",
                    "ect-cifar10-l", "EDM DDPM++ (VP), unconditional CIFAR-10: ECT's teacher"),
    OfficialTeacher("edm-cifar10-32x32-cond-vp.pkl", _EDM + "edm-cifar10-32x32-cond-vp.pkl",
                    None, "EDM DDPM++ (VP), class-conditional CIFAR-10 (label_dim 10)"),
    OfficialTeacher("edm2-img64-s-1073741-0.075.pkl", _EDM2 + "edm2-img64-s-1073741-0.075.pkl",
                    "ect-imagenet64-s", "EDM2 img64-S, post-hoc EMA 0.075 (FID 1.58)"),
    OfficialTeacher("edm2-img64-m-2147483-0.060.pkl", _EDM2 + "edm2-img64-m-2147483-0.060.pkl",
                    "ect-imagenet64-m", "EDM2 img64-M, post-hoc EMA 0.060 (FID 1.43)"),
    OfficialTeacher("edm2-img64-l-1073741-0.040.pkl", _EDM2 + "edm2-img64-l-1073741-0.040.pkl",
                    "ect-imagenet64-l", "EDM2 img64-L, post-hoc EMA 0.040 (FID 1.33)"),
    OfficialTeacher("edm2-img64-xl-0671088-0.040.pkl", _EDM2 + "edm2-img64-xl-0671088-0.040.pkl",
                    "ect-imagenet64-xl", "EDM2 img64-XL, post-hoc EMA 0.040 (FID 1.33)"),
)}


def official_source(checkpoint: str | Path) -> OfficialTeacher | None:
    """The published file a harness network file named `<stem>.pt` is imported from, if any."""
    return OFFICIAL_TEACHERS.get(Path(checkpoint).stem + ".pkl")


class DownloadError(OSError):
    """A download that did not complete, with what to do."""


def download(url: str, dest: Path, *, progress: bool = True, chunk: int = 1 << 20,
             timeout_s: float = 60.0) -> Path:
    """Download `url` to `dest`, resuming a `<dest>.partial` left by an interrupted try.

    The bytes go to `<dest>.partial` and are renamed to `dest` only when the server's announced
    length is reached, so an interrupted download is never taken for a whole file; running again
    asks the server for the rest (HTTP Range) and starts over when it does not support that.
    `dest` itself is never overwritten. A progress line goes to stderr."""
    import sys
    import time
    import urllib.error
    import urllib.request

    dest = Path(dest)
    if not url.startswith(("https://", "http://")):
        raise DownloadError(f"{url}: only http:// and https:// addresses are downloaded")
    if dest.exists():
        raise DownloadError(f"{dest}: exists; a download never overwrites a file")
    partial = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is already whole
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError) as e:
        raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)}); the partial "
                            f"download {partial} is kept, run again to resume") from None
    if response is not None:
        with response:
            if have and response.status != 206:
                have = 0  # the server sent the whole file: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            start, done = time.monotonic(), have
            with partial.open("ab" if have else "wb") as f:
                while True:
                    try:
                        block = response.read(chunk)
                    except (OSError, TimeoutError) as e:
                        raise DownloadError(f"{url}: interrupted after {done:,} bytes ({e}); "
                                            f"run again to resume from {partial}") from None
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    if progress:
                        rate = (done - have) / max(time.monotonic() - start, 1e-6) / 1e6
                        pct = f"{100 * done / total:5.1f} % of {total / 1e6:,.1f} MB" if total \
                            else f"{done / 1e6:,.1f} MB"
                        print(f"\r{dest.name}: {pct} ({rate:.1f} MB/s)", end="",
                              file=sys.stderr, flush=True)
            if progress:
                print(file=sys.stderr)
            if total is not None and done != total:
                raise DownloadError(f"{url}: got {done:,} of {total:,} bytes; run again to "
                                    f"resume from {partial}")
    partial.rename(dest)
    return dest
