"""A source of small addition questions (each with a rendered image) and a filter on their
size. Importable and usable without the plugin manager."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

from dualcurate import Filter, Sample, Source, StageConfig, StageContext


class HelloConfig(StageConfig):
    n: int = 20
    seed: int = 0
    max_operand: int = 50


class HelloSource(Source):
    """Questions "What is a + b?" with the sum drawn on a small image."""

    name = "hello"
    Config = HelloConfig

    def read(self, ctx: StageContext) -> Iterator[list[dict]]:
        from PIL import Image, ImageDraw

        rng = random.Random(self.config.seed)
        batch = []
        for _ in range(self.config.n):
            a = rng.randint(0, self.config.max_operand)
            b = rng.randint(0, self.config.max_operand)
            image = Image.new("RGB", (64, 32), "white")
            ImageDraw.Draw(image).text((4, 10), f"{a}+{b}", fill="black")
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            digest = ctx.images.put(buf.getvalue()) if ctx.images is not None else None
            sample = Sample(source="hello", domain="arithmetic", question=f"What is {a} + {b}?",
                            answer=str(a + b), answer_type="number",
                            images=[digest] if digest else [],
                            caption=f"The text '{a}+{b}' in black on white.")
            batch.append(sample.to_row())
            if len(batch) == 8:
                yield batch
                batch = []
        if batch:
            yield batch


class LengthConfig(StageConfig):
    max_answer_digits: int = 2


class AnswerLengthFilter(Filter):
    """Keeps samples whose answer has at most ``max_answer_digits`` digits."""

    name = "hello-length"
    Config = LengthConfig
    requires = ("answer",)
    provides = ("keep",)

    def process(self, rows: list[dict], ctx: StageContext) -> list[dict]:
        limit = self.config.max_answer_digits
        return [{**row, "keep": len(row["answer"]) <= limit} for row in rows]
