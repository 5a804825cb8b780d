"""Image decoding of untrusted bytes, colour modes, tensors and augmentation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from model import ImageError, ModelConfig, images_to_tensor, load_image_bytes, to_rgb_image
from model.data import augment_batch, images_to_uint8, model_ready_array, scaled_crop_padding


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "mode,value",
    [("L", 128), ("1", 1), ("RGB", (10, 20, 30)), ("CMYK", (0, 0, 0, 0)), ("I", 40000), ("F", 0.5)],
)
def test_every_mode_becomes_rgb(mode, value):
    rgb = to_rgb_image(Image.new(mode, (5, 4), value))
    assert rgb.mode == "RGB" and rgb.size == (5, 4)


def test_16_bit_images_are_scaled_not_clipped():
    img = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))  # mid grey in 16 bit
    assert img.mode.startswith("I;16")
    pixel = to_rgb_image(img).getpixel((0, 0))
    assert pixel == (128, 128, 128)


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    assert to_rgb_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (2, 2), (0, 255))
    assert to_rgb_image(la).getpixel((0, 0)) == (0, 0, 0)
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 255, 0] * 256)
    assert to_rgb_image(palette).getpixel((0, 0)) == (0, 255, 0)


def test_animated_image_gives_its_first_frame():
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    img = load_image_bytes(data, max_pixels=100)
    r, g, b = img.getpixel((0, 0))
    assert r > 200 and b < 50


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP", "TIFF"])
def test_load_image_bytes_decodes_common_formats(fmt):
    img = load_image_bytes(encode(Image.new("RGB", (6, 3), (200, 100, 50)), fmt), max_pixels=1000)
    assert img.mode == "RGB" and img.size == (6, 3)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (6, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    loaded = load_image_bytes(encode(img, "JPEG", exif=exif), max_pixels=1000)
    assert loaded.size == (3, 6)


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty"),
        (b"hello, not an image", "not a recognised image"),
        (encode(Image.new("RGB", (64, 64), (1, 2, 3)))[:60], "truncated|corrupt|header"),
    ],
)
def test_load_image_bytes_rejects_bad_input(data, match):
    with pytest.raises(ImageError, match=match):
        load_image_bytes(data, max_pixels=10_000)
    assert issubclass(ImageError, ValueError)


def test_decompression_bomb_is_rejected_from_the_header():
    data = encode(Image.new("1", (5000, 5000)))  # a few KB that would decode to 25 Mpx
    assert len(data) < 100_000
    with pytest.raises(ImageError, match="too large"):
        load_image_bytes(data, max_pixels=1_000_000)


def test_tensor_shape_dtype_and_normalisation():
    cfg = ModelConfig(image_size=12, input_norm="dataset")
    images = [Image.new("RGB", (30, 20), (255, 255, 255)), Image.new("L", (5, 5), 0)]
    x = images_to_tensor(images, cfg)
    assert x.shape == (2, 3, 12, 12) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones_like(x[0])) and torch.allclose(x[1], -torch.ones_like(x[1]))
    gray = ModelConfig(image_size=12, channels=1, mean=(0.5,), std=(0.5,))
    assert images_to_tensor(images, gray).shape == (2, 1, 12, 12)
    assert images_to_tensor([], cfg).shape == (0, 3, 12, 12)


def test_augmentation_crops_with_scaled_padding_and_flips_only_when_asked():
    cfg = ModelConfig(image_size=64, hflip=False)
    assert scaled_crop_padding(cfg) == 8
    batch = torch.arange(64, dtype=torch.uint8).repeat(4, 3, 64, 1)  # columns 0..63
    generator = torch.Generator().manual_seed(0)
    out = augment_batch(batch, cfg, generator)
    assert out.shape == batch.shape
    # Without flips every non-padded row keeps increasing left to right.
    for image in out:
        row = image[0, 32].to(torch.int64)
        inside = row[row > 0]
        assert torch.all(inside[1:] >= inside[:-1])
    flipped = augment_batch(
        batch, ModelConfig(image_size=64, hflip=True, crop_padding=0), torch.Generator().manual_seed(1)
    )
    assert any(torch.equal(img, batch[0].flip(-1)) for img in flipped)


def test_augmentation_is_reproducible_under_a_seed():
    cfg = ModelConfig(image_size=16, hflip=True)
    images = [
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8))
        for i in range(4)
    ]
    first = images_to_tensor(images, cfg, train=True, generator=torch.Generator().manual_seed(5))
    second = images_to_tensor(images, cfg, train=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    assert not torch.equal(first, images_to_tensor(images, cfg))


def test_uint8_cache_matches_resize():
    cfg = ModelConfig(image_size=4)
    cached = images_to_uint8([Image.new("RGB", (8, 8), (9, 8, 7))], cfg)
    assert cached.dtype == torch.uint8 and cached[0, :, 0, 0].tolist() == [9, 8, 7]


@pytest.mark.parametrize("channels", [3, 1])
def test_ready_arrays_stack_exactly_like_the_images_they_were_made_from(channels):
    """A model-ready array kept from an earlier pass is the same input as decoding again."""
    rng = np.random.default_rng(3)
    images = [
        Image.fromarray(rng.integers(0, 255, (37, 23, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8), mode="L"),
        Image.new("RGBA", (40, 40), (200, 10, 10, 64)),
    ]
    cfg = ModelConfig(image_size=16, channels=channels, mean=(0.5,) * channels, std=(0.5,) * channels)
    arrays = [model_ready_array(img, 16, channels) for img in images]
    assert all(a.shape == (16, 16, channels) and a.dtype == np.uint8 for a in arrays)
    from_images = images_to_uint8(images, cfg)
    assert torch.equal(images_to_uint8(arrays, cfg), from_images)
    assert torch.equal(images_to_uint8([arrays[0], images[1], arrays[2]], cfg), from_images)
    read_only = arrays[0].copy()
    read_only.flags.writeable = False  # e.g. an array read from a cache file
    assert torch.equal(images_to_uint8([read_only], cfg)[0], from_images[0])


def test_a_ready_array_of_another_size_is_refused():
    cfg = ModelConfig(image_size=16)
    with pytest.raises(ValueError, match="uint8 of shape"):
        images_to_uint8([np.zeros((8, 8, 3), np.uint8)], cfg)
    with pytest.raises(ValueError, match="uint8 of shape"):
        images_to_uint8([np.zeros((16, 16, 3), np.float32)], cfg)


def test_per_image_standardisation_removes_brightness_and_contrast():
    """The default input_norm: an image and a dimmer, lower-contrast copy give the same input."""
    cfg = ModelConfig(image_size=8)
    assert cfg.input_norm == "per_image"
    rng = np.random.default_rng(0)
    bright = rng.integers(0, 256, size=(8, 8, 3)).astype(np.float64)
    dim = 40 + 0.5 * bright
    x = images_to_tensor(
        [Image.fromarray(bright.astype(np.uint8)), Image.fromarray(np.rint(dim).astype(np.uint8))], cfg
    )
    assert torch.allclose(x[0].mean(), torch.tensor(0.0), atol=1e-5)
    assert torch.allclose(x[0].std(unbiased=False), torch.tensor(1.0), atol=1e-4)
    assert torch.allclose(x[0], x[1], atol=0.05)
    # a flat image is not blown up to unit variance
    flat = images_to_tensor([Image.new("RGB", (8, 8), (90, 90, 90))], cfg)
    assert torch.count_nonzero(flat) == 0
