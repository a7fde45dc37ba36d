"""docker-compose.yaml cannot run here (no Docker daemon or image registry): its structure is
checked instead, so a broken reference fails CI rather than someone's `docker compose up`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = [
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def pinned(package: str) -> str:
    (version,) = re.findall(rf"^{re.escape(package)}==([\w.]+)$", (REPO / "requirements.txt").read_text(), re.M)
    return version


def test_the_stack_has_the_airflow_3_services_and_elasticsearch(compose):
    services = compose["services"]
    assert set(AIRFLOW_SERVICES + ["postgres", "redis", "elasticsearch", "es-setup"]) <= set(services)
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES[:-1]}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-worker": "celery worker",
        "airflow-triggerer": "triggerer",
    }


def test_every_long_running_service_has_a_healthcheck_and_waits_for_what_it_needs(compose):
    services = compose["services"]
    for name, service in services.items():
        if name != "airflow-init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{name} waits for {dependency}'s health, it has none"
    for name in AIRFLOW_SERVICES:
        assert {"postgres", "redis", "elasticsearch"} <= set(services[name]["depends_on"]), name
        if name != "airflow-init":
            assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_mounted_paths_and_build_files_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
        if "build" in service:
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    mounts = compose["services"]["airflow-scheduler"]["volumes"]
    assert {
        "./dags:/opt/airflow/dags:ro",
        "./plugins:/opt/airflow/plugins:ro",
        "./include:/opt/airflow/include:ro",
    } <= set(mounts)


def test_images_match_the_pinned_versions(compose):
    services = compose["services"]
    es_image = services["elasticsearch"]["image"]
    assert es_image.rsplit(":", 1)[1].split(".")[0] == pinned("elasticsearch").split(".")[0]
    assert services["airflow-scheduler"]["image"].endswith(":" + pinned("apache-airflow"))
    dockerfile = (REPO / "docker" / "airflow" / "Dockerfile").read_text()
    assert f"FROM apache/airflow:{pinned('apache-airflow')}-python3.11" in dockerfile


def test_elasticsearch_runs_with_security_and_tls_and_airflow_connects_over_https(compose):
    es = compose["services"]["elasticsearch"]["environment"]
    assert es["xpack.security.enabled"] == "true" and es["xpack.security.http.ssl.enabled"] == "true"
    connection = compose["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"]
    assert (
        connection.startswith("elasticsearch://elastic:${ELASTIC_PASSWORD")
        and "/https?ca_certs=/certs/ca/ca.crt" in connection
    )


def test_no_secret_is_written_in_the_compose_file_or_the_env_example(compose):
    # every password comes from .env
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert all(value.startswith("change-me") or value == "" for key, value in example.items() if "PASSWORD" in key)
    assert ".env" in (REPO / ".gitignore").read_text().split()
