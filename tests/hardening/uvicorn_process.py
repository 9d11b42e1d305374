"""A real uvicorn process serving the production settings (the web tier as deployed), for the tests
that need what only a process shows: its pool, its access log, its signals."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.net import free_port, port_open, wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WebProcess:
    url: str
    log: Path
    process: subprocess.Popen
    port: int


def database_url() -> str:
    """The test database, for a server process of its own."""
    return f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}"


@contextlib.contextmanager
def uvicorn_server(
    tmp_path: Path,
    database_url: str,
    pool_size: int = 4,
    collectstatic: bool = False,
    args: tuple[str, ...] = (),
    log_level: str = "WARNING",
) -> Iterator[WebProcess]:
    """uvicorn with ``args`` (e.g. the deployed command line's flags); the Django log at
    ``log_level``, uvicorn's own (access log included) at its default, all into ``WebProcess.log``."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "radiology.settings.production",
        "DATABASE_URL": database_url,
        # this process's key: a session made here (``Client.force_login``) is valid there
        "SECRET_KEY": settings.SECRET_KEY,
        "READROOM_STORAGE_KEY": base64.b64encode(b"h" * 32).decode(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "READROOM_DB_POOL_MAX_SIZE": str(pool_size),
        "READROOM_DB_POOL_TIMEOUT": "2",
        "READROOM_DATA_DIR": str(tmp_path),
        "LOG_LEVEL": log_level,
    }
    if collectstatic:  # as deploy/Dockerfile does: error pages use the manifest of static files
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
        )
    log_path = tmp_path / f"uvicorn-{port}.log"
    command = [sys.executable, "-m", "uvicorn", "radiology.asgi:application", "--port", str(port), *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: port_open(port) or process.poll() is not None, timeout=90)
            assert process.poll() is None, log_path.read_text()
            yield WebProcess(f"http://127.0.0.1:{port}", log_path, process, port)
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(30)
            server_sessions_end()
            print(log_path.read_text()[-6000:])  # shown on failure


def server_sessions_end() -> None:
    """The server process's database sessions, ended so the test database can be dropped."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
