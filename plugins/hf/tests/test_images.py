"""Image normalisation: decode once, drop broken images with a reason, RGB, cap, bomb limit."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from dualcurate.store import ImageStore
from dualcurate_hf.images import ImageNormaliser, ImageOptions, dhash
from dualcurate_hf.sample_data import NOT_AN_IMAGE, bomb_png, image_bytes, truncated_jpeg


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def stored(store: ImageStore, digest: str | None) -> Image.Image:
    assert digest is not None
    image = store.open(digest)
    image.load()
    return image


@pytest.mark.parametrize(("data", "reason"), [
    (bomb_png(), "image_too_large"),
    (truncated_jpeg(), "image_corrupt"),
    (NOT_AN_IMAGE, "image_not_an_image"),
    (b"", "image_missing"),
    (image_bytes(1)[:20], "image_corrupt"),
])
def test_broken_images_dropped_with_reason(store: ImageStore, data: bytes, reason: str) -> None:
    result = ImageNormaliser(store, ImageOptions()).normalise(data)
    assert result.digest is None
    assert result.reason == reason
    assert result.message
    assert not list(store.root.rglob("*")) or all(p.is_dir() for p in store.root.rglob("*"))


def test_our_pixel_limit_is_checked_from_the_header(store: ImageStore) -> None:
    big = image_bytes(3, size=(300, 200))
    result = ImageNormaliser(store, ImageOptions(max_pixels=50_000)).normalise(big)
    assert result.reason == "image_too_large"
    assert "300x200" in result.message and "max_pixels=50000" in result.message
    ok = ImageNormaliser(store, ImageOptions(max_pixels=60_000)).normalise(big)
    assert ok.digest is not None


def test_bomb_is_rejected_with_bounded_memory(tmp_path: Path) -> None:
    """In a child limited to 400 MiB of address space the 200-megapixel PNG is refused from its
    header; decoding it would need 600 MB (and would fail with MemoryError: image_corrupt)."""
    script = textwrap.dedent("""
        import hashlib, resource, sys
        from dualcurate_hf.images import ImageNormaliser, ImageOptions
        from dualcurate_hf.sample_data import bomb_png
        import PIL.PngImagePlugin
        class Store:
            def put(self, data): return hashlib.sha256(data).hexdigest()
        limit = 400 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        result = ImageNormaliser(Store(), ImageOptions()).normalise(bomb_png())
        # VmHWM (not ru_maxrss, which keeps the forking parent's peak across exec)
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        print(result.reason, int(status.split()[0]) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    reason, peak_mb = out.stdout.split()
    assert reason == "image_too_large"
    assert int(peak_mb) < 150


def test_rgb_cap_and_reencode(store: ImageStore) -> None:
    norm = ImageNormaliser(store, ImageOptions(max_side=64))
    rgba = Image.new("RGBA", (200, 100), (255, 0, 0, 0))  # fully transparent red
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    result = norm.normalise(buf.getvalue())
    image = stored(store, result.digest)
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.size == (64, 32) == (result.width, result.height)
    assert image.getpixel((10, 10)) == (255, 255, 255)  # transparency composited on white


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1"])
def test_any_mode_becomes_rgb(store: ImageStore, mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    result = ImageNormaliser(store, ImageOptions()).normalise(image_bytes(5, fmt=fmt, mode=mode))
    assert stored(store, result.digest).mode == "RGB"


def test_large_jpeg_capped_and_jpeg_output(store: ImageStore) -> None:
    data = image_bytes(9, size=(3000, 1000), fmt="JPEG")
    result = ImageNormaliser(store, ImageOptions(format="jpeg")).normalise(data)
    image = stored(store, result.digest)
    assert image.format == "JPEG"
    assert max(image.size) == 2048 and image.size[1] in (682, 683)


def test_decoded_once_per_distinct_input(store: ImageStore) -> None:
    norm = ImageNormaliser(store, ImageOptions())
    inputs = [image_bytes(i % 5) for i in range(50)]
    digests = [norm.normalise(x).digest for x in inputs]
    assert norm.stats["decoded"] == 5
    assert norm.stats["cache_hits"] == 45
    assert len(set(digests)) == 5
    assert digests[0] == digests[5]


def test_broken_input_cached_too(store: ImageStore) -> None:
    norm = ImageNormaliser(store, ImageOptions())
    for _ in range(3):
        assert norm.normalise(truncated_jpeg()).reason == "image_corrupt"
    assert norm.stats["decoded"] == 1 and norm.stats["failed"] == 3


def test_input_kinds_give_the_same_stored_image(store: ImageStore, tmp_path: Path) -> None:
    data = image_bytes(7)
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(data)
    norm = ImageNormaliser(store, ImageOptions())
    from_bytes = norm.normalise(data).digest
    from_dict = norm.normalise({"bytes": data, "path": "ignored.png"}).digest
    from_path_dict = norm.normalise({"bytes": None, "path": "a.png"}, tmp_path / "pics").digest
    from_rel = norm.normalise("pics/a.png", tmp_path).digest
    from_abs = norm.normalise(str(tmp_path / "pics" / "a.png")).digest
    from_pil = norm.normalise(Image.open(io.BytesIO(data))).digest
    assert {from_bytes, from_dict, from_path_dict, from_rel, from_abs, from_pil} == {from_bytes}
    assert store.has(from_bytes)


def test_missing_path_and_unsupported_value(store: ImageStore, tmp_path: Path) -> None:
    norm = ImageNormaliser(store, ImageOptions())
    missing = norm.normalise("nope.png", tmp_path)
    assert missing.reason == "image_missing" and "nope.png" in missing.message
    assert norm.normalise(12345).reason == "image_unsupported_input"
    assert norm.normalise({"path": None}).reason == "image_missing"


def test_dhash_close_for_similar_images_far_for_different() -> None:
    a = Image.open(io.BytesIO(image_bytes(1, size=(96, 64))))
    b = a.copy()
    b.putpixel((3, 3), (0, 0, 0))  # one pixel changed
    c = Image.open(io.BytesIO(image_bytes(2, size=(96, 64))))
    assert (dhash(a) ^ dhash(b)).bit_count() <= 2
    assert (dhash(a) ^ dhash(c)).bit_count() > 8
