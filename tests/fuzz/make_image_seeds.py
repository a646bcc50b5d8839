#!/usr/bin/env python3
"""Seeds of fuzz_image (tests/fuzz/corpus/image/), from the image fixtures
(scripts/make_image_fixtures.py): small valid files of each kind, and
hostile ones: truncations, zero and huge sizes with valid CRCs, a bad CRC,
a JPEG whose EXIF offsets point outside the segment, non-images.
Run from the repository root. (The corpus also keeps a few inputs that
fuzz_image found, named by their SHA-1; this script does not make those.)"""
import os
import struct
import zlib

SRC = "tests/data/image"
OUT = "tests/fuzz/corpus/image"


def crc_fix(png):
    """Recompute every chunk's CRC."""
    out, pos = bytearray(png[:8]), 8
    while pos + 8 <= len(png):
        n = struct.unpack(">I", png[pos:pos + 4])[0]
        body = png[pos + 4:pos + 8 + n]
        out += png[pos:pos + 8 + n] + struct.pack(">I", zlib.crc32(body))
        pos += 12 + n
    return bytes(out)


def ihdr(png, w, h):
    return crc_fix(png[:16] + struct.pack(">II", w, h) + png[24:])


def sof(jpg, w, h):
    """The JPEG with its frame header's sizes replaced."""
    b = bytearray(jpg)
    i = 2
    while i + 4 < len(b):
        m, n = b[i + 1], struct.unpack(">H", b[i + 2:i + 4])[0]
        if m in (0xC0, 0xC1, 0xC2):
            b[i + 5:i + 9] = struct.pack(">HH", h, w)
            return bytes(b)
        i += 2 + n
    raise SystemExit("no SOF")


def main():
    os.makedirs(OUT, exist_ok=True)
    rd = lambda n: open(os.path.join(SRC, n), "rb").read()
    seeds = {}
    for n in ["rgb8.png", "gray8.png", "pal_trns.png", "rgb16_interlaced.png", "gray16.png",
              "exif6.jpg", "gray.jpg", "cmyk.jpg"]:
        seeds[n] = rd(n)
    png, jpg = rd("rgb8.png"), rd("exif6.jpg")
    seeds["trunc_half.png"] = png[:len(png) // 2]
    seeds["trunc_header.png"] = png[:20]
    seeds["trunc_half.jpg"] = jpg[:len(jpg) // 2]
    seeds["trunc_sos.jpg"] = jpg[:jpg.index(b"\xff\xda") + 12]
    seeds["zero_width.png"] = ihdr(png, 0, 32)
    seeds["huge.png"] = ihdr(png, 30000, 30000)
    seeds["wide.png"] = ihdr(png, 1 << 20, 1)
    seeds["bad_crc.png"] = png[:30] + bytes([png[30] ^ 0xFF]) + png[31:]
    seeds["huge.jpg"] = sof(jpg, 65535, 65535)
    seeds["zero.jpg"] = sof(jpg, 0, 16)
    # EXIF whose IFD offset and entry count run past the segment
    i = jpg.index(b"Exif\0\0") + 6
    b = bytearray(jpg)
    b[i + 4:i + 8] = (b"\xff\xff\xff\x7f" if b[i] == ord("I") else b"\x7f\xff\xff\xff")
    seeds["exif_bad_offset.jpg"] = bytes(b)
    seeds["text.txt"] = b"this is not an image\n"
    seeds["png_sig_only"] = png[:8]
    seeds["jpeg_soi_only"] = b"\xff\xd8\xff"
    for n, data in seeds.items():
        with open(os.path.join(OUT, n), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
