"""Alerts: the inflow watchdog, task-failure and deadline callbacks, and the notifier they share.

Every alert is sent through the Notifier and recorded in the warehouse's `alerts` table
(include/sql/create_alert_tables.sql). Channels, from the environment, each an Airflow notifier:
  VECFLOW_ALERT_WEBHOOK_URL       a JSON webhook URL, or
  VECFLOW_ALERT_WEBHOOK_CONN_ID   an Airflow HTTP Connection whose host is the full webhook URL
                                  (WebhookNotifier, through the HTTP provider's HttpHook);
  VECFLOW_ALERT_SLACK_CONN_ID     a Slack Incoming Webhook connection (the Slack provider's
                                  SlackWebhookNotifier).
The watchdog's settings are the `watchdog` group of vecflow.config (thresholds, expected and
retired sources, VECFLOW_ALERT_REPEAT_HOURS); the daily run's deadline: VECFLOW_DAILY_DEADLINE_MINUTES.

What on-call receives: an inflow incident's first page when a source goes missing or low, a reminder
every repeat interval while it stays open (until it is acknowledged with `alerts ack KEY`), and one
recovery message. An event that no channel took is sent again by every later check until one does.

Only light modules are imported at the top: DAG files import this one at parse time (BaseNotifier
comes with airflow.sdk, which they have loaded); the providers' hooks and notifiers are imported
where used.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from dataclasses import asdict, dataclass, field

from airflow.sdk import BaseNotifier

from vecflow.config import ConfigError, WatchdogSettings
from vecflow.config import settings as load_settings

log = logging.getLogger(__name__)

INFLOW_KEY_PREFIX = "inflow:"
SEND_ATTEMPTS = 3
SEND_BACKOFF_SECONDS = 0.5  # doubled after each failed attempt
SEND_TIMEOUT_SECONDS = 10


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _is_null(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value) in ("NaT", "<NA>")


def _plain(value):
    """None for a warehouse NULL, a Python value for a numpy scalar, else the value."""
    import numpy as np

    if _is_null(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _as_utc(moment) -> dt.datetime:
    """A datetime in UTC from a warehouse timestamp (pandas or datetime, naive meaning UTC)."""
    moment = moment.to_pydatetime() if hasattr(moment, "to_pydatetime") else moment
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _duration(delta: dt.timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24} d {hours % 24} h" if hours >= 24 else f"{hours} h"


@dataclass(frozen=True)
class Alert:
    """One alert event: the alerts table's columns, less how it was delivered."""

    alert_key: str
    kind: str
    severity: str
    message: str
    raised_at: dt.datetime
    run_id: str | None = None
    source: str | None = None
    details: dict = field(default_factory=dict)
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    observed: int | None = None
    expected: float | None = None
    incident_id: str | None = None
    status: str | None = None
    alert_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def payload(self) -> dict:
        """The webhook's JSON body: every field, timestamps in ISO 8601, and the message also as
        `text`, the field that Slack-compatible receivers display."""
        fields = {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in asdict(self).items()}
        return {"text": self.message, **fields}

    def row(self, delivery: Delivery) -> dict:
        """The alerts table row: this alert and how it was delivered."""
        return {
            **asdict(self),
            "details": json.dumps(self.details, sort_keys=True, default=str),
            "sent_at": delivery.sent_at,
            "channels": delivery.channels,
            "attempts": 1 if delivery.outcomes else 0,
        }

    @classmethod
    def from_row(cls, row: dict) -> Alert:
        """The event of an alerts table row (to send it again)."""
        names = {f for f in cls.__dataclass_fields__}
        # numpy scalars (as the warehouse returns them) become Python values, for the JSON payload
        values = {k: _plain(v) for k, v in row.items() if k in names}
        values["details"] = json.loads(values.get("details") or "{}")
        for moment in ("raised_at", "window_start", "window_end"):
            if values.get(moment) is not None:
                values[moment] = _as_utc(values[moment])
        return cls(**values)


@dataclass(frozen=True)
class Delivery:
    outcomes: dict[str, str]  # channel -> 'sent' | 'failed'
    sent_at: dt.datetime | None  # when the first channel took the alert; None if none did

    @property
    def channels(self) -> str:
        return ",".join(f"{channel}:{outcome}" for channel, outcome in self.outcomes.items())


class WebhookNotifier(BaseNotifier):
    """POSTs one JSON body to a webhook through the HTTP provider's HttpHook: to `url`, or to the
    Airflow HTTP Connection `conn_id` whose host is the full webhook URL. A connection error, a
    timeout or a 5xx answer is retried by the hook (SEND_ATTEMPTS in all, the wait doubling from
    `backoff_seconds`); what still fails raises."""

    def __init__(
        self,
        *,
        body: dict,
        url: str | None = None,
        conn_id: str | None = None,
        backoff_seconds: float = SEND_BACKOFF_SECONDS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (url is None) == (conn_id is None):
            raise ValueError("WebhookNotifier takes a url or a conn_id")
        self.body, self.url, self.conn_id, self.backoff_seconds = body, url, conn_id, backoff_seconds

    def _connection(self):
        from airflow.sdk import BaseHook, Connection

        if self.url:
            return Connection(conn_id="vecflow_alert_webhook_url", conn_type="http", host=self.url)
        connection = BaseHook.get_connection(self.conn_id)
        # a URI-style connection splits the URL into host, port and schema, which HttpHook reads as the scheme
        if not (connection.host or "").startswith(("http://", "https://")):
            raise ConfigError(
                f"connection {self.conn_id!r} (VECFLOW_ALERT_WEBHOOK_CONN_ID) must hold the full webhook URL "
                f"in its host, e.g. AIRFLOW_CONN_{self.conn_id.upper()}="
                '\'{"conn_type": "http", "host": "https://..."}\''
            )
        return connection

    def notify(self, context) -> None:
        import requests
        import tenacity
        from airflow.providers.http.hooks.http import HttpHook

        connection = self._connection()  # looked up once, not at every attempt
        hook = HttpHook(method="POST", http_conn_id=connection.conn_id)
        # HttpHook looks its connection up by id at each request; a bare URL has none stored
        hook.get_connection = lambda conn_id: connection
        response = hook.run_with_advanced_retry(
            {
                "stop": tenacity.stop_after_attempt(SEND_ATTEMPTS),
                "wait": tenacity.wait_exponential(multiplier=self.backoff_seconds),
                # a 4xx answer or a bad connection would fail the same way again
                "retry": tenacity.retry_if_exception_type((requests.ConnectionError, requests.Timeout))
                | tenacity.retry_if_result(lambda answer: answer.status_code >= 500),
                "before_sleep": tenacity.before_sleep_log(log, logging.WARNING),
                # the last answer (checked below) or the last error, instead of tenacity's RetryError
                "retry_error_callback": lambda state: state.outcome.result(),
            },
            data=json.dumps(self.body, default=str),  # default=str: details may hold datetimes
            headers={"Content-Type": "application/json"},
            extra_options={"timeout": SEND_TIMEOUT_SECONDS, "check_response": False},
        )
        hook.check_response(response)


class Notifier:
    """Sends an alert to every configured channel through Airflow's notifiers (WebhookNotifier, the
    Slack provider's SlackWebhookNotifier), each retrying on its own. A channel that still fails is
    logged and reported in the Delivery, never raised, so that the alert is recorded all the same."""

    def __init__(
        self,
        webhook_url: str | None = None,
        webhook_conn_id: str | None = None,
        slack_conn_id: str | None = None,
        backoff_seconds: float = SEND_BACKOFF_SECONDS,
    ):
        self.webhook_url = webhook_url
        self.webhook_conn_id = webhook_conn_id
        self.slack_conn_id = slack_conn_id
        self.backoff_seconds = backoff_seconds

    @property
    def has_channels(self) -> bool:
        return bool(self.webhook_url or self.webhook_conn_id or self.slack_conn_id)

    @classmethod
    def from_environment(cls) -> Notifier:
        a = load_settings().alerts
        return cls(webhook_url=a.webhook_url, webhook_conn_id=a.webhook_conn_id, slack_conn_id=a.slack_conn_id)

    def _slack_notifier(self, alert: Alert):
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
        from slack_sdk.http_retry import BackoffRetryIntervalCalculator, ConnectionErrorRetryHandler
        from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

        interval = BackoffRetryIntervalCalculator(backoff_factor=self.backoff_seconds)
        return SlackWebhookNotifier(
            slack_webhook_conn_id=self.slack_conn_id,
            text=f"[{alert.severity}] {alert.message}",
            timeout=SEND_TIMEOUT_SECONDS,
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=SEND_ATTEMPTS - 1, interval_calculator=interval),
                ServerErrorRetryHandler(max_retry_count=SEND_ATTEMPTS - 1, interval_calculator=interval),
            ],
        )

    def _notifiers(self, alert: Alert):
        if self.webhook_url or self.webhook_conn_id:
            yield (
                "webhook",
                WebhookNotifier(
                    body=alert.payload(),
                    url=self.webhook_url,
                    conn_id=self.webhook_conn_id,
                    backoff_seconds=self.backoff_seconds,
                ),
            )
        if self.slack_conn_id:
            yield "slack", self._slack_notifier(alert)

    def send(self, alert: Alert) -> Delivery:
        outcomes, sent_at = {}, None
        for channel, notifier in self._notifiers(alert):
            try:
                # notify(), not the notifier's __call__, which would render the alert's text as a Jinja template
                notifier.notify({})
            except Exception as exc:
                log.error("alert %s not sent to %s: %s (%s)", alert.alert_key, channel, alert.message, exc)
                outcomes[channel] = "failed"
            else:
                outcomes[channel] = "sent"
                sent_at = sent_at or _utcnow()
        if not outcomes:
            log.warning(
                "no alert channel configured (VECFLOW_ALERT_WEBHOOK_URL, VECFLOW_ALERT_WEBHOOK_CONN_ID, "
                "VECFLOW_ALERT_SLACK_CONN_ID); alert only recorded: %s",
                alert.message,
            )
        return Delivery(outcomes, sent_at)


def record_alerts(warehouse, rows: list[dict]) -> None:
    """Appends alert rows (Alert.row) to the alerts table; recoveries resolve their incidents."""
    import pyarrow as pa

    text, moment = pa.string(), pa.timestamp("us", tz="UTC")
    schema = pa.schema(
        [
            ("alert_id", text),
            ("alert_key", text),
            ("kind", text),
            ("severity", text),
            ("source", text),
            ("message", text),
            ("details", text),
            ("window_start", moment),
            ("window_end", moment),
            ("observed", pa.int64()),
            ("expected", pa.float64()),
            ("incident_id", text),
            ("status", text),
            ("raised_at", moment),
            ("sent_at", moment),
            ("channels", text),
            ("attempts", pa.int64()),
            ("run_id", text),
        ]
    )
    warehouse.run("record_alerts", rows=pa.Table.from_pylist(rows, schema=schema), names={"columns": schema.names})


def deliver(alerts: list[Alert], notifier: Notifier, warehouse) -> list[dict]:
    """Sends each alert, then records them all with how each was delivered. Sending comes first:
    if recording fails, the next check sends again rather than never. Returns the recorded rows."""
    rows = [alert.row(notifier.send(alert)) for alert in alerts]
    if rows:
        record_alerts(warehouse, rows)
    return rows


def redeliver(warehouse, notifier: Notifier) -> list[dict]:
    """Sends again every recorded event that no channel took yet (include/sql/select_undelivered_alerts.sql),
    oldest first, and records each attempt (when it was finally sent, and how many checks it took).
    Returns what was tried: alert_key, kind, channels, sent_at, attempts."""
    if not notifier.has_channels:
        return []
    tried = []
    for row in warehouse.query("select_undelivered_alerts").to_dict("records"):
        alert = Alert.from_row(row)
        delivery = notifier.send(alert)
        attempts = int(row["attempts"]) + 1 if not _is_null(row.get("attempts")) else 2
        warehouse.run(
            "record_alert_delivery", alert_id=alert.alert_id, sent_at=delivery.sent_at, channels=delivery.channels
        )
        log.info(
            "alert %s (%s, raised %s): attempt %d, %s",
            alert.alert_key,
            alert.kind,
            alert.raised_at,
            attempts,
            delivery.channels,
        )
        tried.append(
            {
                "alert_key": alert.alert_key,
                "kind": alert.kind,
                "channels": delivery.channels,
                "sent_at": delivery.sent_at,
                "attempts": attempts,
            }
        )
    return tried


def open_incidents(warehouse, key_prefix: str = "") -> dict[str, dict]:
    """alert_key -> the open incident (incident_id, opened_at, last_raised_at, reminders, acknowledged)."""
    frame = warehouse.query("select_open_alerts", key_prefix=key_prefix)
    incidents = {}
    for r in frame.to_dict("records"):
        incidents[r["alert_key"]] = {
            **r,
            "opened_at": _as_utc(r["opened_at"]),
            "last_raised_at": _as_utc(r["last_raised_at"]),
            "reminders": int(r["reminders"]),
            "acknowledged": bool(r["acknowledged"]),
        }
    return incidents


class NoOpenIncident(LookupError):
    """`alerts ack` named a key without an open incident."""


def acknowledge(warehouse, alert_key: str, now: dt.datetime, by: str) -> dict:
    """Records that someone took the open incident of `alert_key`: its reminders stop (its recovery is
    still sent). Returns the acknowledgement row."""
    incident = open_incidents(warehouse).get(alert_key)
    if incident is None:
        raise NoOpenIncident(f"no open incident for {alert_key!r} (keys are like 'inflow:<source>')")
    ack = Alert(
        alert_key=alert_key,
        kind="acknowledged",
        severity="info",
        raised_at=now,
        source=alert_key.removeprefix(INFLOW_KEY_PREFIX) if alert_key.startswith(INFLOW_KEY_PREFIX) else None,
        message=f"{alert_key}: incident {incident['incident_id']} acknowledged by {by}",
        incident_id=incident["incident_id"],
        status="acknowledged",
        details={"by": by},
    )
    row = ack.row(Delivery({}, None))
    record_alerts(warehouse, [row])
    return row


# --- inflow watchdog ------------------------------------------------------------------------------


def _inflow_alert(
    *, check, settings: WatchdogSettings, partition: dt.date, now: dt.datetime, run_id: str, **event
) -> Alert:
    """An alert about one source's inflow into `partition`; `event` says what it is (kind, severity,
    message, incident_id, status)."""
    window_start = dt.datetime.combine(partition, dt.time(), dt.UTC)
    return Alert(
        alert_key=INFLOW_KEY_PREFIX + check.source,
        raised_at=now,
        run_id=run_id,
        source=check.source,
        window_start=window_start,
        window_end=window_start + dt.timedelta(days=1),
        observed=int(check.observed),
        expected=float(check.baseline),
        details={"partition_date": partition.isoformat(), **asdict(settings)},
        **event,
    )


def _inflow_figures(check, settings: WatchdogSettings, partition: dt.date) -> str:
    last_active = None if _is_null(check.last_active) else dt.date.fromisoformat(str(check.last_active)[:10])
    if last_active is None:
        window = "no vectors from it before"
    elif (partition - last_active).days > settings.baseline_days:
        window = f"over the {settings.baseline_days} partitions up to {last_active}, its last with vectors"
    else:
        window = f"over the {settings.baseline_days} before it"
    return (
        f"{check.observed} vectors in partition {partition} (baseline {check.baseline:.1f} per partition "
        f"{window}; floor {settings.min_vectors}, min ratio {settings.min_ratio})"
    )


def run_watchdog(
    settings: WatchdogSettings, warehouse, now: dt.datetime, run_id: str, notifier: Notifier
) -> list[dict]:
    """One check, as of `now`. First every recorded event that no channel took yet is sent again
    (redeliver). Then each expected source's inflow into the partition due by `now`
    (include/sql/inflow_watchdog.sql): a missing or low source opens an incident unless one is open for
    it; an open incident is reminded every `repeat_hours` with how long it has lasted, unless it was
    acknowledged; the first check that finds the source ok again resolves it with one recovery
    message. Returns the alert rows recorded by this check (redeliveries update earlier rows)."""
    redeliver(warehouse, notifier)
    partition = settings.due_partition(now)
    inflow = warehouse.query(
        "inflow_watchdog",
        partition_date=partition,
        now=now,
        baseline_days=settings.baseline_days,
        min_vectors=settings.min_vectors,
        min_ratio=settings.min_ratio,
        expected_sources=",".join(settings.expected_sources),
        retired_sources=",".join(settings.retired_sources),
    )
    incidents = open_incidents(warehouse, INFLOW_KEY_PREFIX)
    repeat = dt.timedelta(hours=settings.repeat_hours)
    alerts = []
    for check in inflow.itertuples(index=False):
        key = INFLOW_KEY_PREFIX + check.source
        incident = incidents.get(key)
        figures = _inflow_figures(check, settings, partition)
        log.info(
            "inflow %s: %s, %s%s",
            check.source,
            check.status,
            figures,
            f"; incident {incident['incident_id']} open" if incident else "",
        )
        event = {"check": check, "settings": settings, "partition": partition, "now": now, "run_id": run_id}
        if check.status != "ok" and incident is None:
            alerts.append(
                _inflow_alert(
                    **event,
                    kind=f"inflow_{check.status}",
                    severity=_severity(check.status),
                    message=f"Vector inflow {check.status} for source {check.source}: {figures}",
                    incident_id=f"{key}:{partition.isoformat()}",
                    status="open",
                )
            )
        elif check.status != "ok" and not incident["acknowledged"] and now - incident["last_raised_at"] >= repeat:
            lasted = _duration(now - incident["opened_at"])
            alerts.append(
                _inflow_alert(
                    **event,
                    kind=f"inflow_{check.status}",
                    severity=_severity(check.status),
                    message=f"Still {check.status} for {lasted} (since {incident['opened_at']:%Y-%m-%d %H:%M} UTC, "
                    f"reminder {incident['reminders'] + 1}): vector inflow for source {check.source}: {figures}; "
                    f"incident {incident['incident_id']}, `alerts ack {key}` stops the reminders",
                    incident_id=incident["incident_id"],
                    status="reminder",
                )
            )
        elif check.status == "ok" and incident is not None:
            lasted = _duration(now - incident["opened_at"])
            alerts.append(
                _inflow_alert(
                    **event,
                    kind="recovered",
                    severity="info",
                    message=f"Vector inflow recovered for source {check.source} after {lasted}: {figures}; "
                    f"resolves incident {incident['incident_id']}",
                    incident_id=incident["incident_id"],
                    status="resolved",
                )
            )
    return deliver(alerts, notifier, warehouse)


def _severity(status: str) -> str:
    return "critical" if status == "missing" else "warning"


# --- callbacks ------------------------------------------------------------------------------------


def _send_and_record(alert: Alert) -> None:
    """For callbacks, which must not raise (the run's state is already decided, and a warehouse
    outage may be why a task failed): sends first, then records, and logs what went wrong."""
    from vecflow.warehouse import get_warehouse

    try:
        rows = [alert.row(Notifier.from_environment().send(alert))]
        record_alerts(get_warehouse(load_settings()), rows)
    except Exception:
        log.exception("alert %s: could not send or record it: %s", alert.alert_key, alert.message)


def task_failure_callback(context) -> None:
    """on_failure_callback for vecflow tasks: one alert when a task instance has failed for good
    (after its last retry)."""
    ti = context["ti"]
    error = context.get("exception")
    name = f"{ti.dag_id}.{ti.task_id}" + (f"[{ti.map_index}]" if ti.map_index is not None and ti.map_index >= 0 else "")
    _send_and_record(
        Alert(
            alert_key=f"task:{ti.dag_id}.{ti.task_id}",
            kind="task_failed",
            severity="error",
            raised_at=_utcnow(),
            run_id=ti.run_id,
            message=f"Task {name} failed in run {ti.run_id} (try {ti.try_number}): {error}",
            details={
                "dag_id": ti.dag_id,
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "try_number": ti.try_number,
                "error": repr(error),
                "log_url": ti.log_url,
            },
        )
    )


async def deadline_missed_callback(context: dict, deadline_minutes: int) -> None:
    """The daily DAG's deadline callback, run by the triggerer: one alert for a run that has not
    finished in time. The triggerer passes a small context: the run as the REST API shows it, and
    the deadline."""
    dag_run = context["dag_run"]
    alert = Alert(
        alert_key=f"deadline:{dag_run['dag_id']}",
        kind="deadline_missed",
        severity="warning",
        raised_at=_utcnow(),
        run_id=dag_run["dag_run_id"],
        message=f"Run {dag_run['dag_run_id']} of {dag_run['dag_id']} has not finished {deadline_minutes} minutes after "
        f"it was queued (deadline {context['deadline']['deadline_time']}); state {dag_run.get('state')}",
        details={
            "dag_id": dag_run["dag_id"],
            "queued_at": dag_run.get("queued_at"),
            "deadline_time": context["deadline"]["deadline_time"],
            "deadline_minutes": deadline_minutes,
        },
    )
    # the triggerer runs every trigger on one event loop: blocking I/O goes to a thread
    await asyncio.to_thread(_send_and_record, alert)


def deadline_alert():
    """The DeadlineAlert for the daily DAG (`deadline=deadline_alert()`): alerts when a run has not
    finished VECFLOW_DAILY_DEADLINE_MINUTES (default 120) after it was queued. The callback runs on
    the triggerer, which every executor has (synchronous callbacks need an executor that runs them).
    0 turns it off (None). `dag.test()` runs (`airflow dags test`, the demo) go without it
    (dag_defaults.adapt_dag_test)."""
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    minutes = load_settings().dags.daily_deadline_minutes
    if minutes == 0:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(minutes=minutes),
        callback=AsyncCallback(deadline_missed_callback, kwargs={"deadline_minutes": minutes}),
    )
