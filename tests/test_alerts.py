"""Alerting: the inflow watchdog on a planted gap, its notifications to a real HTTP receiver on
127.0.0.1 (webhook and Slack), the alerts table, and the failure and deadline callbacks."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from warehouse_rows import load, row

from vecflow.alerts import Alert, Notifier, WatchdogSettings, deadline_alert, deadline_missed_callback, run_watchdog
from vecflow.config import ConfigError, settings

REPO = Path(__file__).resolve().parents[1]
UTC = dt.UTC
BACKOFF = 0.01  # seconds before the first retry, doubled for the next
DAYS = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(8)]
GAP = dt.date(2026, 3, 5)  # shop_b sends nothing (or too little) for this partition
VECTORS_PER_DAY = {"shop_a": 6, "shop_b": 5}
SETTINGS = WatchdogSettings(grace_hours=3, baseline_days=3, min_vectors=2, min_ratio=0.5)


def at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), UTC)


# two checks a day, in order: 04:00 checks yesterday's partition first, 10:00 checks it again
CHECKS = [at(day, hour) for day in DAYS[3:] for hour in (4, 10)]


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, json.loads(body)))
        self.send_response(self.server.answer(self.path))
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class Receiver(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that answers every POST with `status` (after 500 to the first
    `failures[path]` POSTs to a path) and keeps its path and JSON body."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.received: list[tuple[str, dict]] = []
        self.status = 200
        self.failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def answer(self, path: str) -> int:
        with self._lock:
            if self.failures.get(path, 0) > 0:
                self.failures[path] -= 1
                return 500
        return self.status

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def bodies(self, path: str) -> list[dict]:
        return [body for p, body in self.received if p == path]


@pytest.fixture
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def plant_inflow(warehouse, gap_vectors: int, gap_arrives: dt.datetime | None = None) -> None:
    """A partition a day for each source, landed at 01:00 the next day; shop_b has `gap_vectors` in
    the GAP partition, landed at `gap_arrives` if given."""
    for day in DAYS:
        rows = []
        for source, count in VECTORS_PER_DAY.items():
            late = source == "shop_b" and day == GAP
            arrived = gap_arrives if late and gap_arrives else at(day + dt.timedelta(days=1), 1)
            for i in range(gap_vectors if late else count):
                rows.append({**row(f"{source}-{day}-{i}", day, at=arrived.isoformat()), "source": source})
        load(warehouse, rows, day, run_id=f"run-{day}")


def watch(warehouse, receiver, checks) -> dict[dt.datetime, list[dict]]:
    """Runs the watchdog at each check time in order; the alert rows each check recorded."""
    notifier = Notifier(webhook_url=receiver.url("/hook"), backoff_seconds=BACKOFF)
    return {now: run_watchdog(SETTINGS, warehouse, now, f"watchdog-{now:%Y%m%dT%H}", notifier) for now in checks}


@pytest.fixture
def alerting_warehouse(warehouse):
    warehouse.run("create_alert_tables")
    return warehouse


@pytest.mark.parametrize("gap_vectors, kind", [(0, "inflow_missing"), (1, "inflow_low")])
def test_a_gap_alerts_once_and_recovers_once(alerting_warehouse, receiver, gap_vectors, kind):
    plant_inflow(alerting_warehouse, gap_vectors)
    recorded = watch(alerting_warehouse, receiver, CHECKS)

    opened, recovered = at(GAP + dt.timedelta(days=1), 4), at(GAP + dt.timedelta(days=2), 4)
    assert {now: [r["kind"] for r in rows] for now, rows in recorded.items() if rows} == {
        opened: [kind],
        recovered: ["recovered"],
    }
    assert recorded[at(GAP + dt.timedelta(days=1), 10)] == []  # the second check during the gap sends nothing
    alert, recovery = receiver.bodies("/hook")
    assert len(receiver.received) == 2
    incident = f"inflow:shop_b:{GAP}"
    assert (
        alert
        | {
            "alert_key": "inflow:shop_b",
            "kind": kind,
            "source": "shop_b",
            "observed": gap_vectors,
            "incident_id": incident,
            "status": "open",
            "window_start": f"{GAP}T00:00:00+00:00",
        }
        == alert
    )
    assert alert["severity"] == ("critical" if kind == "inflow_missing" else "warning")
    assert alert["text"] == alert["message"] and f"partition {GAP}" in alert["message"]
    assert recovery | {"kind": "recovered", "incident_id": incident, "status": "resolved", "observed": 5} == recovery

    table = alerting_warehouse.table("alerts").sort_values("raised_at").reset_index(drop=True)
    assert table[["alert_key", "kind", "incident_id", "status", "channels"]].to_dict("records") == [
        {
            "alert_key": "inflow:shop_b",
            "kind": kind,
            "incident_id": incident,
            "status": "resolved",
            "channels": "webhook:sent",
        },
        {
            "alert_key": "inflow:shop_b",
            "kind": "recovered",
            "incident_id": incident,
            "status": "resolved",
            "channels": "webhook:sent",
        },
    ]
    assert list(table["raised_at"]) == [pd.Timestamp(opened), pd.Timestamp(recovered)]
    assert table["sent_at"].notna().all()
    assert json.loads(table.loc[0, "details"])["partition_date"] == GAP.isoformat()
    assert table.loc[0, "expected"] == 5.0  # shop_b: 5 vectors in each of the 3 partitions before


def test_a_late_partition_resolves_its_incident_at_the_next_check(alerting_warehouse, receiver):
    """The check counts only vectors embedded by its time, so each check sees what had arrived."""
    day_after = GAP + dt.timedelta(days=1)
    plant_inflow(alerting_warehouse, gap_vectors=5, gap_arrives=at(day_after, 7))
    recorded = watch(alerting_warehouse, receiver, [at(day_after, 4), at(day_after, 10)])
    assert [[r["kind"] for r in rows] for rows in recorded.values()] == [["inflow_missing"], ["recovered"]]
    assert [body["kind"] for body in receiver.bodies("/hook")] == ["inflow_missing", "recovered"]


def test_a_failed_send_is_retried_logged_and_still_recorded(alerting_warehouse, receiver, caplog):
    plant_inflow(alerting_warehouse, gap_vectors=0)
    receiver.status = 500
    [row] = watch(alerting_warehouse, receiver, [at(GAP + dt.timedelta(days=1), 4)])[at(GAP + dt.timedelta(days=1), 4)]
    assert len(receiver.bodies("/hook")) == 3  # every attempt reached the receiver
    assert "alert inflow:shop_b not sent to webhook" in caplog.text
    assert row["channels"] == "webhook:failed" and row["sent_at"] is None
    [recorded] = alerting_warehouse.table("alerts").to_dict("records")
    assert recorded["channels"] == "webhook:failed" and recorded["status"] == "open" and pd.isna(recorded["sent_at"])


def _alert() -> Alert:
    return Alert(
        alert_key="inflow:shop_b",
        kind="inflow_missing",
        severity="critical",
        message="Vector inflow missing for source shop_b",
        raised_at=at(GAP, 4),
    )


@pytest.fixture
def connections(receiver, monkeypatch):
    """Connections to the receiver: vecflow_alerts (HTTP, the webhook URL as host) and vecflow_slack."""
    monkeypatch.setenv("AIRFLOW_CONN_VECFLOW_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url("/hook")}))
    # the Slack provider takes a full webhook URL from the connection's password
    monkeypatch.setenv(
        "AIRFLOW_CONN_VECFLOW_SLACK", json.dumps({"conn_type": "slackwebhook", "password": receiver.url("/slack")})
    )


def test_webhook_connection_and_slack_provider_reach_the_receiver(receiver, connections, monkeypatch):
    monkeypatch.setenv("VECFLOW_ALERT_WEBHOOK_CONN_ID", "vecflow_alerts")
    monkeypatch.setenv("VECFLOW_ALERT_SLACK_CONN_ID", "vecflow_slack")

    delivery = Notifier.from_environment().send(_alert())

    assert delivery.channels == "webhook:sent,slack:sent" and delivery.sent_at is not None
    [webhook] = receiver.bodies("/hook")
    assert webhook["alert_key"] == "inflow:shop_b" and webhook["raised_at"] == "2026-03-05T04:00:00+00:00"
    assert receiver.bodies("/slack") == [{"text": "[critical] Vector inflow missing for source shop_b"}]


def test_the_alert_text_is_sent_as_it_is(receiver, connections):
    """Not rendered as a Jinja template, as a notifier's template fields would be."""
    alert = Alert(
        alert_key="task:d.t",
        kind="task_failed",
        severity="error",
        message="Task failed: {{ ti }}",
        raised_at=at(GAP, 4),
    )
    delivery = Notifier(webhook_conn_id="vecflow_alerts", slack_conn_id="vecflow_slack").send(alert)
    assert delivery.channels == "webhook:sent,slack:sent"
    assert receiver.bodies("/slack") == [{"text": "[error] Task failed: {{ ti }}"}]
    assert receiver.bodies("/hook")[0]["text"] == "Task failed: {{ ti }}"


def test_a_transient_failure_is_retried_and_delivered(receiver, connections):
    receiver.failures = {"/hook": 1, "/slack": 1}
    notifier = Notifier(webhook_conn_id="vecflow_alerts", slack_conn_id="vecflow_slack", backoff_seconds=BACKOFF)
    delivery = notifier.send(_alert())
    assert delivery.channels == "webhook:sent,slack:sent" and delivery.sent_at is not None
    first, retry = receiver.bodies("/hook")
    assert first == retry and first["alert_key"] == "inflow:shop_b"
    assert len(receiver.bodies("/slack")) == 2


def test_a_client_error_is_not_retried(receiver, caplog):
    receiver.status = 404
    delivery = Notifier(webhook_url=receiver.url("/hook"), backoff_seconds=BACKOFF).send(_alert())
    assert delivery.channels == "webhook:failed" and delivery.sent_at is None
    assert len(receiver.bodies("/hook")) == 1
    assert "404:Not Found" in caplog.text


@pytest.fixture
def refusing_url():
    """A URL on 127.0.0.1 whose port is held but not listened on: every connection to it is refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}/hook"


def test_an_unreachable_channel_fails_without_stopping_the_others(receiver, connections, refusing_url, caplog):
    notifier = Notifier(webhook_url=refusing_url, slack_conn_id="vecflow_slack", backoff_seconds=BACKOFF)
    delivery = notifier.send(_alert())
    assert delivery.channels == "webhook:failed,slack:sent" and delivery.sent_at is not None
    assert caplog.text.count("Retrying") == 2 and "alert inflow:shop_b not sent to webhook" in caplog.text
    assert receiver.bodies("/slack") == [{"text": "[critical] Vector inflow missing for source shop_b"}]


def test_a_webhook_connection_without_a_url_fails_its_channel_with_a_clear_message(receiver, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_VECFLOW_ALERTS", "http://127.0.0.1:9/hook")  # a URI: the host is only 127.0.0.1
    monkeypatch.setenv("VECFLOW_ALERT_WEBHOOK_CONN_ID", "vecflow_alerts")
    delivery = Notifier.from_environment().send(_alert())
    assert delivery.channels == "webhook:failed" and delivery.sent_at is None
    assert "must hold the full webhook URL in its host" in caplog.text
    assert "Retrying" not in caplog.text  # a misconfiguration is not retried


@pytest.mark.parametrize(
    "variable, value, make",
    [
        ("VECFLOW_WATCHDOG_GRACE_HOURS", "-1", lambda: settings().watchdog),
        ("VECFLOW_WATCHDOG_BASELINE_DAYS", "0", lambda: settings().watchdog),
        ("VECFLOW_WATCHDOG_MIN_VECTORS", "many", lambda: settings().watchdog),
        ("VECFLOW_WATCHDOG_MIN_RATIO", "1.5", lambda: settings().watchdog),
        ("VECFLOW_ALERT_WEBHOOK_URL", "hooks.example.com/x", Notifier.from_environment),
        ("VECFLOW_DAILY_DEADLINE_MINUTES", "soon", deadline_alert),
    ],
)
def test_a_bad_setting_is_an_error_naming_it(monkeypatch, variable, value, make):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        make()


def test_a_webhook_url_and_connection_together_are_an_error(monkeypatch):
    monkeypatch.setenv("VECFLOW_ALERT_WEBHOOK_URL", "https://hooks.example.com/x")
    monkeypatch.setenv("VECFLOW_ALERT_WEBHOOK_CONN_ID", "vecflow_alerts")
    with pytest.raises(ConfigError, match="VECFLOW_ALERT_WEBHOOK_URL or VECFLOW_ALERT_WEBHOOK_CONN_ID"):
        Notifier.from_environment()


@pytest.fixture
def local_warehouse(vecflow_home):
    """The warehouse that tasks and callbacks open (DuckDB under VECFLOW_HOME), bootstrapped."""
    from vecflow.warehouse import bootstrap, get_warehouse

    warehouse = get_warehouse()
    bootstrap(warehouse)
    warehouse.run("create_alert_tables")
    return warehouse


def watchdog_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "vecflow_watchdog.py"))
    assert bag.import_errors == {}
    return bag.get_dag("vecflow_watchdog")


def test_a_failed_task_sends_one_alert(airflow_db, local_warehouse, receiver, monkeypatch):
    """A real failure: the watchdog task of a run with a malformed setting, without retries."""
    from vecflow.alerts import task_failure_callback

    monkeypatch.setenv("VECFLOW_ALERT_WEBHOOK_URL", receiver.url("/hook"))
    monkeypatch.setenv("VECFLOW_WATCHDOG_MIN_RATIO", "half")
    dag = watchdog_dag()
    task = dag.get_task("check_inflow")
    task.retries, task.on_failure_callback = 0, [task_failure_callback]

    assert dag.test(run_after=at(GAP, 4), logical_date=at(GAP, 4)).state == "failed"

    [body] = receiver.bodies("/hook")
    assert body["kind"] == "task_failed" and body["alert_key"] == "task:vecflow_watchdog.check_inflow"
    assert "VECFLOW_WATCHDOG_MIN_RATIO='half' is not a number" in body["message"]
    assert body["details"]["task_id"] == "check_inflow"
    [recorded] = local_warehouse.table("alerts").to_dict("records")
    assert recorded["kind"] == "task_failed" and recorded["channels"] == "webhook:sent"


def test_the_watchdog_dag_alerts_through_airflow(airflow_db, local_warehouse, receiver, monkeypatch):
    monkeypatch.setenv("VECFLOW_ALERT_WEBHOOK_URL", receiver.url("/hook"))
    monkeypatch.setenv("VECFLOW_WATCHDOG_BASELINE_DAYS", "3")
    plant_inflow(local_warehouse, gap_vectors=0)
    dag = watchdog_dag()

    checks = [at(GAP + dt.timedelta(days=1), hour) for hour in (4, 5)]  # two hourly checks during the gap
    for run_after in checks:
        assert dag.test(run_after=run_after, logical_date=run_after).state == "success"

    assert [(b["alert_key"], b["kind"]) for b in receiver.bodies("/hook")] == [("inflow:shop_b", "inflow_missing")]
    assert list(local_warehouse.table("alerts")["run_id"]) == [f"manual__{checks[0].isoformat()}"]


DEADLINE_DAG = """
from airflow.sdk import dag, task

from vecflow.alerts import deadline_alert
from vecflow.dag_defaults import DAG_KWARGS


@dag(dag_id="with_deadline", schedule=None, deadline=deadline_alert(), **DAG_KWARGS, tags=["test"])
def with_deadline():
    @task
    def work():
        pass

    work()


with_deadline()
"""


def test_deadline_alert_sets_the_dag_deadline(airflow_db, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    monkeypatch.setenv("VECFLOW_DAILY_DEADLINE_MINUTES", "45")
    (tmp_path / "with_deadline.py").write_text(DEADLINE_DAG)
    bag = DagBag(dag_folder=str(tmp_path / "with_deadline.py"))
    assert bag.import_errors == {}
    [deadline] = bag.get_dag("with_deadline").deadline
    assert isinstance(deadline, DeadlineAlert) and isinstance(deadline.callback, AsyncCallback)
    assert deadline.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert deadline.interval == dt.timedelta(minutes=45)
    assert deadline.callback.path == "vecflow.alerts.deadline_missed_callback"
    assert deadline.callback.kwargs == {"deadline_minutes": 45}


def test_a_missed_deadline_sends_one_alert(local_warehouse, receiver, monkeypatch):
    """The callback as the triggerer calls it: the run as the REST API shows it, and the deadline."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import DAGRunResponse

    monkeypatch.setenv("VECFLOW_ALERT_WEBHOOK_URL", receiver.url("/hook"))
    dag_run = {
        "dag_id": "vecflow_daily",
        "dag_run_id": "scheduled__2026-03-06T00:00:00+00:00",
        "queued_at": "2026-03-06T00:00:05+00:00",
        "state": "running",
    }
    assert set(dag_run) <= set(DAGRunResponse.model_fields)
    context = {"dag_run": dag_run, "deadline": {"id": "1", "deadline_time": at(dt.date(2026, 3, 6), 2)}}

    asyncio.run(deadline_missed_callback(context=context, deadline_minutes=120))

    [body] = receiver.bodies("/hook")
    assert body["kind"] == "deadline_missed" and body["alert_key"] == "deadline:vecflow_daily"
    assert body["run_id"] == dag_run["dag_run_id"] and "120 minutes" in body["message"]
    [recorded] = local_warehouse.table("alerts").to_dict("records")
    assert recorded["kind"] == "deadline_missed" and recorded["channels"] == "webhook:sent"
