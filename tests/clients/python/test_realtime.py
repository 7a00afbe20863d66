"""fal-client's realtime connections (sync and async) against a falocal
server that serves fal-ai/fast-turbo-diffusion with a tiny SD-Turbo test
model, set up as for every other call: HTTPS_PROXY=<server>,
SSL_CERT_FILE=<the server's CA>, FAL_KEY. The token comes from
rest.fal.ai/tokens/ and the WebSocket goes to wss://fal.run through the
proxy (websockets 15 or later)."""

import asyncio
import base64
import unittest

from common import require_env

require_env("HTTPS_PROXY", "SSL_CERT_FILE", "FAL_KEY")

import fal_client  # noqa: E402
from fal_client.client import RealtimeError  # noqa: E402

APP = "fal-ai/fast-turbo-diffusion"
INPUT = {
    "model_name": "stabilityai/sd-turbo",
    "image_size": {"width": 64, "height": 64},
    "num_inference_steps": 1,
}


def check_image(test, out):
    test.assertEqual(len(out["images"]), 1)
    img = out["images"][0]
    test.assertEqual((img["width"], img["height"]), (64, 64))
    test.assertIsInstance(img["width"], int)
    prefix = "data:image/jpeg;base64,"
    test.assertTrue(img["url"].startswith(prefix), img["url"][:40])
    jpeg = base64.b64decode(img["url"][len(prefix):])
    test.assertEqual(jpeg[:2], b"\xff\xd8")
    test.assertEqual(len(jpeg), img["file_size"])


class RealtimeTest(unittest.TestCase):
    def test_results_and_errors(self):
        with fal_client.realtime(APP) as conn:
            conn.send({**INPUT, "prompt": "a red apple", "seed": 3, "request_id": "one"})
            out = conn.recv()
            check_image(self, out)
            self.assertEqual(out["request_id"], "one")
            self.assertEqual(out["seed"], 3)

            conn.send({**INPUT, "prompt": "", "request_id": "two"})
            with self.assertRaises(RealtimeError) as cm:
                conn.recv()
            self.assertEqual(cm.exception.error, "VALIDATION_ERROR")
            self.assertTrue(cm.exception.reason.startswith("prompt: "), cm.exception.reason)
            self.assertEqual(cm.exception.payload["request_id"], "two")

            # The connection outlives a failed input.
            conn.send({**INPUT, "prompt": "a green pear"})
            check_image(self, conn.recv())

    def test_async(self):
        async def go():
            async with fal_client.realtime_async(APP, max_buffering=2) as conn:
                await conn.send({**INPUT, "prompt": "a blue cup"})
                return await conn.recv()

        check_image(self, asyncio.run(go()))

    def test_not_realtime(self):
        with fal_client.realtime("fal-ai/fast-sdxl") as conn:
            with self.assertRaises(RealtimeError) as cm:
                conn.recv()
            self.assertEqual(cm.exception.error, "NOT_REALTIME")
            self.assertIn("has no realtime endpoint", cm.exception.reason)


if __name__ == "__main__":
    unittest.main()
