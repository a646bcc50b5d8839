#!/usr/bin/env python3
"""Fixtures of the image decoders and of ViT preprocessing (tests/test_image.c).

Writes into tests/data/image/ (run from the repository root; needs Pillow,
numpy, scikit-learn and transformers; nothing is downloaded):
  china.jpg, flower.jpg   scikit-learn's two bundled sample photographs
                          (load_sample_images), shrunk to 160 px wide
  flower_prog.jpg         the same, progressive
  gray.jpg, cmyk.jpg      grayscale and Adobe CMYK JPEGs
  exif6.jpg, exif3.jpg    JPEGs stored sideways / upside down with an EXIF
                          Orientation tag (6: rotate 90 clockwise, 3: 180)
  rgb8.png rgba8.png gray8.png gray_p.png pal8.png pal_trns.png rgb16.png
  gray16.png rgb8_interlaced.png rgb16_interlaced.png
                          PNG colour types and depths (the 16-bit and
                          interlaced ones written by the encoder below,
                          which Pillow cannot write)
  expect.safetensors      decoded_<file> [H, W, 3] U8: Pillow's decoding,
                          converted to RGB (exif_transpose'd for the EXIF
                          files); pixels_<case> F32 [3, h, w]: the
                          processor's pixel_values; resized_<case> U8
                          [h, w, 3]: the same undone to 8-bit levels
  cases.txt               one line per preprocessing case:
                          <case> <file> <height> <width> <resample>
                          <mean0> <mean1> <mean2> <std0> <std1> <std2>
The processor is transformers' ViTImageProcessorPil (the PIL backend of
ViTImageProcessor) with do_convert_rgb."""
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps
from safetensors.numpy import save_file
from sklearn.datasets import load_sample_images
from transformers import ViTImageProcessorPil
from transformers.image_transforms import convert_to_rgb

OUT = "tests/data/image"


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path, arr, color_type, depth, interlace=False):
    """A PNG of arr ([H, W] or [H, W, C], uint8 or uint16), filter 0 rows."""
    h, w = arr.shape[:2]
    a = arr.reshape(h, w, -1)
    dt = ">u2" if depth == 16 else "u1"

    def rows(sub):
        return b"".join(b"\0" + np.ascontiguousarray(r).astype(dt).tobytes() for r in sub)

    if not interlace:
        raw = rows(a)
    else:  # Adam7 passes: (x0, y0, dx, dy)
        raw = b""
        for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                               (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
            sub = a[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += rows(sub)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
                png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def small(img, w):
    return img.resize((w, round(img.height * w / img.width)), Image.LANCZOS)


def main():
    os.makedirs(OUT, exist_ok=True)
    china, flower = [Image.fromarray(a) for a in load_sample_images().images]
    china, flower = small(china, 160), small(flower, 160)
    p = lambda n: os.path.join(OUT, n)
    china.save(p("china.jpg"), quality=90)
    flower.save(p("flower.jpg"), quality=90)
    flower.save(p("flower_prog.jpg"), quality=85, progressive=True)
    small(flower, 64).convert("L").save(p("gray.jpg"), quality=90)
    small(china, 64).convert("CMYK").save(p("cmyk.jpg"), quality=95)
    upright = small(china, 48)
    for tag, stored in ((6, upright.transpose(Image.ROTATE_90)),
                        (3, upright.transpose(Image.ROTATE_180))):
        exif = Image.Exif()
        exif[0x0112] = tag
        stored.save(p(f"exif{tag}.jpg"), quality=90, exif=exif.tobytes())

    f48 = np.asarray(small(flower, 48))  # 48 x 32
    rng = np.random.default_rng(0)
    Image.fromarray(f48).save(p("rgb8.png"))
    alpha = rng.integers(0, 256, f48.shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([f48, alpha])).save(p("rgba8.png"))
    Image.fromarray(f48).convert("L").save(p("gray8.png"))
    Image.fromarray(f48).convert("L").convert("P").save(p("gray_p.png"))
    q = Image.fromarray(f48).quantize(64)
    q.save(p("pal8.png"))
    q.save(p("pal_trns.png"), transparency=3)
    rgb16 = f48.astype(np.uint16) * 257 + rng.integers(0, 256, f48.shape, dtype=np.uint16)
    write_png(p("rgb16.png"), rgb16, 2, 16)
    write_png(p("rgb16_interlaced.png"), rgb16, 2, 16, interlace=True)
    write_png(p("rgb8_interlaced.png"), f48, 2, 8, interlace=True)
    gray16 = rgb16[..., 1]
    write_png(p("gray16.png"), gray16, 0, 16)

    tensors = {}
    # what each file decodes to: Pillow's decoding as RGB (16-bit: the high
    # byte, which is what Pillow keeps of 16-bit RGB)
    for name in ["china.jpg", "flower.jpg", "flower_prog.jpg", "gray.jpg", "cmyk.jpg",
                 "exif6.jpg", "exif3.jpg", "rgb8.png", "rgba8.png", "gray8.png", "gray_p.png",
                 "pal8.png", "pal_trns.png", "rgb8_interlaced.png"]:
        im = Image.open(p(name))
        if name.startswith("exif"):
            im = ImageOps.exif_transpose(im)
        tensors["decoded_" + name] = np.ascontiguousarray(np.asarray(convert_to_rgb(im)))
    hi = (rgb16 >> 8).astype(np.uint8)
    tensors["decoded_rgb16.png"] = hi
    tensors["decoded_rgb16_interlaced.png"] = hi
    tensors["decoded_gray16.png"] = np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, 2)

    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    half = ([0.5] * 3, [0.5] * 3)
    cases = [
        ("china_96", "china.jpg", 96, 96, 2, imagenet),       # 160 x 107 -> 96 x 96
        ("china_48x40", "china.jpg", 40, 48, 2, half),        # downscale: antialiased
        ("flower_128", "flower.jpg", 128, 128, 2, imagenet),  # wider, taller
        ("flower_17x31", "flower.jpg", 17, 31, 2, imagenet),  # odd, both ways
        ("flower_bicubic", "flower.jpg", 50, 70, 3, half),
        ("flower_lanczos", "flower.jpg", 50, 70, 1, half),
        ("flower_box", "flower.jpg", 33, 41, 4, half),
        ("flower_hamming", "flower.jpg", 33, 41, 5, half),
        ("flower_nearest", "flower.jpg", 33, 41, 0, half),
        ("rgba_up", "rgba8.png", 64, 64, 2, imagenet),
        ("gray_down", "gray8.png", 16, 24, 2, imagenet),
        ("cmyk_down", "cmyk.jpg", 20, 30, 2, half),
    ]
    lines = []
    for case, name, h, w, rs, (mean, std) in cases:
        proc = ViTImageProcessorPil(size={"height": h, "width": w}, resample=rs, image_mean=mean,
                                    image_std=std, do_convert_rgb=True)
        pv = proc(Image.open(p(name)), return_tensors="np")["pixel_values"][0].astype(np.float32)
        assert pv.shape == (3, h, w), pv.shape
        levels = (pv * np.array(std)[:, None, None] + np.array(mean)[:, None, None]) * 255
        u8 = np.rint(levels)
        assert np.abs(levels - u8).max() < 1e-3
        tensors["resized_" + case] = np.ascontiguousarray(u8.transpose(1, 2, 0).astype(np.uint8))
        if h * w <= 40 * 48:
            tensors["pixels_" + case] = np.ascontiguousarray(pv)
        lines.append(" ".join([case, name, str(h), str(w), str(rs)] +
                              [repr(float(v)) for v in mean + std]))
    save_file(tensors, p("expect.safetensors"))
    with open(p("cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
