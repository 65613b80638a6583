"""Image normalisation for the hf-dataset source: decode once, drop corrupt images with a
reason, RGB, long side capped, decompression-bomb limit, re-encode once, store by content hash.

The expensive part (decode, resize, encode) is cached by the sha256 of the input bytes (or by
the resolved path for files), so a dataset with 200k rows and 5k distinct images decodes 5k
times. The declared size is checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from dualcurate.store import ImageStore

#: PIL's own default limit (``PIL.Image.MAX_IMAGE_PIXELS``): ~89.5 million pixels.
DEFAULT_MAX_PIXELS = 89_478_485


class ImageOptions(BaseModel):
    """``[source.images]``: how images are normalised before they are stored."""

    model_config = ConfigDict(extra="forbid")

    max_side: int = Field(2048, ge=16)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)
    png_compress_level: int = Field(6, ge=0, le=9)
    require_images: bool = False


@dataclass(frozen=True)
class ImageResult:
    """A stored image (``digest``) or why it was dropped (``reason`` code + ``message``)."""

    digest: str | None = None
    width: int = 0
    height: int = 0
    dhash: int | None = None
    #: The image's index in the near-duplicate image index (when near dedup is on).
    near_index: int | None = None
    reason: str | None = None
    message: str = ""


def dhash(image: PILImage.Image) -> int:
    """64-bit difference hash (9x8 grey thumbnail, left/right comparisons): near-identical
    images differ in few bits."""
    from PIL import Image

    small = image.convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    px = small.tobytes()
    bits = 0
    for row in range(8):
        base = row * 9
        for col in range(8):
            bits = (bits << 1) | (px[base + col] > px[base + col + 1])
    return bits


class ImageNormaliser:
    """Turns image inputs (bytes, ``{"bytes", "path"}`` dicts, paths, PIL images) into
    digests in an image store, with a per-input cache. ``stats`` counts work done."""

    def __init__(self, store: ImageStore, options: ImageOptions, want_dhash: bool = False,
                 near: Any = None):
        self.store = store
        self.options = options
        self.want_dhash = want_dhash
        #: A near-duplicate index with ``add_image(digest, image) -> int``: every image
        #: decoded is registered once, while its pixels are at hand.
        self.near = near
        self._cache: dict[bytes | str, ImageResult] = {}
        self.stats = {"inputs": 0, "decoded": 0, "cache_hits": 0, "stored": 0, "failed": 0}

    # inputs ----------------------------------------------------------------------------------
    def normalise(self, value: Any, base_dir: Path | None = None) -> ImageResult:
        """One image input to a stored image or a failure; never raises for bad data."""
        self.stats["inputs"] += 1
        key, data, failure = self._read(value, base_dir)
        if failure is not None:
            self.stats["failed"] += 1
            return failure
        cached = self._cache.get(key)
        if cached is not None:
            self.stats["cache_hits"] += 1
            if cached.reason:
                self.stats["failed"] += 1
            return cached
        if data is None:  # keyed by path: read now
            try:
                data = Path(key if isinstance(key, str) else "").read_bytes()
            except OSError as exc:
                result = ImageResult(reason="image_missing", message=f"{key}: {exc.strerror}")
                self._cache[key] = result
                self.stats["failed"] += 1
                return result
        result = self._decode(data if isinstance(data, bytes) else bytes(data))
        self._cache[key] = result
        if result.reason:
            self.stats["failed"] += 1
        return result

    def _read(self, value: Any, base_dir: Path | None
              ) -> tuple[bytes | str, bytes | None, ImageResult | None]:
        if isinstance(value, dict):
            data = value.get("bytes")
            if data:
                value = data
            elif value.get("path"):
                value = value["path"]
            else:
                return b"", None, ImageResult(reason="image_missing",
                                              message="image dict has neither bytes nor path")
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            if not data:
                return b"", None, ImageResult(reason="image_missing", message="empty bytes")
            return hashlib.sha256(data).digest(), data, None
        if isinstance(value, str | Path):
            path = Path(value).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            return str(path), None, None
        if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image
            raw = value.tobytes()
            key = hashlib.sha256(f"{value.mode}{value.size}".encode() + raw).digest()
            if key not in self._cache:
                buf = io.BytesIO()
                value.save(buf, format="PNG")
                return key, buf.getvalue(), None
            return key, b"", None
        return b"", None, ImageResult(
            reason="image_unsupported_input",
            message=f"image value of type {type(value).__name__}; give bytes, a path, a "
                    f"{{'bytes', 'path'}} dict or a PIL image")

    # decoding -------------------------------------------------------------------------------
    def _decode(self, data: bytes) -> ImageResult:
        from PIL import Image, ImageOps, UnidentifiedImageError

        self.stats["decoded"] += 1
        opts = self.options
        with warnings.catch_warnings():
            # We enforce our own limit from the header below; PIL's warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError as exc:
                return ImageResult(reason="image_too_large",
                                   message=f"{exc}; rejected from its header by PIL (limit "
                                           f"2 x PIL.Image.MAX_IMAGE_PIXELS)")
            except UnidentifiedImageError:
                return ImageResult(reason="image_not_an_image",
                                   message=f"{len(data)} bytes that no image decoder recognises")
            except Exception as exc:  # PIL raises many types for malformed headers
                return ImageResult(reason="image_corrupt", message=f"{type(exc).__name__}: {exc}")
            width, height = image.size
            if width <= 0 or height <= 0:
                return ImageResult(reason="image_corrupt", message=f"declares {width}x{height}")
            if width * height > opts.max_pixels:
                return ImageResult(
                    reason="image_too_large",
                    message=f"{width}x{height} pixels exceeds max_pixels={opts.max_pixels}; "
                            f"raise it in [source.images] or drop the sample")
            try:
                if image.format == "JPEG" and max(width, height) > opts.max_side:
                    image.draft("RGB", (opts.max_side, opts.max_side))  # decode at reduced scale
                image.load()
                image = ImageOps.exif_transpose(image) or image
                rgb = _to_rgb(image)
                if max(rgb.size) > opts.max_side:
                    rgb.thumbnail((opts.max_side, opts.max_side), Image.Resampling.LANCZOS)
                encoded = _encode(rgb, opts)
            except Image.DecompressionBombError as exc:
                return ImageResult(reason="image_too_large", message=str(exc))
            except Exception as exc:  # truncated data, bad chunks, decoder errors
                return ImageResult(reason="image_corrupt", message=f"{type(exc).__name__}: {exc}")
        digest = self.store.put(encoded)
        self.stats["stored"] += 1
        return ImageResult(digest=digest, width=rgb.width, height=rgb.height,
                           dhash=dhash(rgb) if self.want_dhash else None,
                           near_index=self.near.add_image(digest, rgb)
                           if self.near is not None else None)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def resolve_image_name(value: Any, folder: Path) -> Any:
    """An image value that names a file (an id such as ``17`` or ``"0017"``, or a relative
    name) as a path in ``folder``; a name without a suffix that is not a file gets the first
    common image suffix that is. Bytes, dicts and PIL images are returned unchanged."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return value
    name = str(value).strip()
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    path = folder / name
    if not path.suffix and not path.is_file():
        for suffix in IMAGE_SUFFIXES:
            candidate = path.with_name(path.name + suffix)
            if candidate.is_file():
                return candidate
    return path


def _to_rgb(image: PILImage.Image) -> PILImage.Image:
    from PIL import Image

    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


def _encode(image: PILImage.Image, opts: ImageOptions) -> bytes:
    buf = io.BytesIO()
    if opts.format == "jpeg":
        image.save(buf, format="JPEG", quality=opts.jpeg_quality)
    else:
        image.save(buf, format="PNG", compress_level=opts.png_compress_level)
    return buf.getvalue()
