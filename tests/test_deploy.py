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
