"""Item 10: an image bomb (a small PNG declaring 200 million pixels), a truncated JPEG and a
non-image file in a dataset: a real ``curate run`` (hf-dataset -> openai-distill) drops each with
a reason, its memory stays bounded (peak RSS measured in the child), and the run goes on with
the good rows only."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from dualcurate_hf.sample_data import (
    NOT_AN_IMAGE,
    bomb_png,
    image_bytes,
    truncated_jpeg,
    write_dataset,
)

from .helpers import CURATE, clean_env, rows, start_server, teacher

pytestmark = pytest.mark.faults
GOOD = 6
RSS_BOUND_MB = 150  # decoding the bomb alone would need 600 MB (20000 x 10000 x RGB)

# `curate run` in this process, reporting the resident-set growth over the run: VmRSS after
# the libraries are imported, VmHWM (peak) at the end.
MEASURED_RUN = textwrap.dedent("""
    import json, sys
    def status(field):
        text = open("/proc/self/status").read()
        return int(text.split(field + ":")[1].split()[0]) // 1024
    import datasets, PIL.Image, PIL.PngImagePlugin, PIL.JpegImagePlugin, pyarrow.parquet
    import dualcurate_hf.source, dualcurate_openai.engine
    from dualcurate.cli import main
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
        fh.write("5")
    before = status("VmRSS")
    try:
        main(sys.argv[2:])
    finally:
        with open(sys.argv[1], "w") as fh:
            json.dump({"rss_before_mb": before, "peak_mb": status("VmHWM")}, fh)
""")


def test_broken_images_are_dropped_with_a_reason_in_bounded_memory(tmp_path: Path) -> None:
    records = [{"question": f"Item {i}: what is {i} plus {i}?", "answer": str(2 * i),
                "image": image_bytes(i)} for i in range(GOOD)]
    records[2:2] = [
        {"question": "Item 900: what is 900 plus 900?", "answer": "1800", "image": bomb_png()},
        {"question": "Item 901: what is 901 plus 901?", "answer": "1802",
         "image": truncated_jpeg()},
        {"question": "Item 902: what is 902 plus 902?", "answer": "1804", "image": NOT_AN_IMAGE},
    ]
    data = write_dataset(tmp_path / "data", "parquet", records)
    server = start_server(teacher)
    try:
        recipe = tmp_path / "recipe.toml"
        recipe.write_text(f"""
[run]
shard_size = 4
[source]
use = "hf-dataset"
[[source.sources]]
name = "scraped"
parquet = "{data}"
[distill]
use = "openai-distill"
max_tokens = 64
[distill.engine]
model = "teacher"
base_url = "{server.base_url}"
""")
        import subprocess

        memory = tmp_path / "memory.json"
        proc = subprocess.run([str(CURATE.parent / "python"), "-c", MEASURED_RUN, str(memory),
                               "run", str(recipe), "--out", str(tmp_path / "run")],
                              cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        sent = [s.body for s in server.seen]
    finally:
        server.stop()
    run_dir = tmp_path / "run"
    report = json.loads((run_dir / "source" / "artifacts" / "standardisation.json").read_text())
    source = report["sources"]["scraped"]
    assert source["dropped"] == {"image_too_large": 1, "image_corrupt": 1,
                                 "image_not_an_image": 1}
    assert all(source["examples"][reason] for reason in source["dropped"])  # with the why
    assert "200000000 pixels" in " ".join(source["examples"]["image_too_large"])
    # the run went on: the good rows, and only they, reached the teacher with their images
    assert sorted(int(r["answer"]) // 2 for r in rows(run_dir, "distill")) == list(range(GOOD))
    assert len(sent) == GOOD
    assert all(any(p.get("type") == "image_url" for m in b["messages"]
                   for p in (m["content"] if isinstance(m["content"], list) else []))
               for b in sent)
    usage = json.loads(memory.read_text())
    growth = usage["peak_mb"] - usage["rss_before_mb"]
    print(f"\nitem 10: 3 broken images of {GOOD + 3} dropped with reasons; RSS "
          f"{usage['rss_before_mb']} MB -> peak {usage['peak_mb']} MB (+{growth} MB, bound "
          f"{RSS_BOUND_MB} MB)")
    assert growth < RSS_BOUND_MB


# More hostile images, each normalised in a child that reports its resident-set growth.
HOSTILE = textwrap.dedent("""
    import hashlib, io, json, struct, sys, zlib
    from PIL import Image
    from dualcurate_hf.images import ImageNormaliser, ImageOptions
    from dualcurate_hf.sample_data import image_bytes

    def jpeg_declaring(width, height):  # a 16x16 JPEG whose frame header claims more
        data = bytearray(image_bytes(1, size=(16, 16), fmt="JPEG"))
        i = 2
        while i < len(data):
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC2):
                data[i + 5:i + 9] = struct.pack(">HH", height, width)
                break
            i += 2 + length
        return bytes(data)

    def png_text_bomb():  # a tiny PNG with a zTXt chunk inflating to 64 MiB
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="PNG")
        png = buf.getvalue()
        body = b"Comment\\x00\\x00" + zlib.compress(b"A" * (64 * 2**20), 9)
        chunk = (struct.pack(">I", len(body)) + b"zTXt" + body
                 + struct.pack(">I", zlib.crc32(b"zTXt" + body) & 0xFFFFFFFF))
        return png[:-12] + chunk + png[-12:]

    def gif_frames():  # 300 frames of 400x400: only the first may be decoded
        frames = [Image.new("P", (400, 400), i % 256) for i in range(300)]
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
        return buf.getvalue()

    class Store:
        def put(self, data):
            return hashlib.sha256(data).hexdigest()

    def status(field):
        return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) // 1024

    data = {"jpeg-65000x65000": lambda: jpeg_declaring(65000, 65000),
            "png-text-bomb": png_text_bomb, "gif-300-frames": gif_frames}[sys.argv[1]]()
    import gc; gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
        fh.write("5")
    before = status("VmRSS")
    result = ImageNormaliser(Store(), ImageOptions()).normalise(data)
    print(json.dumps({"reason": result.reason, "stored": result.digest is not None,
                      "growth_mb": status("VmHWM") - before}))
""")


@pytest.mark.parametrize(("kind", "reason"), [("jpeg-65000x65000", "image_too_large"),
                                              ("png-text-bomb", "image_corrupt"),
                                              ("gif-300-frames", None)])
def test_more_hostile_images_in_bounded_memory(kind: str, reason: str | None) -> None:
    import subprocess

    proc = subprocess.run([str(CURATE.parent / "python"), "-c", HOSTILE, kind],
                          capture_output=True, text=True, timeout=60, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    print(f"\nitem 10: {kind}: {got}")
    assert got["reason"] == reason and got["stored"] is (reason is None)
    assert got["growth_mb"] < 100
