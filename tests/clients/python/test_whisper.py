"""fal-client against a falocal server serving Whisper from the tiny
random-weight test model (pipelines/whisper/testdata/tiny-multi): the text is
meaningless, the protocol and the output shapes are what is checked.
FALOCAL_WHISPER_AUDIO is the path of jfk.wav (11 s)."""

import os
import unittest

from common import require_env

require_env("HTTPS_PROXY", "SSL_CERT_FILE", "FAL_KEY", "FALOCAL_WHISPER_AUDIO")

import fal_client  # noqa: E402
from fal_client import Completed, FalClientHTTPError  # noqa: E402

AUDIO = os.environ["FALOCAL_WHISPER_AUDIO"]


class WhisperTest(unittest.TestCase):
    def check_chunks(self, chunks):
        self.assertIsInstance(chunks, list)
        for c in chunks:
            start, end = c["timestamp"]
            self.assertTrue(0 <= start <= end <= 11.01, c)
            self.assertIsInstance(c["text"], str)

    def test_whisper_uploaded_file_with_logs(self):
        url = fal_client.upload_file(AUDIO)
        updates = []
        out = fal_client.subscribe(
            "fal-ai/whisper",
            arguments={"audio_url": url, "language": "en", "batch_size": 1},
            with_logs=True,
            on_queue_update=updates.append,
        )
        self.assertIsInstance(updates[-1], Completed)
        logs = [l["message"] for u in updates for l in (getattr(u, "logs", None) or [])]
        self.assertTrue(any("transcribed" in m for m in logs), logs)
        self.assertIsInstance(out["text"], str)
        self.assertTrue(out["text"])
        self.check_chunks(out["chunks"])
        self.assertEqual(out["inferred_languages"], ["en"])
        self.assertEqual(out["diarization_segments"], [])

    def test_wizper_data_uri(self):
        out = fal_client.run("fal-ai/wizper", arguments={"audio_url": fal_client.encode_file(AUDIO), "language": None})
        self.assertEqual(sorted(out), ["chunks", "languages", "text"])
        self.check_chunks(out["chunks"])
        self.assertEqual(len(out["languages"]), 1)

    def test_bad_audio_422(self):
        with self.assertRaises(FalClientHTTPError) as ctx:
            fal_client.run("fal-ai/whisper", arguments={"audio_url": "data:audio/wav;base64,AAAA"})
        self.assertEqual(ctx.exception.status_code, 422)
        self.assertEqual(ctx.exception.response.json()["detail"][0]["loc"], ["body", "audio_url"])


if __name__ == "__main__":
    unittest.main()
