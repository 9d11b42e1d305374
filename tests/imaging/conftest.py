"""Fixtures for the imaging tests: the S3-API object store (tests/s3.py)."""

from tests.s3 import moto_server, s3_bucket  # noqa: F401
