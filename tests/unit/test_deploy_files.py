"""deploy/: the settings file every replica and the proxy read names real settings, and the proxy
config gets every variable it uses, in compose and in the drill (checks/scale_drill.py)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.settings import OPTIONS
from checks.scale_drill_topology import deploy_env

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROXY_VARS = set(re.findall(r"\$\{(\w+)\}", (DEPLOY / "haproxy.cfg").read_text()))
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_every_setting_in_playground_env_is_one_the_app_or_the_proxy_reads():
    # A misspelt name would be ignored without a word, and the replicas run on defaults.
    known = {o.env for o in OPTIONS} | PROXY_VARS
    assert set(deploy_env()) - known == set()


def test_compose_gives_the_proxy_every_variable_its_config_uses():
    proxy = COMPOSE["services"]["proxy"]
    assert proxy["env_file"] == "playground.env"
    assert PROXY_VARS - set(proxy["environment"]) - set(deploy_env()) == set()


def test_compose_replicas_share_the_engine_the_database_and_the_index():
    apps = [COMPOSE["services"][name] for name in ("app1", "app2")]
    for app in apps:
        assert app["env_file"] == "playground.env"
        assert {"ENGINE_URL", "DATABASE_URL", "INDEX_URL"} <= set(app["environment"])
    assert apps[0]["environment"] == apps[1]["environment"]
    assert deploy_env()["TRUSTED_PROXY_HEADER"] == "x-forwarded-for"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_config_with_these_settings():
    env = {**deploy_env(), "PROXY_BIND": "127.0.0.1:8080", "APP1": "app1:7860", "APP2": "app2:7860"}
    out = subprocess.run(
        [shutil.which("haproxy"), "-c", "-f", str(DEPLOY / "haproxy.cfg")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
