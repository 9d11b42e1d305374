"""One migrated PostgreSQL template per xdist run; each worker's test database is a copy of it.

pytest-django gives every xdist worker its own test database (``test_<name>_gwN``) and would run all
the migrations in each, at the same time, on a 2-core machine: about a minute of CPU per worker.
Here the first worker to take the run's lock migrates ``test_<name>_xdist`` once; every worker's
database is then ``CREATE DATABASE … TEMPLATE`` of it (seconds), and Django's migrate on the copy only
finds everything applied. The controller drops the template when the run ends (docs/testing.md)."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

READY = "migrated"


def template_name(settings_dict: dict) -> str:
    return f"test_{settings_dict['NAME']}_xdist"


def _lock_path() -> Path:
    # The same file for every worker of one run (xdist sets the run's id in each worker's environment).
    return Path(tempfile.gettempdir()) / f"readroom-xdist-{os.environ['PYTEST_XDIST_TESTRUNUID']}.lock"


def template_ready(connection) -> str:
    """The run's migrated template, made by whichever worker gets here first; its name."""
    settings_dict = connection.settings_dict
    template = template_name(settings_dict)
    with _lock_path().open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        lock.seek(0)
        if lock.read() != READY:
            _migrate_into(connection, template)
            lock.seek(0)
            lock.truncate()
            lock.write(READY)
    return template


def _migrate_into(connection, template: str) -> None:
    """create_test_db under the template's name, then the worker's own names back (create_test_db
    points the settings at the database it made)."""
    from django.conf import settings

    alias = connection.alias
    name, test = settings.DATABASES[alias]["NAME"], dict(settings.DATABASES[alias]["TEST"])
    settings.DATABASES[alias]["TEST"] = {**test, "NAME": template}
    connection.settings_dict["TEST"] = settings.DATABASES[alias]["TEST"]
    try:
        connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    finally:
        connection.close()  # CREATE DATABASE … TEMPLATE refuses a template with sessions on it
        settings.DATABASES[alias]["NAME"] = connection.settings_dict["NAME"] = name
        settings.DATABASES[alias]["TEST"] = connection.settings_dict["TEST"] = test


def template_drop(settings_dict: dict) -> None:
    """From the controller once every worker is done: the template is no test's database."""
    import psycopg

    with psycopg.connect(
        dbname="postgres",
        host=settings_dict.get("HOST") or "127.0.0.1",
        port=settings_dict.get("PORT") or 5432,
        user=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{template_name(settings_dict)}" WITH (FORCE)')
