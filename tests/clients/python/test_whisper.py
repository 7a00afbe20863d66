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


class FluxTest(unittest.TestCase):
    """fal-ai/flux/schnell on the tiny random-weight FLUX test model."""

    def test_subscribe_and_stream(self):
        args = {"prompt": "a red cube", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 3, "seed": 9}
        out = fal_client.subscribe("fal-ai/flux/schnell", arguments=args)
        self.assertEqual(out["seed"], 9)
        self.assertEqual(len(out["images"]), 1)
        self.assertEqual(out["images"][0]["content_type"], "image/jpeg")
        events = list(fal_client.stream("fal-ai/flux/schnell", arguments=dict(args, sync_mode=True)))
        self.assertEqual(len(events), 3)
        self.assertEqual(events[-1]["seed"], 9)
        self.assertTrue(events[0]["images"][0]["url"].startswith("data:image/jpeg;base64,"))


if __name__ == "__main__":
    unittest.main()
