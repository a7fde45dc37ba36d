"""An Elasticsearch client from an Airflow Connection (credentials never live in code).

Connection fields: host, port (9200), schema `http` or `https`, login/password for basic auth, and
extras: api_key (instead of login), verify_certs (default true), ca_certs (a CA bundle path),
request_timeout (seconds, 30), max_retries (3). Example:
`AIRFLOW_CONN_ELASTICSEARCH_DEFAULT='elasticsearch://elastic:secret@es.internal:9200/https?ca_certs=/etc/ssl/es-ca.pem'`.
"""

from __future__ import annotations

from vecflow.config import ConfigError

RETRY_ON_STATUS = (429, 502, 503, 504)


def _flag(value, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def client_from_connection(conn):
    from elasticsearch import Elasticsearch

    if not conn.host:
        raise ConfigError(f"connection {conn.conn_id!r} has no host")
    extra = conn.extra_dejson
    scheme = (conn.schema or "http").lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"connection {conn.conn_id!r}: schema must be http or https, not {scheme!r}")
    options = {
        "request_timeout": float(extra.get("request_timeout", 30)),
        "max_retries": int(extra.get("max_retries", 3)),
        "retry_on_timeout": True,
        "retry_on_status": RETRY_ON_STATUS,
    }
    if extra.get("api_key"):
        options["api_key"] = extra["api_key"]
    elif conn.login:
        options["basic_auth"] = (conn.login, conn.password or "")
    if scheme == "https":
        options["verify_certs"] = _flag(extra.get("verify_certs"), True)
        if extra.get("ca_certs"):
            options["ca_certs"] = extra["ca_certs"]
    return Elasticsearch(f"{scheme}://{conn.host}:{conn.port or 9200}", **options)


def search_client(conn_id: str):
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ConfigError(
            f"Airflow connection {conn_id!r} is not defined: set AIRFLOW_CONN_{conn_id.upper()} (or add it in "
            "the UI), or turn the sink off with VECFLOW_SEARCH_SINK=none"
        ) from None
    return client_from_connection(conn)
