"""Several nodes, one installation (issue 16, docs/deployment.md): two ``manage.py dicom_scp``
processes and two uvicorn processes on the same PostgreSQL database and the same S3-API bucket
(moto in server mode), each with an empty data directory of its own. A series sent to one SCP by
dcmtk's storescu is read back from the *other* web process over DICOMweb, and the other way round;
a reader of another facility gets nothing from either."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.db import connection
from pydicom import dcmread

from accounts.tokens import api_token_issue
from imaging.models import Instance
from tests.interfaces.test_dicom_scp import dcmtk, write_series
from tests.net import free_port, port_open, wait_until
from tests.s3 import object_raw

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="several processes share PostgreSQL"),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the production topology needs Redis"),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
]


@pytest.fixture
def nodes(moto_server, s3_bucket, chicago_interfaces, tmp_path):
    """Two SCPs and two web processes as separate machines would run them: same env, own disks."""
    database = connection.settings_dict["NAME"]
    env = {
        **os.environ,
        **moto_server.env(s3_bucket),
        "DJANGO_SETTINGS_MODULE": "radiology.settings.production",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "SECRET_KEY": "multinode-test-secret-" + "k" * 40,
        "READROOM_STORAGE_KEY": base64.b64encode(b"m" * 32).decode(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
    }
    processes, ports = [], {}
    with contextlib.ExitStack() as stack:
        for name in ("scp1", "scp2", "web1", "web2"):
            data = tmp_path / name
            data.mkdir()
            ports[name] = port = free_port()
            command = (
                ["manage.py", "dicom_scp", "--port", str(port)]
                if name.startswith("scp")
                else [
                    "-m",
                    "uvicorn",
                    "radiology.asgi:application",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ]
            )
            log = stack.enter_context((tmp_path / f"{name}.log").open("wb"))
            process = subprocess.Popen(
                [sys.executable, *command],
                cwd=ROOT,
                env={**env, "READROOM_DATA_DIR": str(data), "READROOM_STORAGE_DIR": str(data / "storage")},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            processes.append(process)
        try:
            for port in ports.values():
                wait_until(lambda port=port: port_open(port), timeout=90, message="a node did not start")
            yield ports, tmp_path
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
            _server_sessions_end()


def _server_sessions_end() -> None:
    """The nodes' database sessions, ended so the test database can be flushed and dropped."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def _dicomweb(port: int, user) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {api_token_issue(user=user).key}"
    session.base = f"http://127.0.0.1:{port}/dicomweb"
    return session


def test_a_series_stored_through_one_scp_is_read_from_the_other_web_node(
    nodes, moto_server, s3_bucket, ops_omar, dr_msk_wi, tmp_path
):
    ports, root = nodes
    sent = {}
    # when one series goes to each SCP (as a TCP balancer would spread two modalities' associations)
    for scp, seed in (("scp1", 31), ("scp2", 32)):
        _exam, paths = write_series(_dir(tmp_path, scp), slices=2, seed=seed)
        result = dcmtk(
            "storescu",
            "-aet",
            "LAKESHORE_CT1",
            "-aec",
            "READROOM",
            "127.0.0.1",
            str(ports[scp]),
            *map(str, paths),
        )
        assert result.returncode == 0, result.stderr
        sent[scp] = {dcmread(p).SOPInstanceUID: dcmread(p) for p in paths}
    # then both are indexed, each object is in the shared bucket and no node kept an image on its disk
    assert Instance.objects.count() == 4
    for instance in Instance.objects.all():
        assert object_raw(moto_server, s3_bucket, instance.storage_path).startswith(b"RRE1")
    assert not [p for p in root.glob("*/storage/**/*") if p.is_file()]
    # and the *other* web node serves each series (QIDO, then WADO of every instance)
    for scp, web in (("scp1", "web2"), ("scp2", "web1")):
        session = _dicomweb(ports[web], ops_omar)
        first = next(iter(sent[scp].values()))
        found = session.get(f"{session.base}/studies", params={"StudyInstanceUID": first.StudyInstanceUID})
        assert found.status_code == 200 and len(found.json()) == 1, found.text
        for sop_uid, ds in sent[scp].items():
            series = f"{session.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            url = f"{series}/instances/{sop_uid}"
            answer = session.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
            assert answer.status_code == 200, answer.text[:300]
            assert sop_uid.encode() in answer.content and b"DICM" in answer.content
    # and a reader licensed only in WI gets nothing of Lakeshore's (IL) from either node
    for web in ("web1", "web2"):
        session = _dicomweb(ports[web], dr_msk_wi)
        first = next(iter(sent["scp1"].values()))
        answer = session.get(f"{session.base}/studies", params={"StudyInstanceUID": first.StudyInstanceUID})
        assert answer.status_code in (200, 204) and not (answer.content and answer.json()), answer.text[:300]


def _dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"series-{name}"
    path.mkdir()
    return path
