"""A tiny map stage for engine tests: inverts images and records each call."""

from __future__ import annotations

import os
import time

import pyarrow as pa

from curate import imaging, registry
from curate.config import StageParams
from curate.stage import Stage


class InvertParams(StageParams):
    log_dir: str | None = None
    fail_on: str | None = None  # partition id to fail on (runtime error test)
    sleep: float = 0.0  # seconds per partition (lets fault tests act mid-stage)


class Invert(Stage):
    key = "test.invert"
    Params = InvertParams

    def process(self, table: pa.Table, ctx) -> pa.Table:
        if self.params.log_dir:
            with open(os.path.join(self.params.log_dir, f"{ctx.partition_id}.log"), "a") as f:
                f.write("x")
        time.sleep(self.params.sleep)
        if self.params.fail_on == ctx.partition_id or self.params.fail_on == "*":
            raise RuntimeError("planted failure")
        images = [imaging.encode_png(255 - imaging.decode_png(b)) for b in table.column("image").to_pylist()]
        return table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))


registry.register("test.invert", "tests._stages:Invert")
