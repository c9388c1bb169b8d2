#!/usr/bin/env python3
"""Writes tests/golden/pil_resize.json: what Pillow's bilinear resize (the resize of the
official feature pipeline) makes of a synthetic RGB image, for tests/features_golden.rs.

    python3 -m pip install pillow==13.0.0 && python3 scripts/pil-resize-golden.py

The source image is a formula both sides compute: pixel (x, y), channel c =
(x * 37 + y * 91 + c * 53 + ((x * y) % 17) * 7) % 256, 41 x 29 pixels.
"""
import json
import pathlib

import PIL
from PIL import Image

W, H = 41, 29
px = bytes((x * 37 + y * 91 + c * 53 + ((x * y) % 17) * 7) % 256
           for y in range(H) for x in range(W) for c in range(3))
src = Image.frombytes("RGB", (W, H), px)
cases = []
for w, h in [(16, 16), (50, 44), (7, 31), (41, 13), (96, 80)]:
    out = src.resize((w, h), Image.BILINEAR)
    cases.append({"width": w, "height": h, "rgb_hex": out.tobytes().hex()})
doc = {"pillow": PIL.__version__, "source": [W, H], "filter": "BILINEAR", "cases": cases}
path = pathlib.Path(__file__).resolve().parent.parent / "tests/golden/pil_resize.json"
path.write_text(json.dumps(doc) + "\n")
print(f"wrote {path} (Pillow {PIL.__version__})")
