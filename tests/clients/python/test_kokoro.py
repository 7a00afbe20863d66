"""fal-client against a falocal server speaking with the Kokoro model setup
installs (kokoro-v1.0) and espeak-ng: run, subscribe with logs, stream (one
partial output per chunk) and 422s."""

import base64
import struct
import unittest

from common import require_env

require_env("HTTPS_PROXY", "SSL_CERT_FILE", "FAL_KEY")

import fal_client  # noqa: E402
import httpx  # noqa: E402
from fal_client import Completed, FalClientHTTPError  # noqa: E402


def wav_seconds(buf):
    """Checks a 16-bit mono 24 kHz WAV; returns its duration in seconds."""
    if buf[:4] != b"RIFF" or buf[8:16] != b"WAVEfmt ":
        raise AssertionError("not a WAV file")
    channels, rate = struct.unpack_from("<HI", buf, 22)
    bits = struct.unpack_from("<H", buf, 34)[0]
    if (channels, rate, bits) != (1, 24000, 16):
        raise AssertionError(f"{channels} channel(s), {rate} Hz, {bits} bits")
    return struct.unpack_from("<I", buf, 40)[0] / 2 / 24000


class KokoroTest(unittest.TestCase):
    def test_spanish_subscribe_with_logs(self):
        updates = []
        out = fal_client.subscribe(
            "fal-ai/kokoro/spanish",
            arguments={"prompt": "Hola, ¿cómo estás? Hoy hace buen tiempo.", "speed": 0.9},
            with_logs=True,
            on_queue_update=updates.append,
        )
        self.assertIsInstance(updates[-1], Completed)
        logs = [l["message"] for u in updates for l in (getattr(u, "logs", None) or [])]
        self.assertTrue(any(m.startswith("chunk 1/") for m in logs), logs)
        self.assertEqual(sorted(out), ["audio"])
        self.assertEqual(out["audio"]["content_type"], "audio/wav")
        with httpx.Client(timeout=60) as c:  # trust_env: HTTPS_PROXY, SSL_CERT_FILE
            body = c.get(out["audio"]["url"]).content
        self.assertEqual(len(body), out["audio"]["file_size"])
        self.assertTrue(1 < wav_seconds(body) < 8)

    def test_stream_chunks(self):
        prompt = "Rice is often served in round bowls, and the juice of lemons makes fine punch. " * 7
        events = list(fal_client.stream("fal-ai/kokoro/american-english", arguments={"prompt": prompt, "voice": "am_michael"}))
        partials = [e for e in events if e["audio"]["url"].startswith("data:audio/wav;base64,")]
        self.assertGreaterEqual(len(partials), 2)
        for p in partials:
            buf = base64.b64decode(p["audio"]["url"].split(",", 1)[1])
            self.assertEqual(len(buf), p["audio"]["file_size"])
            self.assertGreater(wav_seconds(buf), 1)

    def test_bad_input_422(self):
        for args, field in (({"prompt": "hi", "speed": 9}, "speed"), ({"prompt": ""}, "prompt"), ({"prompt": "hi", "voice": "xx"}, "voice")):
            with self.assertRaises(FalClientHTTPError) as ctx:
                fal_client.run("fal-ai/kokoro/american-english", arguments=args)
            self.assertEqual(ctx.exception.status_code, 422)
            self.assertEqual(ctx.exception.response.json()["detail"][0]["loc"], ["body", field])


if __name__ == "__main__":
    unittest.main()
