"""fal-client against a falocal server started with --keys: FAL_KEY holds
the right key; a client with another key is refused."""

import os
import unittest

from common import ClientTest, photo, require_env

require_env("HTTPS_PROXY", "SSL_CERT_FILE", "FAL_KEY", "FALOCAL_CLIENT_ASSETS")

import fal_client  # noqa: E402
from fal_client import FalClientHTTPError  # noqa: E402

REMBG = "fal-ai/imageutils/rembg"


class AuthTest(ClientTest):
    def test_right_key_runs(self):
        uri = fal_client.encode_file(photo("camera.png")["path"])
        result = fal_client.run(REMBG, arguments={"image_url": uri})
        self.check_image(result["image"], "camera.png")

    def test_wrong_key_403(self):
        key_id, _, secret = os.environ["FAL_KEY"].partition(":")
        for key in (key_id + ":wrong-secret", "someone-else:" + secret):
            with self.subTest(key=key):
                client = fal_client.SyncClient(key=key)
                try:
                    with self.assertRaises(FalClientHTTPError) as cm:
                        client.run(REMBG, arguments={"image_url": "data:image/png;base64,"})
                    self.assertEqual(cm.exception.status_code, 403)
                    with self.assertRaises(FalClientHTTPError) as cm:
                        client.submit(REMBG, arguments={"image_url": "data:image/png;base64,"})
                    self.assertEqual(cm.exception.status_code, 403)
                finally:
                    client._client.close()


if __name__ == "__main__":
    unittest.main()
