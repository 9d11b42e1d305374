"""An S3-API server for tests and benchmarks: moto in server mode, as its own process on a free port
(a real HTTP server; ReadRoom talks to it only through the S3 API, as to MinIO or AWS)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass, field

import pytest

from tests.net import free_port, port_open, wait_until

ACCESS_KEY, SECRET_KEY, REGION = "readroom-test", "readroom-test-secret", "us-east-1"


@dataclass
class MotoServer:
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), timeout=60, message="moto server did not start")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)

    def bucket_create(self, name: str) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ).create_bucket(Bucket=name)

    def env(self, bucket: str) -> dict[str, str]:
        """The environment a ReadRoom process needs to keep its images in ``bucket`` here."""
        return {
            "READROOM_S3_BUCKET": bucket,
            "READROOM_S3_ENDPOINT_URL": self.endpoint,
            "READROOM_S3_REGION": REGION,
            "READROOM_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "READROOM_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }


# --- fixtures (import them into a test module: ``from tests.s3 import moto_server, s3_bucket``) ----
@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(moto_server, settings):
    """A fresh bucket, and the settings pointing ReadRoom's image store at it."""
    from imaging import object_store, storage

    name = f"readroom-{uuid.uuid4().hex[:12]}"
    moto_server.bucket_create(name)
    for key, value in moto_server.env(name).items():
        setattr(settings, key, value)
    settings.READROOM_S3_PREFIX = ""
    settings.READROOM_S3_ADDRESSING_STYLE = "path"
    object_store.client_reset()
    storage._keys.cache_clear()
    yield name
    object_store.client_reset()
    storage._keys.cache_clear()


def object_raw(server: MotoServer, bucket: str, key: str) -> bytes:
    """An object's bytes as the store holds them (what an attacker with the bucket would see)."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
