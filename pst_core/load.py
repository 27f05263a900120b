"""Reading and writing images: any common mode in, RGB float32 (3, H, W) in [0, 1] out."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from pst_core.errors import InputError

# We check the pixel count ourselves (load.max_pixels) and give a clear error instead.
Image.MAX_IMAGE_PIXELS = None


def read_image(path: str | os.PathLike, max_pixels: int = 100_000_000, role: str = "image") -> np.ndarray:
    """Decode ``path`` to RGB float32 (3, H, W) in [0, 1], honouring EXIF orientation.

    16-bit, palette, CMYK, grayscale and alpha images are converted (alpha is composited on white).
    Every failure is an ``InputError`` naming the file and what was wrong.
    """
    name = f"{role} {str(path)!r}"
    file = Path(path)
    if not file.exists():
        raise InputError(f"{name}: no such file")
    if file.is_dir():
        raise InputError(f"{name}: is a directory, not an image file")
    if not os.access(file, os.R_OK):
        raise InputError(f"{name}: cannot be read (permission denied)")
    try:
        with Image.open(file) as img:
            check_pixel_count(name, img.size[0], img.size[1], max_pixels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb_float(img)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name}: cannot be decoded ({' '.join(str(exc).split())})") from None


def check_pixel_count(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(f"{name}: {width}x{height} has more pixels than load.max_pixels={max_pixels}")


def _to_rgb_float(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        data = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or data.max() > 255 else 255.0
        gray = np.clip(data / peak, 0, 1).astype(np.float32)
        return np.repeat(gray[None], 3, axis=0)
    if img.mode == "F":
        gray = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
        return np.repeat(gray[None], 3, axis=0)
    if img.mode == "P" and "transparency" in img.info or img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def pixel_digest(pixels: np.ndarray) -> str:
    """What identifies a decoded image in a cache key: its pixels, not its file name or format."""
    data = np.ascontiguousarray(pixels, dtype=np.float32)
    digest = hashlib.sha256(f"{data.shape}".encode())
    digest.update(memoryview(data).cast("B"))
    return digest.hexdigest()


def working_shape(height: int, width: int, size: int) -> tuple[int, int]:
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, H, W) -> (C, h, w); antialiased bicubic, clipped to [0, 1] when it started there."""
    if image.shape[1:] == tuple(shape):
        return image.astype(np.float32, copy=True)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    out = F.interpolate(tensor, size=shape, mode="bicubic", antialias=True, align_corners=False)[0]
    return out.clamp(0, 1).numpy()


SOURCE_TAG = "pst:source"  # a PNG text chunk: the store entry an output image was written from


def check_output_image(path: str | os.PathLike, flag: str = "--out", formats: tuple[str, ...] | None = None) -> None:
    """Refuse, before any work, an output path whose extension names no image format we can write
    (``formats``: only these, e.g. ("PNG",) for a palette label image)."""
    suffix = Path(path).suffix.lower()
    image_format = Image.registered_extensions().get(suffix)
    writable = image_format in Image.SAVE and (formats is None or image_format in formats)
    if not writable:
        wanted = ", ".join(f".{f.lower()}" for f in formats) if formats else ".png, .jpg, .tif, .webp, ..."
        what = f"extension {suffix!r}" if suffix else "no file extension"
        raise InputError(f"{flag} {str(path)!r}: {what}; give an image file name ({wanted})")
    file = Path(path)
    if file.is_dir():
        raise InputError(f"{flag} {str(path)!r}: is a folder; give an image file name")
    for folder in file.parents:
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"{flag} {str(path)!r}: {str(folder)!r} is a file, not a folder")
            break


def save_image(path: str | os.PathLike, image: np.ndarray, source: str | None = None) -> None:
    """Write (3, H, W) float in [0, 1] as an 8-bit image (format from the suffix), atomically. A PNG
    records ``source`` (the store entry it shows), which ``image_source`` reads back."""
    file = Path(path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{file}: cannot make its folder ({exc.strerror or exc})") from exc
    pixels = (np.clip(image, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    tmp = file.with_name(f".{file.name}.tmp{os.getpid()}")
    image_format = Image.registered_extensions().get(file.suffix.lower(), "PNG")
    options = {}
    if source and image_format == "PNG":
        from PIL.PngImagePlugin import PngInfo

        options["pnginfo"] = PngInfo()
        options["pnginfo"].add_text(SOURCE_TAG, source)
    Image.fromarray(pixels).save(tmp, format=image_format, **options)
    os.replace(tmp, file)


def image_source(path: str | os.PathLike) -> str | None:
    """The store entry an output PNG was written from (``save_image``'s ``source``), if it says."""
    try:
        with Image.open(path) as img:
            return img.info.get(SOURCE_TAG)
    except (OSError, SyntaxError, ValueError):
        return None

