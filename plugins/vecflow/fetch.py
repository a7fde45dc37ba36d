"""Fetching catalog images: `http(s)://` URLs, `gs://` and `s3://` objects, and local files, to bytes.

`fetch_images(uris, settings)` fetches every URI with bounded concurrency (at most `concurrency` at once,
at most `per_host` of them from one host or bucket) and returns one `Fetched` per URI, in the order of the
URIs: the image's bytes and their MD5, or a reject (`reason`, `detail`) like the project's other rejects.
Progress is logged every `progress_every` images, and a last line gives fetched and rejects by reason and
the rate.

Reasons of a reject:

- `host_not_allowed`: the host or bucket is not in the allowlist, the URL carries credentials
  (`http://user@host/`), or a redirect points somewhere not allowed (the detail names the target).
- `unsupported_uri`: a scheme other than http, https, gs, s3 and file, or a malformed URI (no host, a bad
  port, control characters, an fsspec chain `a::b`, a `file://` URI naming another machine).
- `dead_link`: HTTP 404 or 410, an object or a local file that does not exist. Not retried.
- `fetch_failed`: HTTP 429, 5xx, connection errors and timeouts once every attempt failed (the detail
  gives the last status or error and the attempts), any other 4xx or status (not retried), more than
  `MAX_REDIRECTS` redirects, a storage error, or a filesystem package that is not installed (`s3://` needs
  s3fs). Retries wait exponentially longer, with jitter, from `backoff_s`.
- `not_an_image`: the body is not a JPEG, PNG, GIF, WebP, BMP or TIFF image, judged from its content
  with Pillow, never from the URL's extension or the Content-Type header (an HTML page served as
  `x.jpg` is a reject).
- `too_large`: the body is over `max_bytes`; a Content-Length over the limit is refused at once, and
  no more than `max_bytes + 1` bytes are ever read.

The allowlist (`allowed_hosts`, VECFLOW_FETCH_ALLOWED_HOSTS). Catalog URLs come from sellers, so the
fetcher must not become a way into the network it runs in: a remote URI is fetched only when its host or
bucket is listed, decided from the URI's text before any connection is opened or name resolved, and again
for every redirect (which the fetcher follows itself, at most `MAX_REDIRECTS`). Entries:

- `cdn.shop.example`: that host exactly (case and a trailing dot ignored), on the scheme's default port
  only (80 for http, 443 for https). An entry without a port never opens other ports of the host.
- `*.shop.example`: any subdomain (`a.shop.example`, `a.b.shop.example`), not `shop.example` itself;
  default ports only. Wildcards never match IP addresses.
- `cdn.shop.example:8080`, `*.shop.example:8443`, `127.0.0.1:8080`, `[::1]:8080`: that port only (for
  http and https alike).
- `gs://bucket`, `s3://bucket`: objects in that bucket (exact name; no wildcards).

IP addresses match only when written the same way (`127.0.0.1`, not `2130706433` or `127.1`), and hosts
are compared as ASCII (write internationalised names in punycode). An empty allowlist fetches nothing
remote. Local paths and `file://` URIs are read directly: the allowlist does not apply to them (they
come from the catalog's own storage, which the operator controls); relative paths are read under `root`.
A malformed entry is a ConfigError.

Credentials come only from the environment or Airflow Connections, never from the URIs: for `gs://`
the Google default credentials (or what `storage_options` says, e.g. `{"token": "anon", "endpoint_url":
...}` for an emulator), for `s3://` the AWS environment, for http(s) none (cookies are not kept).
"""

from __future__ import annotations

import collections
import http
import http.cookiejar
import io
import ipaddress
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

import requests
import tenacity
import urllib3
from PIL import Image

from vecflow.config import ConfigError, FetchSettings
from vecflow_model.imaging import content_md5

log = logging.getLogger(__name__)

REASONS = ("host_not_allowed", "unsupported_uri", "dead_link", "fetch_failed", "not_an_image", "too_large")
BACKOFF_S = 0.5  # the first retry waits this long, each next one twice as long, each plus up to BACKOFF_S of jitter
MAX_BACKOFF_S = 30.0
MAX_REDIRECTS = 5
PROGRESS_EVERY = 1000
CHUNK_BYTES = 64 * 1024
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
ACCEPT = "image/jpeg,image/png,image/webp,image/gif,image/bmp,image/tiff;q=0.9"
USER_AGENT = "vecflow-fetch"
DEFAULT_PORTS = {"http": 80, "https": 443}
BUCKET_SCHEMES = {"gs": "gcsfs", "s3": "s3fs"}  # scheme -> the fsspec package that reads it
REDIRECTS = (301, 302, 303, 307, 308)
DEAD = (404, 410)

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,221}[A-Za-z0-9]")
_ENTRY = re.compile(r"(?P<wild>\*\.)?(?P<host>\[[0-9a-f:.%a-z]+\]|[^:\[\]]+)(?::(?P<port>\d{1,5}))?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """One URI's outcome: `data` and its `content_md5` (hex) when fetched, else `reason` and `detail`."""

    uri: str
    data: bytes | None
    reason: str | None
    detail: str | None
    bytes: int | None
    content_md5: str | None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @classmethod
    def image(cls, uri: str, data: bytes) -> Fetched:
        return cls(uri, data, None, None, len(data), content_md5(data))

    @classmethod
    def reject(cls, uri: str, reason: str, detail: str) -> Fetched:
        assert reason in REASONS, reason
        return cls(uri, None, reason, detail, None, None)


# --- the allowlist ----------------------------------------------------------------------------------


def _host_key(host: str) -> str | None:
    """A host as compared: lowercase, without one trailing dot, IPv6 in its short form; None if it is
    neither an ASCII host name nor an IP address."""
    host = host.lower()
    host = host[:-1] if host.endswith(".") else host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return host if _HOSTNAME.fullmatch(host) else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Allowlist:
    """The parsed `allowed_hosts`: (host, port or None) exact, (.suffix, port or None) wildcards, and
    `scheme://bucket` buckets. Port None means the scheme's default port."""

    hosts: frozenset[tuple[str, int | None]] = frozenset()
    wildcards: tuple[tuple[str, int | None], ...] = ()
    buckets: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        hosts, wildcards, buckets = set(), [], set()
        for raw in entries:
            entry = raw.strip()
            scheme, sep, bucket = entry.partition("://")
            if sep:
                if scheme.lower() not in BUCKET_SCHEMES or not _BUCKET.fullmatch(bucket.rstrip("/")):
                    raise _bad_entry(raw)
                buckets.add(f"{scheme.lower()}://{bucket.rstrip('/')}")
                continue
            match = _ENTRY.fullmatch(entry.lower())
            host = match and _host_key(match["host"].strip("[]"))
            if not host or (match["wild"] and _is_ip(host)) or (match["host"].startswith("[") and not _is_ip(host)):
                raise _bad_entry(raw)
            port = int(match["port"]) if match["port"] else None
            if port is not None and not 0 < port < 65536:
                raise _bad_entry(raw)
            if match["wild"]:
                wildcards.append(("." + host, port))
            else:
                hosts.add((host, port))
        return cls(frozenset(hosts), tuple(wildcards), frozenset(buckets))

    def allows_host(self, scheme: str, host: str, port: int | None = None) -> bool:
        """Whether `scheme://host[:port]/` may be fetched (scheme http or https)."""
        key = _host_key(host)
        if key is None:
            return False
        port = DEFAULT_PORTS[scheme] if port is None else port

        def port_ok(allowed: int | None) -> bool:
            return port == (DEFAULT_PORTS[scheme] if allowed is None else allowed)

        if any(port_ok(p) for h, p in self.hosts if h == key):
            return True
        return not _is_ip(key) and any(key.endswith(suffix) and port_ok(p) for suffix, p in self.wildcards)

    def allows_bucket(self, scheme: str, bucket: str) -> bool:
        return f"{scheme}://{bucket}" in self.buckets


def _bad_entry(entry: str) -> ConfigError:
    return ConfigError(
        f"VECFLOW_FETCH_ALLOWED_HOSTS entry {entry!r} is not a host, *.domain, host:port, gs://bucket or s3://bucket"
    )


def _scheme(uri: str) -> str:
    """The URI's scheme, lowercase; '' for a local path (a one-letter scheme is a Windows drive)."""
    scheme = uri.partition(":")[0].lower() if ":" in uri else ""
    return scheme if len(scheme) > 1 and re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) else ""


def _redacted(uri: str) -> str:
    """`uri` with any credentials in it (user:password@) replaced by ***."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@", r"\1***@", uri)


def refusal(uri: str, allowlist: Allowlist) -> tuple[str, str] | None:
    """Why `uri` must not be fetched, as (reason, detail), or None when it may be. Decided from the text
    alone: nothing is resolved or connected to."""
    scheme = _scheme(uri)
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
        return "unsupported_uri", f"{_redacted(uri)}: {exc}"
    if scheme in ("", "file"):
        if scheme == "file" and parts.netloc.lower() not in ("", "localhost"):
            return "unsupported_uri", f"{uri}: a file:// URI must name a local file (file:///path)"
        return None
    if scheme not in DEFAULT_PORTS and scheme not in BUCKET_SCHEMES:
        return "unsupported_uri", f"{_redacted(uri)}: only http, https, gs, s3 and file URIs are fetched"
    if _CONTROL.search(uri):
        return "unsupported_uri", f"{_redacted(uri)!r}: control characters in the URI"
    if "@" in parts.netloc:
        return "host_not_allowed", f"{_redacted(uri)}: credentials in the URI (user@host) are refused"
    if "\\" in parts.netloc:
        return "unsupported_uri", f"{uri}: a backslash in the host"
    if scheme in BUCKET_SCHEMES:
        return _bucket_refusal(uri, scheme, parts, allowlist)
    try:
        port = parts.port
    except ValueError:
        return "unsupported_uri", f"{uri}: not a valid port"
    if not parts.hostname or _host_key(parts.hostname) is None:
        return "unsupported_uri", f"{uri}: not a valid host name (write internationalised names in punycode)"
    if not allowlist.allows_host(scheme, parts.hostname, port):
        where = parts.hostname if port is None else f"{parts.hostname}:{port}"
        return "host_not_allowed", f"{scheme}://{where} is not allowed (not in VECFLOW_FETCH_ALLOWED_HOSTS)"
    return None


def _bucket_refusal(uri: str, scheme: str, parts: SplitResult, allowlist: Allowlist) -> tuple[str, str] | None:
    if "::" in uri:
        return "unsupported_uri", f"{uri}: fsspec chains (a::b) are not fetched"
    if not _BUCKET.fullmatch(parts.netloc):
        return "unsupported_uri", f"{uri}: not a valid bucket name"
    if not parts.path.strip("/"):
        return "unsupported_uri", f"{uri}: names no object"
    if not allowlist.allows_bucket(scheme, parts.netloc):
        return "host_not_allowed", f"{scheme}://{parts.netloc} is not allowed (not in VECFLOW_FETCH_ALLOWED_HOSTS)"
    return None


# --- fetching ---------------------------------------------------------------------------------------


class _Transient(Exception):
    """A failure worth another attempt (429, 5xx, a connection error, a timeout); `detail` says which."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def _status(response: requests.Response) -> str:
    phrase = response.reason
    if not phrase:
        try:
            phrase = http.HTTPStatus(response.status_code).phrase
        except ValueError:
            phrase = ""
    return f"{response.status_code} {phrase}".strip()


def _error(exc: BaseException) -> str:
    """A short description of a connection error (requests wraps urllib3's, which wrap the socket's)."""
    text = str(exc)
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)) or "timed out" in text:
        return "timed out"
    return f"connection failed ({type(exc).__name__}: {text[:200]})"


def _not_an_image(data: bytes) -> str | None:
    """Why `data` is not one of IMAGE_FORMATS, judged from the content; None when it is."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            image.verify()
    except Exception as exc:
        head = data[:32]
        return f"not a JPEG, PNG, GIF, WebP, BMP or TIFF image ({type(exc).__name__}; starts with {head!r})"
    return None


class _Fetcher:
    def __init__(
        self,
        settings: FetchSettings,
        storage_options: dict | None,
        backoff_s: float,
        root: Path | None,
        session: requests.Session,
    ):
        self.settings = settings
        self.allowlist = Allowlist.parse(settings.allowed_hosts)
        self.storage_options = dict(storage_options or {})
        self.backoff_s = backoff_s
        self.root = root
        self.session = session
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()

    def slot(self, key: str) -> threading.BoundedSemaphore:
        """The semaphore that bounds requests to one host or bucket to `per_host` at once."""
        with self._slots_lock:
            if key not in self._slots:
                self._slots[key] = threading.BoundedSemaphore(self.settings.per_host)
            return self._slots[key]

    def fetch(self, uri: str) -> Fetched:
        try:
            refused = refusal(uri, self.allowlist)
            if refused:
                return Fetched.reject(uri, *refused)
            scheme = _scheme(uri)
            if scheme in ("", "file"):
                return self._local(uri, scheme)
            return self._retrying(uri, self._http if scheme in DEFAULT_PORTS else self._bucket)
        except Exception as exc:  # one odd URI must not fail a batch of thousands
            log.exception("fetching %s failed unexpectedly", uri)
            return Fetched.reject(uri, "fetch_failed", f"{type(exc).__name__}: {exc}")

    def _retrying(self, uri: str, attempt) -> Fetched:
        def gave_up(state: tenacity.RetryCallState) -> Fetched:
            detail, n = state.outcome.exception().detail, state.attempt_number
            return Fetched.reject(uri, "fetch_failed", f"{detail} after {n} attempt{'s' if n > 1 else ''}")

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.settings.attempts),
            wait=tenacity.wait_exponential_jitter(initial=self.backoff_s, max=MAX_BACKOFF_S, jitter=self.backoff_s),
            retry=tenacity.retry_if_exception_type(_Transient),
            retry_error_callback=gave_up,
            before_sleep=tenacity.before_sleep_log(log, logging.DEBUG),
        )
        return retrying(attempt, uri)

    def _accept(self, uri: str, data: bytes) -> Fetched:
        problem = _not_an_image(data)
        return Fetched.reject(uri, "not_an_image", problem) if problem else Fetched.image(uri, data)

    def _too_large(self, uri: str, what: str) -> Fetched:
        return Fetched.reject(uri, "too_large", f"{what} is over the limit of {self.settings.max_bytes} bytes")

    # http(s): one attempt, following redirects; raises _Transient for what is worth a retry
    def _http(self, uri: str) -> Fetched:
        url = uri
        for _ in range(MAX_REDIRECTS + 1):
            try:
                prepared = self.session.prepare_request(requests.Request("GET", url))
            except requests.RequestException as exc:  # InvalidURL: what the checks above let through
                return Fetched.reject(uri, "unsupported_uri", f"{url}: {exc}")
            # what is sent is what was prepared: its host must be the one the allowlist passed
            sent, checked = urlsplit(prepared.url), urlsplit(url)
            if (sent.hostname, sent.port) != (checked.hostname, checked.port):
                return Fetched.reject(uri, "host_not_allowed", f"{url}: the host changes when the URL is normalised")
            with self.slot(sent.hostname):
                try:
                    response = self.session.send(
                        prepared,
                        stream=True,
                        allow_redirects=False,
                        timeout=(self.settings.connect_timeout_s, self.settings.read_timeout_s),
                    )
                except requests.RequestException as exc:
                    raise _Transient(_error(exc)) from exc
                with response:
                    status = response.status_code
                    if status in REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            return Fetched.reject(uri, "fetch_failed", f"{_status(response)} without a Location")
                        target = urljoin(prepared.url, location)
                        if _scheme(target) not in DEFAULT_PORTS:
                            detail = f"redirect to {_redacted(target)}: only http and https redirects are followed"
                            return Fetched.reject(uri, "host_not_allowed", detail)
                        refused = refusal(target, self.allowlist)
                        if refused:
                            detail = f"redirect to {_redacted(target)}: {refused[1]}"
                            return Fetched.reject(uri, "host_not_allowed", detail)
                        url = target
                        continue
                    if status in DEAD:
                        return Fetched.reject(uri, "dead_link", _status(response))
                    if status == 429 or status >= 500:
                        raise _Transient(_status(response))
                    if status != 200:
                        return Fetched.reject(uri, "fetch_failed", _status(response))
                    return self._body(uri, response)
        return Fetched.reject(uri, "fetch_failed", f"more than {MAX_REDIRECTS} redirects (the last to {url})")

    def _body(self, uri: str, response: requests.Response) -> Fetched:
        limit = self.settings.max_bytes
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            return self._too_large(uri, f"Content-Length {length}")
        body = bytearray()
        try:
            while len(body) <= limit:
                chunk = response.raw.read(min(CHUNK_BYTES, limit + 1 - len(body)), decode_content=True)
                if not chunk:
                    break
                body += chunk
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Transient(_error(exc)) from exc
        if len(body) > limit:
            return self._too_large(uri, "the body")
        return self._accept(uri, bytes(body))

    # gs://, s3://: one attempt through fsspec (whose clients retry too)
    def _bucket(self, uri: str) -> Fetched:
        import fsspec.core

        scheme, bucket = _scheme(uri), urlsplit(uri).netloc
        try:
            fs, path = fsspec.core.url_to_fs(uri, **self.storage_options)
        except ImportError as exc:
            package = BUCKET_SCHEMES[scheme]
            detail = f"{scheme}:// URIs need the {package} package, which is not installed ({exc})"
            return Fetched.reject(uri, "fetch_failed", detail)
        with self.slot(f"{scheme}://{bucket}"):
            try:
                with fs.open(path, "rb") as file:
                    if file.size is not None and file.size > self.settings.max_bytes:
                        return self._too_large(uri, f"the object's size {file.size}")
                    data = file.read(self.settings.max_bytes + 1)
            except FileNotFoundError:
                return Fetched.reject(uri, "dead_link", f"{uri} does not exist")
            except (TimeoutError, ConnectionError) as exc:
                raise _Transient(_error(exc)) from exc
            except Exception as exc:
                return Fetched.reject(uri, "fetch_failed", f"{type(exc).__name__}: {str(exc)[:300]}")
        if len(data) > self.settings.max_bytes:
            return self._too_large(uri, "the object")
        return self._accept(uri, data)

    def _local(self, uri: str, scheme: str) -> Fetched:
        if scheme == "file":
            path = Path(urllib.request.url2pathname(urlsplit(uri).path))
        else:
            path = Path(uri)
            if not path.is_absolute() and self.root is not None:
                path = self.root / path
        try:
            if path.stat().st_size > self.settings.max_bytes:
                return self._too_large(uri, f"{path} ({path.stat().st_size} bytes)")
            with open(path, "rb") as file:
                data = file.read(self.settings.max_bytes + 1)
        except FileNotFoundError:
            return Fetched.reject(uri, "dead_link", f"{path} does not exist")
        except OSError as exc:
            return Fetched.reject(uri, "fetch_failed", f"{path}: {exc.strerror or exc}")
        if len(data) > self.settings.max_bytes:
            return self._too_large(uri, str(path))
        return self._accept(uri, data)


def _session(settings: FetchSettings) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=max(settings.concurrency, 10), pool_maxsize=settings.per_host, max_retries=0
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": USER_AGENT, "Accept": ACCEPT})
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # keep no cookies
    return session


def _summary(counts: collections.Counter) -> str:
    fetched = counts.get(None, 0)
    rejects = sorted((reason, n) for reason, n in counts.items() if reason is not None)
    text = f"{fetched} fetched, {sum(n for _, n in rejects)} rejects"
    return text + (" (" + ", ".join(f"{reason} {n}" for reason, n in rejects) + ")" if rejects else "")


def fetch_images(
    uris: list[str],
    settings: FetchSettings,
    storage_options: dict | None = None,
    *,
    root: Path | None = None,
    backoff_s: float = BACKOFF_S,
    progress_every: int = PROGRESS_EVERY,
) -> list[Fetched]:
    """Fetches every URI (see the module's docstring) and returns one Fetched per URI, in their order.

    `storage_options` go to fsspec for gs:// and s3://; relative local paths are read under `root` (the
    working directory when None); `backoff_s` is the first retry's wait."""
    results: list[Fetched | None] = [None] * len(uris)
    if not uris:
        return []
    started, counts = time.monotonic(), collections.Counter()
    with _session(settings) as session:
        fetcher = _Fetcher(settings, storage_options, backoff_s, root, session)
        workers = min(settings.concurrency, len(uris))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vecflow-fetch") as pool:
            futures = {pool.submit(fetcher.fetch, uri): i for i, uri in enumerate(uris)}
            for done, future in enumerate(as_completed(futures), start=1):
                result = results[futures[future]] = future.result()
                counts[result.reason] += 1
                if progress_every > 0 and done % progress_every == 0 and done < len(uris):
                    rate = done / max(time.monotonic() - started, 1e-9)
                    log.info("fetch: %d/%d images, %s, %.1f images/s", done, len(uris), _summary(counts), rate)
    elapsed = time.monotonic() - started
    log.info(
        "fetch: done, %d images in %.1f s (%.1f images/s): %s",
        len(uris),
        elapsed,
        len(uris) / max(elapsed, 1e-9),
        _summary(counts),
    )
    return results
