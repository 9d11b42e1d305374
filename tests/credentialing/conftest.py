"""Helpers for the credentialing tests: subspecialties by code, instants in Chicago time, an
isolated encrypted store."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from credentialing.models import Subspecialty
from imaging import storage

CHICAGO = ZoneInfo("America/Chicago")


def chicago_time(*args) -> datetime:
    return datetime(*args, tzinfo=CHICAGO)


@pytest.fixture
def sub(db):
    """``sub("neuro")`` → the Subspecialty row."""

    def get(code: str) -> Subspecialty:
        return Subspecialty.objects.get(code=code)

    return get


@pytest.fixture
def isolated_storage(settings, tmp_path):
    settings.READROOM_STORAGE_DIR = tmp_path
    storage._keys.cache_clear()
    yield tmp_path
    storage._keys.cache_clear()
