"""The real fal-client against a running falocal server (started with
--workers 1), reached as fal's own hosts through the server's HTTPS proxy."""

import asyncio
import unittest

from common import ClientTest, photo, require_env

require_env("HTTPS_PROXY", "SSL_CERT_FILE", "FAL_KEY", "FALOCAL_CLIENT_ASSETS")

import fal_client  # noqa: E402  (after the environment check, as a user sets it before import)
from fal_client import Completed, FalClientHTTPError, InProgress, Queued  # noqa: E402

REMBG = "fal-ai/imageutils/rembg"
BIREFNET = "fal-ai/birefnet"
BIREFNET_V2 = "fal-ai/birefnet/v2"


def data_uri(name):
    return fal_client.encode_file(photo(name)["path"])


def logs_of(status):
    return list(getattr(status, "logs", None) or [])


class FalClientTest(ClientTest):
    def test_pinned_version(self):
        self.assertEqual(fal_client.__version__, "1.0.3")

    def test_subscribe_with_logs(self):
        updates = []
        result = fal_client.subscribe(
            REMBG,
            arguments={"image_url": data_uri("astronaut.png")},
            with_logs=True,
            on_queue_update=updates.append,
        )
        kinds = [type(u).__name__ for u in updates]
        self.assertIn("InProgress", kinds)
        self.assertIsInstance(updates[-1], Completed)
        self.assertIsNone(updates[-1].error)
        logs = [l for u in updates for l in logs_of(u)]
        self.assertTrue(logs, f"no logs in {kinds}")
        for l in logs:
            self.assertIsInstance(l["message"], str)
            self.assertIsInstance(l["timestamp"], str)
        self.check_image(result["image"], "astronaut.png")

    def test_submit_status_get_and_cancel(self):
        # One worker: the first request runs, the second waits in the queue.
        first = fal_client.submit(
            BIREFNET_V2, arguments={"image_url": data_uri("chelsea.png"), "output_mask": True}
        )
        second = fal_client.submit(REMBG, arguments={"image_url": data_uri("astronaut.png")})
        self.assertNotEqual(first.request_id, second.request_id)

        self.assertIsInstance(second.status(), Queued)
        second.cancel()
        with self.assertRaises(FalClientHTTPError) as cm:
            second.get()
        self.assertEqual(cm.exception.status_code, 499)

        now = first.status(with_logs=True)
        self.assertIsInstance(now, (Queued, InProgress, Completed))
        if not isinstance(now, Queued):
            self.assertIsInstance(now.logs, list)
        final = None
        for final in first.iter_events(with_logs=True, interval=0.1):
            pass
        self.assertIsInstance(final, Completed)
        self.assertIsNone(final.error)
        self.assertTrue(logs_of(final), "COMPLETED status with logs has none")
        self.assertIn("inference_time", final.metrics)
        result = first.get()
        self.check_image(result["image"], "chelsea.png")
        self.check_image(result["mask_image"], "chelsea.png")
        self.assertEqual(fal_client.result(BIREFNET_V2, first.request_id), result)

    def test_upload_file_then_run(self):
        rocket = photo("rocket.jpg")
        url = fal_client.upload_file(rocket["path"])
        self.assertTrue(url.startswith("https://"), url)
        import httpx

        with httpx.Client(timeout=60) as c:
            got = c.get(url)
        self.assertEqual(got.status_code, 200, url)
        with open(rocket["path"], "rb") as f:
            self.assertEqual(got.content, f.read(), "uploaded file differs")
        result = fal_client.run(BIREFNET, arguments={"image_url": url})
        self.check_image(result["image"], "rocket.jpg")

    def test_upload_bytes_multipart(self):
        # Over the client's 100 MiB threshold: a multipart upload of 10 MiB
        # parts. fal-client 1.0.2 and older sent every part after the first
        # empty; the server refuses that (EntityTooSmall) rather than keep
        # the first 10 MiB as the file.
        import hashlib
        import os

        import httpx

        data = os.urandom(1 << 20) * 105 + b"tail"
        url = fal_client.upload(data, "application/octet-stream", "big.bin")
        self.assertTrue(url.startswith("https://"), url)
        with httpx.Client(timeout=120) as c:
            got = c.get(url)
        self.assertEqual(got.status_code, 200, url)
        self.assertEqual(len(got.content), len(data), "uploaded file has another size")
        self.assertEqual(
            hashlib.sha256(got.content).hexdigest(),
            hashlib.sha256(data).hexdigest(),
            "uploaded file differs",
        )

    def test_run_async(self):
        async def main():
            return await fal_client.run_async(
                BIREFNET_V2, arguments={"image_url": data_uri("coffee.png")}
            )

        result = asyncio.run(main())
        self.check_image(result["image"], "coffee.png")

    def test_validation_error_422(self):
        with self.assertRaises(FalClientHTTPError) as cm:
            fal_client.run(
                BIREFNET,
                arguments={"image_url": data_uri("astronaut.png"), "output_format": "bmp"},
            )
        err = cm.exception
        self.assertEqual(err.status_code, 422)
        self.assertIsInstance(err.message, list, err.message)
        fields = [d for d in err.message if d["loc"][-1] == "output_format"]
        self.assertEqual(len(fields), 1, err.message)
        self.assertEqual(fields[0]["loc"], ["body", "output_format"])
        self.assertIsInstance(fields[0]["msg"], str)
        self.assertIsInstance(fields[0]["type"], str)

    def test_unknown_endpoint_404(self):
        with self.assertRaises(FalClientHTTPError) as cm:
            fal_client.run("fal-ai/no-such-model", arguments={"prompt": "x"})
        self.assertEqual(cm.exception.status_code, 404)


if __name__ == "__main__":
    unittest.main()
