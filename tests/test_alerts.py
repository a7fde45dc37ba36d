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
from loopback import serving
from warehouse_rows import load, row

from vecflow.alerts import Alert, Notifier, WatchdogSettings, deadline_alert, deadline_missed_callback, run_watchdog
from vecflow.config import ConfigError, settings

REPO = Path(__file__).resolve().parents[1]
UTC = dt.UTC
BACKOFF = 0.01  # seconds before the first retry, doubled for the next
DAYS = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(8)]
GAP = dt.date(2026, 3, 5)  # shop_b sends nothing (or too little) for this partition
VECTORS_PER_DAY = {"shop_a": 6, "shop_b": 5}
# reminders every 12 h: the two checks of a day, 6 h apart, send one page
SETTINGS = WatchdogSettings(grace_hours=3, baseline_days=3, min_vectors=2, min_ratio=0.5, repeat_hours=12)


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
    with serving(Receiver()) as server:
        yield server


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


# --- on-call: delivery until delivered, reminders, long outages (times passed in, no sleeping) ------

ONCALL_SOURCES = ("shop_a", "shop_b", "shop_c")
LAST_PARTITION = dt.date(2026, 11, 30)  # the last partition that arrived; the outage starts with 12-01
FIRST_CHECK = at(dt.date(2026, 12, 2), 0)
ONCALL = WatchdogSettings(grace_hours=3, baseline_days=7, min_vectors=1, min_ratio=0.5, repeat_hours=4)


def plant_history(warehouse, sources=ONCALL_SOURCES, last=LAST_PARTITION, days=30, per_day=5) -> None:
    """`per_day` vectors a day from each source for `days` partitions up to `last`, each landed at 01:00
    the next day."""
    for i in range(days):
        day = last - dt.timedelta(days=days - 1 - i)
        arrived = at(day + dt.timedelta(days=1), 1).isoformat()
        rows = [
            {**row(f"{source}-{day}-{n}", day, at=arrived), "source": source}
            for source in sources
            for n in range(per_day)
        ]
        load(warehouse, rows, day, run_id=f"run-{day}")


def hourly(start: dt.datetime, hours: int) -> list[dt.datetime]:
    return [start + dt.timedelta(hours=h) for h in range(hours)]


def check(warehouse, receiver, now, settings=ONCALL) -> list[dict]:
    notifier = Notifier(webhook_url=receiver.url("/hook"), backoff_seconds=BACKOFF)
    return run_watchdog(settings, warehouse, now, f"watchdog-{now:%Y%m%dT%H}", notifier)


@pytest.fixture
def oncall_warehouse(local_warehouse):
    plant_history(local_warehouse)
    return local_warehouse


def test_a_page_that_failed_is_delivered_once_the_webhook_is_back(oncall_warehouse, receiver):
    """Day 1 of an outage of every source with the webhook down: three alerts, recorded as failed;
    the next hourly check, webhook up, delivers those three (nothing new is raised)."""
    opened = at(dt.date(2026, 12, 2), 3)  # 12-01 is due three hours after it ended
    receiver.status = 503
    raised = check(oncall_warehouse, receiver, opened)
    assert sorted((r["source"], r["kind"], r["channels"]) for r in raised) == [
        (source, "inflow_missing", "webhook:failed") for source in ONCALL_SOURCES
    ]
    receiver.status, receiver.received[:] = 200, []

    assert check(oncall_warehouse, receiver, opened + dt.timedelta(hours=1)) == []  # no new events
    delivered = receiver.bodies("/hook")
    assert sorted((b["source"], b["kind"], b["raised_at"]) for b in delivered) == [
        (source, "inflow_missing", opened.isoformat()) for source in ONCALL_SOURCES
    ]
    assert all(b["observed"] == 0 and b["expected"] == 5.0 and b["details"]["baseline_days"] == 7 for b in delivered)
    table = oncall_warehouse.table("alerts")
    assert table["sent_at"].notna().all() and set(table["attempts"]) == {2}
    assert set(table["channels"]) == {"webhook:sent"} and set(table["status"]) == {"open"}

    receiver.received[:] = []
    check(oncall_warehouse, receiver, opened + dt.timedelta(hours=2))
    assert receiver.bodies("/hook") == []  # delivered once, not again


def test_an_open_incident_is_reminded_every_repeat_interval_until_it_resolves(oncall_warehouse, receiver):
    """An outage of every source for 9 days, checked every hour: the first page, a reminder every
    4 hours saying how long it has lasted, then one recovery each when the partitions arrive."""
    checks = hourly(FIRST_CHECK, 24 * 9)
    pages = {now: check(oncall_warehouse, receiver, now) for now in checks}
    opened = at(dt.date(2026, 12, 2), 3)
    expected_times = [t for t in (opened + dt.timedelta(hours=4 * n) for n in range(60)) if t <= checks[-1]]
    sent_at = {now: sorted(r["source"] for r in rows) for now, rows in pages.items() if rows}
    assert list(sent_at) == expected_times and all(v == list(ONCALL_SOURCES) for v in sent_at.values())
    bodies = receiver.bodies("/hook")
    assert [b["status"] for b in bodies[:3]] == ["open"] * 3 and {b["status"] for b in bodies[3:]} == {"reminder"}
    last = [b for b in bodies if b["raised_at"] == expected_times[-1].isoformat()]
    lasted = expected_times[-1] - opened
    assert all(f"Still missing for {lasted.days} d {lasted.seconds // 3600} h" in b["message"] for b in last)
    assert {b["incident_id"] for b in bodies} == {f"inflow:{s}:2026-12-01" for s in ONCALL_SOURCES}

    # the partitions of the outage land: one recovery per incident, then quiet
    for day in [dt.date(2026, 12, 1) + dt.timedelta(days=i) for i in range(10)]:
        arrived = at(dt.date(2026, 12, 11), 1).isoformat()
        rows = [{**row(f"{s}-{day}-{n}", day, at=arrived), "source": s} for s in ONCALL_SOURCES for n in range(5)]
        load(oncall_warehouse, rows, day)
    receiver.received[:] = []
    after = hourly(at(dt.date(2026, 12, 11), 4), 12)
    recovered = {now: rows for now in after if (rows := check(oncall_warehouse, receiver, now))}
    assert list(recovered) == [after[0]] and [r["kind"] for r in recovered[after[0]]] == ["recovered"] * 3
    assert [b["kind"] for b in receiver.bodies("/hook")] == ["recovered"] * 3


def test_a_watchdog_deployed_during_a_long_outage_still_alerts(oncall_warehouse, receiver):
    """Day 9 of an outage of every source, a fresh alerts table (the watchdog was down, redeployed
    or reset): every source is missing, measured against its last active week."""
    day9 = hourly(at(dt.date(2026, 12, 10), 5), 12)  # checked every hour from 05:00
    pages = {now: check(oncall_warehouse, receiver, now) for now in day9}
    raised = pages[day9[0]]
    assert sorted((r["source"], r["kind"], r["status"]) for r in raised) == [
        (s, "inflow_missing", "open") for s in ONCALL_SOURCES
    ]
    assert {r["expected"] for r in raised} == {5.0}  # the baseline of the 7 partitions up to 11-30
    assert all("up to 2026-11-30, its last with vectors" in r["message"] for r in raised)
    # then a reminder every 4 hours, nothing in between
    assert {now: [r["status"] for r in rows] for now, rows in pages.items() if rows} == {
        day9[0]: ["open"] * 3,
        day9[4]: ["reminder"] * 3,
        day9[8]: ["reminder"] * 3,
    }


def test_a_single_source_gone_for_ten_days_is_missing_alone(local_warehouse, receiver):
    plant_history(local_warehouse, sources=("shop_a", "shop_c"), last=dt.date(2026, 12, 10), days=40)
    plant_history(local_warehouse, sources=("shop_b",), last=LAST_PARTITION, days=30)
    checks = [at(dt.date(2026, 12, 2) + dt.timedelta(days=d), 4) for d in range(10)]
    raised = {now: check(local_warehouse, receiver, now, ONCALL) for now in checks}
    assert all(
        sorted((r["source"], r["kind"]) for r in rows) == [("shop_b", "inflow_missing")] for rows in raised.values()
    )
    assert [r["status"] for rows in raised.values() for r in rows] == ["open"] + ["reminder"] * 9


def test_acknowledging_stops_the_reminders_but_not_the_recovery(oncall_warehouse, receiver):
    from vecflow.alerts import NoOpenIncident, acknowledge

    opened = at(dt.date(2026, 12, 2), 3)
    check(oncall_warehouse, receiver, opened)
    reminded = check(oncall_warehouse, receiver, opened + dt.timedelta(hours=4))
    assert [r["status"] for r in reminded] == ["reminder"] * 3
    ack = acknowledge(oncall_warehouse, "inflow:shop_b", opened + dt.timedelta(hours=5), by="on-call")
    assert ack["kind"] == "acknowledged" and ack["incident_id"] == "inflow:shop_b:2026-12-01"
    with pytest.raises(NoOpenIncident, match="inflow:shop_z"):
        acknowledge(oncall_warehouse, "inflow:shop_z", opened, by="on-call")

    later = check(oncall_warehouse, receiver, opened + dt.timedelta(hours=8))
    assert sorted(r["source"] for r in later) == ["shop_a", "shop_c"]  # shop_b acknowledged: no reminder
    day = dt.date(2026, 12, 1)
    arrived = at(dt.date(2026, 12, 2), 12).isoformat()
    late = [{**row(f"{s}-{day}-late{n}", day, at=arrived), "source": s} for s in ONCALL_SOURCES for n in range(5)]
    load(oncall_warehouse, late, day)
    receiver.received[:] = []
    recovered = check(oncall_warehouse, receiver, opened + dt.timedelta(hours=10))
    assert sorted((r["source"], r["kind"]) for r in recovered) == [(s, "recovered") for s in ONCALL_SOURCES]
    assert check(oncall_warehouse, receiver, opened + dt.timedelta(hours=14)) == []  # recovered once
    assert [b["kind"] for b in receiver.bodies("/hook")] == ["recovered"] * 3


def test_the_ack_command_records_the_acknowledgement(oncall_warehouse, receiver, capsys):
    from vecflow.cli import main

    check(oncall_warehouse, receiver, at(dt.date(2026, 12, 2), 3))
    assert main(["alerts", "ack", "inflow:shop_a", "--by", "alice"]) == 0
    assert "acknowledged by alice" in capsys.readouterr().out
    acks = oncall_warehouse.table("alerts").query("kind == 'acknowledged'")
    assert list(acks["incident_id"]) == ["inflow:shop_a:2026-12-01"] and acks["sent_at"].isna().all()
    assert main(["alerts", "ack", "inflow:nobody"]) == 1


def test_expected_sources_alert_on_an_empty_warehouse_and_retired_ones_never(local_warehouse, receiver):
    settings = WatchdogSettings(
        grace_hours=3, baseline_days=7, min_vectors=1, min_ratio=0.5, expected_sources=("shop_new",)
    )
    [raised] = check(local_warehouse, receiver, FIRST_CHECK, settings)
    assert (raised["source"], raised["kind"], raised["expected"]) == ("shop_new", "inflow_missing", 0.0)

    plant_history(local_warehouse)
    retiring = WatchdogSettings(
        grace_hours=3, baseline_days=7, min_vectors=1, min_ratio=0.5, retired_sources=("shop_a", "shop_b")
    )
    assert [r["source"] for r in check(local_warehouse, receiver, at(dt.date(2026, 12, 2), 3), retiring)] == ["shop_c"]
