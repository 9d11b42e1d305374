"""The peer-review cast (tests/qa/conftest.py) for the authorisation tests."""

from tests.qa.conftest import head_ct_read, neuro_readers, referred  # noqa: F401
