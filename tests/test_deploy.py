"""The deployment files say what the product does (docs/deployment.md): compose runs two of each
edge and web process behind the balancers the docs name, and nothing is masked or promised later."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_compose_runs_two_web_two_scp_two_listeners_behind_nginx_with_the_shared_services():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    commands = {name: " ".join(map(str, s.get("command") or [])) for name, s in services.items()}
    assert sum("uvicorn radiology.asgi:application" in c for c in commands.values()) == 2
    assert sum("manage.py dicom_scp" in c for c in commands.values()) == 2
    assert sum("manage.py hl7_listener" in c for c in commands.values()) == 2
    assert sum(" beat " in f" {c} " for c in commands.values()) == 1
    assert any("celery -A radiology worker" in c for c in commands.values())
    assert {"postgres", "redis", "minio", "nginx"} <= set(services)
    # only the balancer publishes ports; every ReadRoom process shares the bucket
    assert [name for name, s in services.items() if s.get("ports")] == ["nginx"]
    for name, command in commands.items():
        if "radiology" in command or "manage.py" in command:
            assert services[name]["environment"]["READROOM_S3_BUCKET"] == "readroom", name


def test_the_balancer_spreads_http_websockets_mllp_and_dicom_over_both_processes():
    conf = (DEPLOY / "nginx" / "compose.conf").read_text()
    services = set(yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"])
    for upstream, port in (("readroom_web", 8000), ("readroom_hl7", 2575), ("readroom_dicom", 11112)):
        block = re.search(rf"upstream {upstream} \{{(.*?)\}}", conf, re.S).group(1)
        servers = re.findall(rf"server ([\w-]+):{port};", block)
        assert len(servers) == 2 and set(servers) <= services, upstream
    assert "stream {" in conf and "proxy_set_header Upgrade" in conf


def test_no_deploy_file_masks_the_listeners_or_waits_for_later_work():
    for path in [*DEPLOY.rglob("*"), DEPLOY.parent / "README.md"]:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "ingest work" not in text and "mask readroom-hl7" not in text, path


def test_every_web_command_line_stops_gracefully_within_its_process_managers_stop_timeout():
    """uvicorn's --timeout-graceful-shutdown bounds a stop; each process manager waits longer before
    it kills (docs/deployment.md "Stopping"; the behaviour: tests/hardening/test_web_process.py)."""
    lines = {
        "Procfile": (DEPLOY / "Procfile").read_text(),
        "systemd": (DEPLOY / "systemd" / "readroom-web.service").read_text(),
        "Dockerfile": (DEPLOY / "Dockerfile").read_text(),
        "compose": (DEPLOY / "compose.yaml").read_text(),
    }
    for name, text in lines.items():
        web = [line for line in text.splitlines() if "radiology.asgi:application" in line]
        assert web, name
        joined = text.replace('",\n            "', '", "')
        assert re.search(r'--timeout-graceful-shutdown"?,? "?20\b', joined), name
    assert re.search(r"^TimeoutStopSec=30$", lines["systemd"], re.M)
    assert yaml.safe_load(lines["compose"])["x-web"]["stop_grace_period"] == "30s"


def test_nginx_logs_requests_without_their_query_strings():
    for conf in ("readroom.conf", "compose.conf"):
        text = (DEPLOY / "nginx" / conf).read_text()
        fmt = re.search(r"log_format readroom_noquery (.*?);", text, re.S).group(1)
        assert "$uri" in fmt and "$request " not in fmt and "$request_uri" not in fmt, conf
        assert "$args" not in fmt and "$query_string" not in fmt and "$http_referer" not in fmt, conf
        assert re.search(r"access_log \S+ readroom_noquery;", text), conf
