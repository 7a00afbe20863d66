"""Shared helpers for the fal-client suites (stdlib only).

tests/clients/clients_test.go runs the suites with the environment a user
would set for falocal before importing fal_client: HTTPS_PROXY=<server>,
SSL_CERT_FILE=<the server's CA>, FAL_KEY; and FALOCAL_CLIENT_ASSETS, a JSON
object {name: {path, width, height}} of the test photos.
"""

import json
import os
import struct
import unittest
import zlib

import httpx

ASSETS = json.loads(os.environ.get("FALOCAL_CLIENT_ASSETS", "{}"))


def require_env(*names):
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} must be set (run through go test ./tests/clients/)"
        )


def photo(name):
    a = ASSETS.get(name)
    if a is None:
        raise AssertionError(f"test photo {name} not passed in FALOCAL_CLIENT_ASSETS")
    return a


def decode_png(buf):
    """Checks a PNG's structure (chunk CRCs included) and that its pixel data
    inflates to exactly the size its header claims; returns (width, height)."""
    if buf[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError("not a PNG")
    off, ihdr, idat, ended = 8, None, [], False
    while off + 8 <= len(buf):
        (length,) = struct.unpack(">I", buf[off : off + 4])
        ctype = buf[off + 4 : off + 8]
        data = buf[off + 8 : off + 8 + length]
        (crc,) = struct.unpack(">I", buf[off + 8 + length : off + 12 + length])
        if zlib.crc32(ctype + data) != crc:
            raise AssertionError(f"bad CRC in {ctype!r}")
        if ctype == b"IHDR":
            ihdr = data
        elif ctype == b"IDAT":
            idat.append(data)
        off += 12 + length
        if ctype == b"IEND":
            ended = True
            break
    if ihdr is None or not idat or not ended:
        raise AssertionError("PNG lacks IHDR, IDAT or IEND")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    pixels = zlib.decompress(b"".join(idat))
    if interlace == 0:
        row = 1 + (width * channels * depth + 7) // 8
        if len(pixels) != row * height:
            raise AssertionError("PNG pixel data does not match its size")
    return width, height


class ClientTest(unittest.TestCase):
    def check_image(self, file, name):
        """An output file: fal's File fields, fetchable (through the proxy,
        as the client would), a PNG of the input photo's size."""
        want = photo(name)
        self.assertIsInstance(file, dict, file)
        self.assertEqual(file["content_type"], "image/png")
        self.assertEqual((file["width"], file["height"]), (want["width"], want["height"]))
        with httpx.Client(timeout=60) as c:  # trust_env: HTTPS_PROXY, SSL_CERT_FILE
            r = c.get(file["url"])
        self.assertEqual(r.status_code, 200, file["url"])
        if "file_size" in file:
            self.assertEqual(len(r.content), file["file_size"])
        self.assertEqual(decode_png(r.content), (want["width"], want["height"]))
