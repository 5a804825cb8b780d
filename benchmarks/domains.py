"""Synthetic non-digit image domains for few-label benchmarks, built procedurally (numpy + PIL and
the DejaVu fonts), so the benchmark can measure a training recipe on something other than digits
without downloading anything.

Every generator is pure and deterministic: ``generator(n, seed, size)`` draws everything from one
``np.random.default_rng(seed)``, so the same seed gives byte-identical arrays (on the same font
files), and returns ``(images, targets, class_names)``:

- ``images``: uint8 ``(n, size, size, 3)`` RGB,
- ``targets``: int64 ``(n,)``, balanced (``n // C`` per class; the ``n % C`` left over go one each to
  the first classes) and shuffled,
- ``class_names``: list of ``C`` names, ``class_names[target]``.

Domains (colour, size, position and orientation are drawn the same way for every class, so the class
is the form and never the colour):

- ``shapes`` (4): circle, square, triangle, star. Random shape and background colours (a fifth of the
  images with low contrast), equal-area sizes across classes, position, rotation, mild aspect
  change, filled or outlined, plain / gradient / textured background, blur and noise.
- ``letters`` (8): C E F G O P Q R, in confusable pairs (E/F, O/Q, P/R, C/G), each image in a random
  DejaVu font file (sans, serif, mono, condensed, bold, oblique, extra-light...), random size,
  rotation (+-30 degrees), shear, position, colours with a contrast floor (never low contrast nor
  blurred for the extra-light font), background clutter (lines, blobs) on part of the images.
- ``textures`` (6): stripes, checkerboard, dots, waves, blobs, grid; random scale, orientation,
  phase, stretch, two random colours (either may be the pattern), shading and noise.

and one domain of real photographs, the only one not drawn here (so not shaped by whoever tuned on
the others):

- ``photos`` (8): patches cut from eight of scikit-image's sample photographs (``skimage.data``,
  shipped inside its wheel: nothing is downloaded): astronaut, cat, coffee, rocket, tissue, grass,
  gravel, brick. Each patch is a random square of 15-35 % of the photo's shorter side, rotated
  (+-20 degrees), flipped, jittered in brightness, contrast and saturation, a fifth of them made
  grey, with pixel noise. Natural image statistics (photographic texture, edges, lighting) that no
  synthetic domain has; its colours are the photos' own, so colour is part of what tells the
  classes apart, as in a user's photographs. Pool and test patches come from the same photos, not
  from disjoint regions: it measures recognising a scene's material from a new view, not a new
  scene. Needs scikit-image (requirements-dev.txt).

and one drawn domain where, unlike the rest, colour is the class:

- ``colours`` (4): red, yellow, green, blue: one object of any of the four shapes (drawn as in
  ``shapes``) in a hue within 15 degrees of its class's, random saturation and brightness, on a
  greyish background of any hue. It measures what a representation that ignores colour costs.

``python -m benchmarks.domains`` times each domain and writes preview grids to ``docs/domains/``.
"""

from __future__ import annotations

import colorsys
import functools
import glob
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIR = "/usr/share/fonts/truetype/dejavu"
DEFAULT_SIZE = 64
SUPERSAMPLE = 2  # shapes, letters and clutter are drawn at 2x and box-filtered down (anti-aliasing)

SHAPE_CLASSES = ["circle", "square", "triangle", "star"]
LETTER_CLASSES = ["C", "E", "F", "G", "O", "P", "Q", "R"]
TEXTURE_CLASSES = ["stripes", "checkerboard", "dots", "waves", "blobs", "grid"]
# class name -> skimage.data function of the photograph its patches are cut from
PHOTO_SOURCES = {
    "astronaut": "astronaut",
    "cat": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "tissue": "immunohistochemistry",
    "grass": "grass",
    "gravel": "gravel",
    "brick": "brick",
}
PHOTO_CLASSES = list(PHOTO_SOURCES)

DomainResult = tuple[np.ndarray, np.ndarray, list[str]]


# ------------------------------------------------------------------------------------------ helpers


def balanced_targets(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``n // C`` of every class (the remainder one each to the first classes), shuffled."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    counts = np.full(num_classes, n // num_classes)
    counts[: n % num_classes] += 1
    return rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), counts))


def _check_size(size: int) -> None:
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")


def contrast_pairs(
    rng: np.random.Generator, m: int, low_fraction: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) float32 (m, 3): uniform random RGB colours, rejected until their
    Euclidean distance is 45-85 (low contrast, with probability low_fraction) or >= 110."""
    low = rng.random(m) < low_fraction
    lo, hi = np.where(low, 45.0, 110.0), np.where(low, 85.0, np.inf)
    fg, bg = np.empty((m, 3), np.float32), np.empty((m, 3), np.float32)
    todo = np.arange(m)
    while len(todo):
        a = rng.integers(0, 256, size=(len(todo), 3)).astype(np.float32)
        b = rng.integers(0, 256, size=(len(todo), 3)).astype(np.float32)
        d = np.linalg.norm(a - b, axis=1)
        ok = (d >= lo[todo]) & (d <= hi[todo])
        fg[todo[ok]], bg[todo[ok]] = a[ok], b[ok]
        todo = todo[~ok]
    return fg, bg


def _near(rng: np.random.Generator, colour: np.ndarray, spread: float) -> np.ndarray:
    return np.clip(colour + rng.uniform(-spread, spread, size=3), 0, 255).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates relative to the image centre, (size, size) each, in pixels."""
    c = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    return np.broadcast_to(c[None, :], (size, size)), np.broadcast_to(c[:, None], (size, size))


def _ramp(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear 0..1 ramp across the image along a random direction, (size, size)."""
    x, y = _coords(size)
    a = rng.uniform(0, 2 * math.pi)
    r = (x * math.cos(a) + y * math.sin(a)) / (size * 0.71) + 0.5
    return np.clip(r, 0.0, 1.0)


def _value_noise(rng: np.random.Generator, n: int, size: int, cells: np.ndarray) -> np.ndarray:
    """Smooth random fields (n, size, size) in about [0, 1]: value noise on a per-image grid of
    ``cells[i]`` cells across the image, smoothstep-interpolated."""
    cmax = int(np.max(cells)) + 2
    grid = rng.random((n, cmax, cmax), dtype=np.float32)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size  # (size,)
    pos = t[None, :] * cells[:, None].astype(np.float32)  # (n, size): grid coordinates
    i0 = np.floor(pos).astype(np.int64)
    f = pos - i0
    f = f * f * (3 - 2 * f)
    rows = np.arange(n)[:, None, None]
    iy, ix = i0[:, :, None], i0[:, None, :]
    fy, fx = f[:, :, None], f[:, None, :]
    top = grid[rows, iy, ix] * (1 - fx) + grid[rows, iy, ix + 1] * fx
    bottom = grid[rows, iy + 1, ix] * (1 - fx) + grid[rows, iy + 1, ix + 1] * fx
    return top * (1 - fy) + bottom * fy


def _background(
    rng: np.random.Generator, size: int, colour: np.ndarray, textured: float, gradient: float
) -> np.ndarray:
    """(size, size, 3) float32: plain ``colour``, a gradient from it to a nearby colour, or a
    smooth-noise / faint-stripe texture between it and a nearby colour."""
    u = rng.random()
    if u < textured:
        other = _near(rng, colour, 70.0)
        if rng.random() < 0.6:
            field = _value_noise(rng, 1, size, rng.integers(2, 9, size=1))[0]
        else:
            x, y = _coords(size)
            a = rng.uniform(0, math.pi)
            period = rng.uniform(4.0, 12.0) * size / 64
            field = 0.5 + 0.5 * np.sin(
                (x * math.cos(a) + y * math.sin(a)) * (2 * math.pi / period) + rng.uniform(0, 2 * math.pi)
            )
        return colour + field[..., None] * (other - colour)
    if u < textured + gradient:
        other = _near(rng, colour, 90.0)
        return colour + _ramp(rng, size)[..., None] * (other - colour)
    return np.broadcast_to(colour, (size, size, 3)).astype(np.float32)


def _finish(
    rng: np.random.Generator, image: np.ndarray, blur_p: float, max_blur: float, max_noise: float
) -> np.ndarray:
    """Optional Gaussian blur, then Gaussian pixel noise; returns uint8."""
    out = np.clip(image, 0, 255)
    if rng.random() < blur_p:
        radius = rng.uniform(0.4, max_blur) * out.shape[0] / 64
        out = np.asarray(
            Image.fromarray(out.astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32
        )
    sigma = rng.uniform(0.0, max_noise)
    if sigma > 0.5:
        out = out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _mask_from(canvas: Image.Image) -> np.ndarray:
    """A supersampled 'L' drawing -> (size, size) float32 coverage in [0, 1]."""
    return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0


# ------------------------------------------------------------------------------------------ shapes


@functools.lru_cache(maxsize=4)
def _regular_polygon(kind: int) -> np.ndarray:
    k, start = {0: (64, 0.0), 1: (4, math.pi / 4), 2: (3, -math.pi / 2)}[kind]
    a = start + np.arange(k) * 2 * math.pi / k
    pts = np.stack([np.cos(a), np.sin(a)], 1)
    return pts / math.sqrt(0.5 * k * math.sin(2 * math.pi / k))  # unit area


def _unit_polygon(kind: int, rng: np.random.Generator) -> np.ndarray:
    """Vertices (k, 2) of a class's shape (circle, square, triangle, star) with unit area, centred."""
    if kind < 3:
        return _regular_polygon(kind)
    inner = rng.uniform(0.38, 0.5)  # five-pointed star, random inner radius
    a = -np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
    pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    return pts / math.sqrt(5 * inner * math.sin(math.pi / 5))


def _shape_mask(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    """Coverage (size, size, 1) in [0, 1] of one shape of ``kind`` (an index of SHAPE_CLASSES):
    equal-area random size, mild aspect change, rotation, position (up to 15 % cut off at an
    edge), filled or, for 15 %, outlined."""
    s, big = size / 64.0, size * SUPERSAMPLE
    pts = _unit_polygon(kind, rng)
    r_eq = rng.uniform(7.0, 15.5) * s  # radius of the circle with the same area
    aspect = math.exp(rng.uniform(-0.15, 0.15))
    pts = pts * (r_eq * math.sqrt(math.pi)) * np.array([aspect, 1 / aspect])
    angle = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    pts = pts @ rot.T
    reach = np.abs(pts).max(0)
    lo, hi = reach * 0.85, size - reach * 0.85  # may be cut off by up to 15 % at an edge
    centre = np.array([rng.uniform(lo[k], hi[k]) if hi[k] > lo[k] else size / 2 for k in (0, 1)])
    xy = [tuple(p) for p in ((pts + centre) * SUPERSAMPLE)]

    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if rng.random() < 0.15:  # outline only
        draw.polygon(xy, outline=255, width=int(round(rng.uniform(2.0, 4.0) * s * SUPERSAMPLE)))
    else:
        draw.polygon(xy, fill=255)
    return _mask_from(canvas)[..., None]


def generate_shapes(n: int, seed: int = 0, size: int = DEFAULT_SIZE) -> DomainResult:
    """4 classes (circle, square, triangle, star) of ``size`` x ``size`` RGB images with random
    shape / background colours (sometimes low contrast), equal-area random size, position, rotation,
    aspect, fill or outline, plain / gradient / textured background, blur and noise."""
    _check_size(size)
    rng = np.random.default_rng(seed)
    targets = balanced_targets(n, len(SHAPE_CLASSES), rng)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    fgs, bgs = contrast_pairs(rng, n, low_fraction=0.2)
    for i, kind in enumerate(targets):
        fg, bg = fgs[i], bgs[i]
        image = _background(rng, size, bg, textured=0.3, gradient=0.3)
        mask = _shape_mask(rng, int(kind), size)
        if rng.random() < 0.3:  # gradient fill
            fill = fg + _ramp(rng, size)[..., None] * (_near(rng, fg, 70.0) - fg)
        else:
            fill = fg
        image = image * (1 - mask) + fill * mask
        images[i] = _finish(rng, image, blur_p=0.25, max_blur=1.2, max_noise=12.0)
    return images, targets, list(SHAPE_CLASSES)


# ------------------------------------------------------------------------------------------ letters


def font_files(font_dir: str | None = None) -> list[str]:
    """The .ttf files in ``font_dir`` (default: the DejaVu folder), sorted."""
    folder = font_dir or FONT_DIR
    files = sorted(glob.glob(os.path.join(folder, "*.ttf")))
    if not files:
        raise FileNotFoundError(
            f"no .ttf font found in {folder}; the letters domain needs the DejaVu fonts "
            "(Debian/Ubuntu package fonts-dejavu-core / fonts-dejavu-extra)"
        )
    return files


GLYPH_FONT_SIZE = 96


@functools.lru_cache(maxsize=1024)
def _glyph(path: str, letter: str) -> tuple[Image.Image, float, tuple[float, float], float]:
    """A letter rendered large in one font: (mask 'L' cropped to the ink, cap height of 'H' in the
    font, ink centre inside the mask, ink half-diagonal), all in mask pixels."""
    font = ImageFont.truetype(path, GLYPH_FONT_SIZE)
    canvas_size = GLYPH_FONT_SIZE * 2

    def render(ch: str) -> Image.Image:
        canvas = Image.new("L", (canvas_size, canvas_size), 0)
        ImageDraw.Draw(canvas).text((GLYPH_FONT_SIZE // 2, GLYPH_FONT_SIZE // 4), ch, font=font, fill=255)
        return canvas

    h_box = render("H").getbbox()
    canvas = render(letter)
    box = canvas.getbbox()
    if h_box is None or box is None:
        raise ValueError(f"font {path} has no glyph for {letter!r}")
    cap = float(h_box[3] - h_box[1])
    pad = 4
    crop = canvas.crop((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad))
    w, h = box[2] - box[0], box[3] - box[1]
    return crop, cap, (crop.width / 2.0, crop.height / 2.0), 0.5 * math.hypot(w, h)


@functools.lru_cache(maxsize=256)
def _stroke_weight(path: str) -> float:
    """Ink of the font's 'H' over its cap height squared: ~0.15 extra-light, ~0.3 book, ~0.45 bold."""
    glyph, cap, _, _ = _glyph(path, "H")
    return float(np.asarray(glyph, dtype=np.float32).sum() / 255.0 / cap**2)


THIN_STROKE = 0.2  # fonts lighter than this get neither low contrast nor blur (they would vanish)


def _draw_clutter(rng: np.random.Generator, image: np.ndarray, avoid: np.ndarray) -> np.ndarray:
    """Random lines and blobs under the letter, in colours kept away from the letter's colour."""
    size = image.shape[0]
    big = size * SUPERSAMPLE
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    canvas = canvas.resize((big, big), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 5))):
        for _ in range(20):
            colour = rng.integers(0, 256, size=3).astype(np.float32)
            if np.linalg.norm(colour - avoid) >= 90:
                break
        fill = tuple(int(c) for c in colour)
        if rng.random() < 0.55:
            p = rng.uniform(-0.1, 1.1, size=4) * big
            width = int(round(rng.uniform(1.0, 3.0) * SUPERSAMPLE * size / 64))
            draw.line([(p[0], p[1]), (p[2], p[3])], fill=fill, width=max(width, 1))
        else:
            c = rng.uniform(0, big, size=2)
            r = rng.uniform(3.0, 12.0, size=2) * SUPERSAMPLE * size / 64
            draw.ellipse([c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1]], fill=fill)
    return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32)


def generate_letters(
    n: int, seed: int = 0, size: int = DEFAULT_SIZE, font_dir: str | None = None
) -> DomainResult:
    """8 letter classes (C E F G O P Q R) in a random DejaVu font file per image, random size,
    rotation (+-30 degrees), shear, position, foreground / background colours with a contrast floor,
    gradient backgrounds and clutter (lines, blobs) on part of the images, blur and noise."""
    _check_size(size)
    fonts = font_files(font_dir)
    rng = np.random.default_rng(seed)
    targets = balanced_targets(n, len(LETTER_CLASSES), rng)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    big = size * SUPERSAMPLE
    font_index = rng.integers(len(fonts), size=n)
    thin = np.array([_stroke_weight(f) < THIN_STROKE for f in fonts], dtype=bool)[font_index]
    fgs, bgs = contrast_pairs(rng, n, low_fraction=np.where(thin, 0.0, 0.15))
    for i, kind in enumerate(targets):
        path = fonts[int(font_index[i])]
        glyph, cap, (gx, gy), half_diag = _glyph(path, LETTER_CLASSES[int(kind)])
        fg, bg = fgs[i], bgs[i]
        image = _background(rng, size, bg, textured=0.15, gradient=0.35)
        if rng.random() < 0.45:
            image = _draw_clutter(rng, image, avoid=fg)

        cap_out = rng.uniform(0.34, 0.62) * size  # cap height in output pixels
        scale = cap_out * SUPERSAMPLE / cap  # mask pixels -> supersampled output pixels
        angle = math.radians(rng.uniform(-30.0, 30.0))
        shear = rng.uniform(-0.15, 0.15)
        stretch = math.exp(rng.uniform(-0.12, 0.12))
        reach = half_diag * scale / SUPERSAMPLE * 0.92
        lo, hi = reach, size - reach
        px, py = (rng.uniform(lo, hi) if hi > lo else size / 2 for _ in range(2))
        # Output (supersampled) pixel -> glyph-mask pixel: inverse of scale . stretch . shear . rotate.
        c, s_ = math.cos(angle), math.sin(angle)
        forward = (
            np.array([[c, -s_], [s_, c]])
            @ np.array([[1.0, shear], [0.0, 1.0]])
            @ np.diag([stretch, 1 / stretch])
            * scale
        )
        inv = np.linalg.inv(forward)
        ox, oy = px * SUPERSAMPLE, py * SUPERSAMPLE
        a, b, d, e = inv[0, 0], inv[0, 1], inv[1, 0], inv[1, 1]
        coeffs = (a, b, gx - a * ox - b * oy, d, e, gy - d * ox - e * oy)
        canvas = glyph.transform(
            (big, big), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR
        )
        mask = _mask_from(canvas)[..., None]

        fill = fg + _ramp(rng, size)[..., None] * (_near(rng, fg, 60.0) - fg) if rng.random() < 0.25 else fg
        image = image * (1 - mask) + fill * mask
        images[i] = _finish(rng, image, blur_p=0.0 if thin[i] else 0.2, max_blur=1.0, max_noise=10.0)
    return images, targets, list(LETTER_CLASSES)


# ------------------------------------------------------------------------------------------ textures


def _soft(signed_distance: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """Coverage from a signed distance in pixels (> 0 inside), with an edge ``edge`` pixels wide."""
    return np.clip(signed_distance / edge + 0.5, 0.0, 1.0)


def _col(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32)[:, None, None]


def _frame(rng: np.random.Generator, m: int, size: int, periods: tuple[float, float]):
    """Random rotated, stretched coordinates (u, v) and pattern period / phases / edge softness for
    m images; periods in pixels at 64 px (log-uniform)."""
    s = size / 64.0
    x, y = _coords(size)
    theta = _col(rng.uniform(0, math.pi, m))
    stretch = _col(np.exp(rng.uniform(-0.2, 0.2, m)))
    period = _col(np.exp(rng.uniform(math.log(periods[0]), math.log(periods[1]), m)) * s)
    phase_u, phase_v = _col(rng.random(m)), _col(rng.random(m))
    edge = _col(rng.uniform(0.7, 1.8, m) * s)
    u = (x * np.cos(theta) + y * np.sin(theta)) * stretch
    v = (-x * np.sin(theta) + y * np.cos(theta)) / stretch
    return dict(
        x=x,
        y=y,
        theta=theta,
        stretch=stretch,
        period=period,
        phase_u=phase_u,
        phase_v=phase_v,
        edge=edge,
        u=u,
        v=v,
    )


def _bands(coord: np.ndarray, period: np.ndarray, phase: np.ndarray, width_fraction) -> np.ndarray:
    """Signed distance (pixels, > 0 inside) to the edges of parallel bands of a width fraction."""
    t = np.mod(coord / period + phase, 1.0)
    return (width_fraction / 2 - np.abs(t - 0.5)) * period


def _stripes(rng, m, size):
    f = _frame(rng, m, size, (7.0, 20.0))
    return _soft(_bands(f["u"], f["period"], f["phase_u"], _col(rng.uniform(0.3, 0.6, m))), f["edge"])


def _checkerboard(rng, m, size):
    f = _frame(rng, m, size, (10.0, 26.0))  # cells of 5-13 px
    su = np.clip(_bands(f["u"], f["period"], f["phase_u"], 0.5) / f["edge"], -1, 1)
    sv = np.clip(_bands(f["v"], f["period"], f["phase_v"], 0.5) / f["edge"], -1, 1)
    return 0.5 + 0.5 * su * sv


def _dots(rng, m, size):
    f = _frame(rng, m, size, (8.0, 20.0))
    u, v, period = f["u"], f["v"], f["period"]
    hexagonal = _col(rng.random(m) < 0.5)
    row = np.floor(v / period + f["phase_v"])
    shift = hexagonal * 0.5 * np.mod(row, 2)
    du = (np.mod(u / period + f["phase_u"] + shift, 1.0) - 0.5) * period
    dv = (np.mod(v / period + f["phase_v"], 1.0) - 0.5) * period
    radius = _col(rng.uniform(0.17, 0.33, m)) * period
    return _soft(radius - np.sqrt(du * du + dv * dv), f["edge"])


def _waves(rng, m, size):
    f = _frame(rng, m, size, (7.0, 16.0))
    amplitude = _col(rng.uniform(0.35, 0.8, m)) * f["period"]
    wave_len = _col(rng.uniform(2.0, 3.5, m)) * f["period"]
    wave_phase = _col(rng.uniform(0, 2 * math.pi, m))
    bent = f["u"] + amplitude * np.sin(f["v"] / wave_len * (2 * math.pi) + wave_phase)
    return _soft(_bands(bent, f["period"], f["phase_u"], _col(rng.uniform(0.3, 0.6, m))), f["edge"])


def _blobs(rng, m, size):
    cells = rng.integers(3, 8, m)
    noise = _value_noise(rng, m, size, cells) * 0.75 + _value_noise(rng, m, size, cells * 2 + 1) * 0.25
    coverage = rng.uniform(0.35, 0.6, m)
    ordered = np.sort(noise.reshape(m, -1), axis=1)
    thresh = ordered[np.arange(m), ((1 - coverage) * (size * size - 1)).astype(np.int64)]
    sharpness = _col(rng.uniform(12.0, 30.0, m))  # edge width scales with the image, like the blobs
    return np.clip((noise - _col(thresh)) * sharpness + 0.5, 0, 1)


def _grid(rng, m, size):
    f = _frame(rng, m, size, (8.0, 18.0))
    x, y, period, stretch = f["x"], f["y"], f["period"], f["stretch"]
    width = _col(rng.uniform(1.6, 3.2, m)) * (size / 64.0)
    theta2 = f["theta"] + _col(rng.uniform(math.radians(60), math.radians(90), m))
    w2 = (x * np.cos(theta2) + y * np.sin(theta2)) * stretch
    edge = f["edge"] * 0.6
    lines1 = _soft(width / 2 - np.abs(np.mod(f["u"] / period + f["phase_u"], 1.0) - 0.5) * period, edge)
    lines2 = _soft(width / 2 - np.abs(np.mod(w2 / period + f["phase_v"], 1.0) - 0.5) * period, edge)
    return np.maximum(lines1, lines2)


_TEXTURES = (_stripes, _checkerboard, _dots, _waves, _blobs, _grid)  # order of TEXTURE_CLASSES


def _texture_patterns(rng: np.random.Generator, kinds: np.ndarray, size: int) -> np.ndarray:
    """Pattern coverage in [0, 1], (n, size, size), one random texture of class kinds[i] each."""
    out = np.empty((len(kinds), size, size), dtype=np.float32)
    for k, make in enumerate(_TEXTURES):
        idx = np.flatnonzero(kinds == k)
        if len(idx):
            out[idx] = make(rng, len(idx), size)
    return out


def generate_textures(n: int, seed: int = 0, size: int = DEFAULT_SIZE, chunk: int = 256) -> DomainResult:
    """6 texture classes (stripes, checkerboard, dots, waves, blobs, grid) with random scale,
    orientation, phase, stretch, edge softness, two random colours (either one the pattern),
    optional colour gradient and shading, and pixel noise."""
    _check_size(size)
    rng = np.random.default_rng(seed)
    targets = balanced_targets(n, len(TEXTURE_CLASSES), rng)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    x, y = _coords(size)
    for start in range(0, n, chunk):
        kinds = targets[start : start + chunk]
        m = len(kinds)
        pattern = _texture_patterns(rng, kinds, size)[..., None]
        fg, bg = contrast_pairs(rng, m, low_fraction=0.2)
        # a second foreground colour along a random direction (half of the images)
        fg2 = np.clip(fg + rng.uniform(-80, 80, (m, 3)) * (rng.random((m, 1)) < 0.5), 0, 255).astype(
            np.float32
        )
        a = rng.uniform(0, 2 * math.pi, m).astype(np.float32)[:, None, None]
        ramp = np.clip((x * np.cos(a) + y * np.sin(a)) / (size * 0.71) + 0.5, 0, 1)[..., None]
        fg_field = fg[:, None, None, :] + ramp * (fg2 - fg)[:, None, None, :]
        image = bg[:, None, None, :] + pattern * (fg_field - bg[:, None, None, :])
        # shading: a brightness ramp on half of the images
        b = rng.uniform(0, 2 * math.pi, m).astype(np.float32)[:, None, None]
        gain = rng.uniform(0.0, 0.35, m).astype(np.float32)[:, None, None] * (rng.random((m, 1, 1)) < 0.5)
        shade = 1.0 + gain * ((x * np.cos(b) + y * np.sin(b)) / (size * 0.71))
        image = image * shade[..., None]
        # pixel noise, weaker on low-contrast images (thin lines and small dots must stay visible)
        contrast = np.minimum(np.linalg.norm(fg - bg, axis=1) / 110.0, 1.0)
        sigma = (rng.uniform(0.0, 12.0, m) * contrast**2).astype(np.float32)[:, None, None, None]
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * sigma
        images[start : start + m] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return images, targets, list(TEXTURE_CLASSES)


# ------------------------------------------------------------------------------------------ photos


@functools.cache
def _photo(name: str) -> Image.Image:
    """An RGB PIL image of ``skimage.data.<name>()`` (grey photographs repeated on 3 channels)."""
    try:
        import skimage.data
    except ImportError as exc:  # a development dependency, not a runtime one
        raise ImportError(
            "the photos domain needs scikit-image: pip install -r "
            "requirements-dev.txt (scripts/python.sh installs it)"
        ) from exc
    array = np.asarray(getattr(skimage.data, name)())
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8), mode="RGB")


PHOTO_PATCH_SIDE = (0.15, 0.35)  # patch side as a fraction of the photo's shorter side
PHOTO_MAX_ROTATION = 20.0  # degrees either way
PHOTO_GREY_FRACTION = 0.2


def _photo_patch(rng: np.random.Generator, photo: Image.Image, size: int) -> np.ndarray:
    """One random rotated square patch of ``photo``, resized to ``size``, as float32 RGB."""
    width, height = photo.size
    side = rng.uniform(*PHOTO_PATCH_SIDE) * min(width, height)
    angle = rng.uniform(-PHOTO_MAX_ROTATION, PHOTO_MAX_ROTATION)
    reach = side * math.sqrt(2) / 2  # half the diagonal: a rotated square stays inside the photo
    cx, cy = rng.uniform(reach, width - reach), rng.uniform(reach, height - reach)
    left, top = int(round(cx - reach)), int(round(cy - reach))
    right, bottom = int(round(cx + reach)), int(round(cy + reach))
    region = photo.crop((left, top, right, bottom)).rotate(angle, resample=Image.Resampling.BILINEAR)
    inner = (region.width - side) / 2
    patch = region.crop(
        (int(round(inner)), int(round(inner)), int(round(inner + side)), int(round(inner + side)))
    ).resize((size, size), Image.Resampling.LANCZOS)
    out = np.asarray(patch, dtype=np.float32)
    return out[:, ::-1] if rng.random() < 0.5 else out


def generate_photos(n: int, seed: int = 0, size: int = DEFAULT_SIZE) -> DomainResult:
    """8 classes of patches cut from scikit-image's sample photographs (``PHOTO_SOURCES``), with
    random position, size, rotation, flip, brightness, contrast and saturation, a fifth grey, and
    pixel noise."""
    _check_size(size)
    rng = np.random.default_rng(seed)
    targets = balanced_targets(n, len(PHOTO_CLASSES), rng)
    photos = [_photo(PHOTO_SOURCES[name]) for name in PHOTO_CLASSES]
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, target in enumerate(targets):
        patch = _photo_patch(rng, photos[target], size)
        grey = patch.mean(axis=2, keepdims=True)
        saturation = 0.0 if rng.random() < PHOTO_GREY_FRACTION else rng.uniform(0.6, 1.4)
        patch = grey + saturation * (patch - grey)
        patch = (patch - patch.mean()) * rng.uniform(0.75, 1.25) + patch.mean() * rng.uniform(0.75, 1.25)
        patch = patch + rng.standard_normal(patch.shape, dtype=np.float32) * rng.uniform(0.0, 6.0)
        images[i] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    return images, targets, list(PHOTO_CLASSES)


# ------------------------------------------------------------------------------------------ colours


COLOUR_CLASSES = ["red", "yellow", "green", "blue"]
# Each class's hue as a fraction of the colour wheel, and how far an image's hue may stray from
# it either way (1/24: 15 degrees, so neighbouring classes, 60 degrees or more apart, never meet).
COLOUR_HUES = (0.0, 1 / 6, 1 / 3, 0.61)
COLOUR_HUE_SPREAD = 1 / 24


def generate_colours(n: int, seed: int = 0, size: int = DEFAULT_SIZE) -> DomainResult:
    """4 classes (red, yellow, green, blue) told apart by the colour of the one object in the image
    and by nothing else: its shape is any of the four of ``shapes`` (the same draw: size, position,
    rotation, outline), its hue within 15 degrees of its class's, saturation and brightness
    random; the background is a greyish colour of any hue (saturation at most 0.25), plain,
    gradient or textured, with blur and noise. The one domain here where colour is the class, as
    in ripe / unripe fruit or a signal's state."""
    _check_size(size)
    rng = np.random.default_rng(seed)
    targets = balanced_targets(n, len(COLOUR_CLASSES), rng)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, target in enumerate(targets):
        hue = (COLOUR_HUES[target] + rng.uniform(-COLOUR_HUE_SPREAD, COLOUR_HUE_SPREAD)) % 1.0
        fg = (
            np.array(
                colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)), dtype=np.float32
            )
            * 255
        )
        bg = (
            np.array(
                colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.1, 0.95)),
                dtype=np.float32,
            )
            * 255
        )
        image = _background(rng, size, bg, textured=0.3, gradient=0.3)
        mask = _shape_mask(rng, int(rng.integers(len(SHAPE_CLASSES))), size)
        image = image * (1 - mask) + fg * mask
        images[i] = _finish(rng, image, blur_p=0.25, max_blur=1.2, max_noise=12.0)
    return images, targets, list(COLOUR_CLASSES)


# ------------------------------------------------------------------------------------------ registry


DOMAINS: dict[str, Callable[..., DomainResult]] = {
    "shapes": generate_shapes,
    "letters": generate_letters,
    "textures": generate_textures,
    "photos": generate_photos,
    "colours": generate_colours,
}


def load_domain(name: str, n: int, seed: int = 0, size: int = DEFAULT_SIZE) -> DomainResult:
    """``(images uint8 (n, size, size, 3), targets int64 (n,), class_names)`` of a named domain."""
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; choose one of {tuple(DOMAINS)}")
    return DOMAINS[name](n, seed=seed, size=size)


# ------------------------------------------------------------------------------------------ previews


PREVIEW_LABEL_WIDTH, PREVIEW_GAP = 96, 2


def _tile_boxes(rows: int, cols: int, size: int) -> list[tuple[int, int, int, int]]:
    step = size + PREVIEW_GAP
    return [
        (PREVIEW_LABEL_WIDTH + j * step, r * step, PREVIEW_LABEL_WIDTH + j * step + size, r * step + size)
        for r in range(rows)
        for j in range(cols)
    ]


def preview_grid(
    name: str, seed: int = 0, size: int = DEFAULT_SIZE, rows: int = 8, cols: int = 8
) -> Image.Image:
    """A rows x cols grid of samples, row r showing class r % C, its name on the left."""
    images, targets, names = load_domain(name, rows * cols * 3, seed=seed, size=size)
    step = size + PREVIEW_GAP
    grid = Image.new("RGB", (PREVIEW_LABEL_WIDTH + cols * step, rows * step), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font_path = next((f for f in font_files() if os.path.basename(f) == "DejaVuSans.ttf"), font_files()[0])
    font = ImageFont.truetype(font_path, 13)
    taken = {c: 0 for c in range(len(names))}
    boxes = _tile_boxes(rows, cols, size)
    for r in range(rows):
        c = r % len(names)
        idx = np.flatnonzero(targets == c)[taken[c] : taken[c] + cols]
        taken[c] += cols
        draw.text((4, r * step + size // 2), names[c], font=font, fill=(0, 0, 0), anchor="lm")
        for j, k in enumerate(idx):
            grid.paste(Image.fromarray(images[k]), boxes[r * cols + j][:2])
    return grid


def _kmeans_colours(pixels: np.ndarray, k: int, iters: int = 8) -> np.ndarray:
    """k representative colours of (m, 3) pixels: farthest-point start, a few Lloyd steps."""
    start = [pixels[np.argmin(((pixels - pixels.mean(0)) ** 2).sum(1))]]
    for _ in range(k - 1):
        dist = np.min([((pixels - c) ** 2).sum(1) for c in start], axis=0)
        start.append(pixels[np.argmax(dist)])
    centres = np.array(start, dtype=np.float32)
    for _ in range(iters):
        label = ((pixels[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            if (label == j).any():
                centres[j] = pixels[label == j].mean(0)
    return centres


def _palette_image(
    grid: Image.Image, boxes: list[tuple[int, int, int, int]], shared: int = 64, per_tile: int = 3
) -> Image.Image:
    """The grid as a 256-colour 'P' image: ``shared`` colours for the whole grid plus ``per_tile``
    colours of each tile's own (so a small shape or a low-contrast pattern keeps its colours).
    Noisy samples then fit in a small PNG."""
    if shared + per_tile * len(boxes) > 256:
        raise ValueError("too many tiles for one 256-colour palette")
    pixels = np.asarray(grid, dtype=np.float32)
    q = grid.quantize(colors=shared, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    quantized_palette = q.getpalette()
    assert quantized_palette is not None  # quantize() returns a mode "P" image: it has a palette
    common: np.ndarray = np.array(quantized_palette[: 3 * shared], dtype=np.float32).reshape(-1, 3)
    common = np.concatenate([common, np.zeros((shared - len(common), 3), np.float32)])
    index = np.asarray(q, dtype=np.uint8).copy()
    palette = [common]
    for t, (x0, y0, x1, y1) in enumerate(boxes):
        tile = pixels[y0:y1, x0:x1].reshape(-1, 3)
        own = _kmeans_colours(tile, per_tile)
        label = ((tile[:, None] - np.concatenate([common, own])[None]) ** 2).sum(-1).argmin(1)
        label = np.where(label >= shared, label + t * per_tile, label)
        index[y0:y1, x0:x1] = label.reshape(y1 - y0, x1 - x0)
        palette.append(own)
    out = Image.fromarray(index, mode="P")
    out.putpalette(np.clip(np.rint(np.concatenate(palette)), 0, 255).astype(np.uint8).ravel().tolist())
    return out


def save_previews(out_dir: str | Path, seed: int = 0, rows: int = 8, cols: int = 8) -> list[Path]:
    """<out_dir>/<name>.png: a rows x cols preview grid of every domain (about 50-80 KB each)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in DOMAINS:
        path = out_dir / f"{name}.png"
        grid = preview_grid(name, seed=seed, rows=rows, cols=cols)
        _palette_image(grid, _tile_boxes(rows, cols, DEFAULT_SIZE)).save(path, optimize=True)
        paths.append(path)
    return paths


def main() -> None:  # pragma: no cover - a convenience for humans
    import argparse

    p = argparse.ArgumentParser(description="time the synthetic domains and write preview grids")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--previews", default=str(Path(__file__).resolve().parents[1] / "docs" / "domains"))
    args = p.parse_args()
    for name in DOMAINS:
        started = time.perf_counter()
        images, targets, names = load_domain(name, args.n, seed=0)
        print(
            f"{name}: {len(images)} images {images.shape[1:]} in {time.perf_counter() - started:.2f} s; "
            f"classes {names}"
        )
    for path in save_previews(args.previews):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":  # pragma: no cover
    main()
