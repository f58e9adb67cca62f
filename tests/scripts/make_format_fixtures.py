#!/usr/bin/env python3
"""Small images in every format/mode fungi-aug decodes, plus what Pillow 13.0.0 makes of them.

    pip install pillow==13.0.0 numpy
    python tests/scripts/make_format_fixtures.py      # from the repo root

Writes tests/fixtures/formats/*.{png,jpg,bmp,tif,webp,ppm,pgm} and expected.json with, per file,
PIL's mode on open and the SHA-256 of `np.asarray(Image.open(f).convert("RGB"))` (HWC uint8).
"""
import hashlib, json, os
import numpy as np
from PIL import Image

out = "tests/fixtures/formats"
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
W, H = 37, 23
rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
# Smooth content too, so lossy codecs have something realistic.
yy, xx = np.mgrid[0:H, 0:W]
smooth = np.stack([(xx * 7) % 256, (yy * 11) % 256, ((xx + yy) * 5) % 256], -1).astype(np.uint8)
files = {}

def save(name, img, **kw):
    img.save(os.path.join(out, name), **kw)
    files[name] = None

save("rgb.png", Image.fromarray(rgb))
save("l.png", Image.fromarray(rgb[..., 0]))
save("la.png", Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA"))
save("rgba.png", Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"))
p = Image.fromarray(smooth).quantize(16)
save("p.png", p)
pt = p.copy(); pt.info["transparency"] = 3
save("p_transparency.png", pt, transparency=3)
g16 = (rng.integers(0, 65536, (H, W))).astype(np.uint16)
g16[0, :5] = [0, 1, 255, 256, 65535]
save("i16.png", Image.fromarray(g16))  # PIL mode I;16
save("smooth.jpg", Image.fromarray(smooth), quality=90)
save("gray.jpg", Image.fromarray(smooth[..., 0]), quality=90)
save("cmyk.jpg", Image.fromarray(smooth).convert("CMYK"), quality=90)
save("rgb.bmp", Image.fromarray(rgb))
save("rgb.tif", Image.fromarray(rgb))
save("rgb_lossless.webp", Image.fromarray(rgb), lossless=True)
save("rgb.ppm", Image.fromarray(rgb))
save("l.pgm", Image.fromarray(rgb[..., 0]))


def png16(name, arr, color_type):
    """A 16-bit PNG written by hand (PIL cannot write 16-bit colour PNGs)."""
    import struct, zlib
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[r].astype(">u2").tobytes() for r in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    open(os.path.join(out, name), "wb").write(data)
    files[name] = None


c16 = rng.integers(0, 65536, (H, W, 4), dtype=np.uint16)
png16("rgb16.png", c16[..., :3], 2)
png16("rgba16.png", c16, 6)
png16("la16.png", c16[..., :2], 4)

expected = {}
for name in sorted(files):
    im = Image.open(os.path.join(out, name))
    a = np.asarray(im.convert("RGB"))
    expected[name] = {"mode": im.mode, "size": list(im.size),
                      "rgb_sha256": hashlib.sha256(a.tobytes()).hexdigest()}
json.dump(expected, open(os.path.join(out, "expected.json"), "w"), indent=1)

# Pillow 13 resize on random sizes: both pass orders, up/down scaling, both filters.
src = Image.open("tests/fixtures/golden/images/06_large.png").convert("RGB")
cases = []
r2 = np.random.default_rng(5)
for k in range(60):
    w, h = [int(x) for x in r2.integers(8, 500, 2)]
    ow, oh = [int(x) for x in r2.integers(5, 400, 2)]
    left, top = int(r2.integers(0, 900 - w)), int(r2.integers(0, 600 - h))
    filt = "bicubic" if k % 2 == 0 else "bilinear"
    c = src.crop((left, top, left + w, top + h))
    a = np.asarray(c.resize((ow, oh), Image.BICUBIC if filt == "bicubic" else Image.BILINEAR))
    cases.append({"box": [left, top, w, h], "out": [ow, oh], "filter": filt,
                  "sha256": hashlib.sha256(a.tobytes()).hexdigest()})
json.dump(cases, open(os.path.join(out, "resize_cases.json"), "w"), indent=0)
print(json.dumps({k: v["mode"] for k, v in expected.items()}))
