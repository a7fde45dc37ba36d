"""The index store: where trained quantizers, day and window indexes and their pointers live, under
one storage URL (VECFLOW_STORAGE_URL: a local directory by default, `gs://bucket/prefix` in
production), so that workers, pods and search services share them without a shared disk.

The one contract every writer and reader of index artifacts goes through:
- A version is a prefix of files plus `manifest.json`, which records every file's md5 and is
  written last: a prefix without a manifest is not a version yet. Loads check every md5
  (IndexIntegrityError on a mismatch), so a reader never uses half a version.
- A pointer (a category's CURRENT, the model's SERVING) is one small JSON object replaced with a
  precondition: the generation it was read at on GCS, the content it was read with on a local
  disk (under a lock). A writer that lost a race gets PointerConflict instead of overwriting.
Local directories are still written under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"


class IndexIntegrityError(RuntimeError):
    """An index file does not match the md5 in its manifest, or a version is incomplete."""


class PointerConflict(RuntimeError):
    """A pointer changed between the read and the write that expected it unchanged."""


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass(frozen=True)
class Pointer:
    payload: dict
    token: str  # the generation (GCS) or the content's md5 (local) the pointer was read at


class IndexStore:
    """Index artifacts under `url` through fsspec; keys are `/`-joined paths below it."""

    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec

        self.url = str(url).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.local = self.protocol in ("file", "local")

    def __repr__(self) -> str:
        return f"IndexStore({self.url!r})"

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def uri(self, key: str) -> str:
        """The URL of a key, as the registry and logs name it."""
        return f"{self.url}/{key}"

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def read_json(self, key: str) -> dict | None:
        try:
            return self._parse(key, self.read_bytes(key))
        except FileNotFoundError:
            return None

    def _parse(self, key: str, data: bytes) -> dict:
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise IndexIntegrityError(f"{self.uri(key)}: not valid JSON ({exc})") from None

    def children(self, prefix: str) -> list[str]:
        """Names of the folders directly under `prefix` (sorted; none when it is not there)."""
        try:
            entries = self.fs.ls(self.path(prefix), detail=True, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory")

    def remove(self, prefix: str) -> None:
        if self.exists(prefix):
            self.fs.rm(self.path(prefix), recursive=True)

    def total_bytes(self) -> int:
        return sum(self.fs.du(self.root, total=False).values()) if self.exists("") else 0

    def write_file(self, key: str, data: bytes) -> None:
        """One file, whole or not at all for a reader: a local file is renamed into place, an object
        is one upload."""
        if self.local:
            Path(self.path(key)).parent.mkdir(parents=True, exist_ok=True)
            write_file_atomically(Path(self.path(key)), data)
        else:
            self.fs.pipe_file(self.path(key), data)

    # versions -------------------------------------------------------------------------------------------

    def write_version(self, prefix: str, files: dict[str, bytes], manifest: dict) -> dict:
        """Writes `files` and then the manifest (with their md5s under "files"); returns the manifest."""
        manifest = {**manifest, "files": {name: md5_of(data) for name, data in files.items()}}
        body = json.dumps(manifest, indent=2).encode()
        if self.local:
            _write_dir_atomically(Path(self.path(prefix)), {**files, MANIFEST: body})
        else:
            if self.exists(f"{prefix}/{MANIFEST}"):  # the prefix stops being a version until it is whole again
                self.fs.rm(self.path(f"{prefix}/{MANIFEST}"))
            for name, data in files.items():
                self.fs.pipe_file(self.path(f"{prefix}/{name}"), data)
            self.fs.pipe_file(self.path(f"{prefix}/{MANIFEST}"), body)
        return manifest

    def manifest(self, prefix: str) -> dict | None:
        return self.read_json(f"{prefix}/{MANIFEST}")

    def read_version(self, prefix: str) -> tuple[dict[str, bytes], dict]:
        """(files by name, manifest) of a version, every file checked against its manifest md5."""
        manifest = self.manifest(prefix)
        if manifest is None:
            raise IndexIntegrityError(f"{self.uri(prefix)}: no {MANIFEST} (not a complete version)")
        files = {}
        for name, md5 in manifest["files"].items():
            try:
                data = self.read_bytes(f"{prefix}/{name}")
            except FileNotFoundError:
                raise IndexIntegrityError(f"{self.uri(prefix)}/{name}: missing, its manifest lists it") from None
            if md5_of(data) != md5:
                raise IndexIntegrityError(f"{self.uri(prefix)}/{name}: md5 {md5_of(data)}, manifest says {md5}")
            files[name] = data
        return files, manifest

    # pointers -------------------------------------------------------------------------------------------

    def read_pointer(self, key: str) -> Pointer | None:
        if self.protocol == "gs":
            blob = self._blob(key)
            try:
                data = blob.download_as_bytes()
            except _gcs_not_found():
                return None
            return Pointer(self._parse(key, data), str(blob.generation))
        try:
            data = self.read_bytes(key)
        except FileNotFoundError:
            return None
        return Pointer(self._parse(key, data), md5_of(data))

    def swap_pointer(self, key: str, payload: dict, expected: Pointer | None) -> None:
        """Replaces the pointer if it is still as `expected` (None: not there); else PointerConflict."""
        data = json.dumps(payload).encode()
        if self.protocol == "gs":
            from google.api_core.exceptions import PreconditionFailed

            try:
                self._blob(key).upload_from_string(
                    data, content_type="application/json", if_generation_match=int(expected.token) if expected else 0
                )
            except PreconditionFailed:
                raise PointerConflict(f"{self.uri(key)} changed since it was read; not overwritten") from None
            return
        if not self.local:
            raise IndexIntegrityError(
                f"{self.url}: pointers need a conditional write, which vecflow does on local paths and gs:// only"
            )
        path = Path(self.path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_name(f".{path.name}.lock")):
            current = path.read_bytes() if path.exists() else None
            if (md5_of(current) if current is not None else None) != (expected.token if expected else None):
                raise PointerConflict(f"{self.uri(key)} changed since it was read; not overwritten")
            write_file_atomically(path, data)

    def _blob(self, key: str):
        bucket, _, name = self.path(key).partition("/")
        return _gcs_client(json.dumps(self.storage_options, sort_keys=True)).bucket(bucket).blob(name)


def _gcs_not_found():
    from google.api_core.exceptions import NotFound

    return NotFound


@functools.cache
def _gcs_client(options_json: str):
    """A google-cloud-storage client for the store's gcsfs options: `endpoint_url` (an emulator or a
    private endpoint), `token: "anon"`, `project`; credentials otherwise from the environment."""
    from google.cloud import storage

    options = json.loads(options_json)
    kwargs = {}
    if options.get("endpoint_url"):
        kwargs["client_options"] = {"api_endpoint": options["endpoint_url"]}
    if options.get("token") == "anon":
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()
        kwargs["project"] = options.get("project", "vecflow-local")
    elif options.get("project"):
        kwargs["project"] = options["project"]
    return storage.Client(**kwargs)


@contextlib.contextmanager
def _locked(lock_path: Path):
    import fcntl

    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_file_atomically(path: Path, data: bytes) -> None:
    """A local file written under a temporary name, fsynced and renamed: no reader sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _write_synced(tmp, data)
    os.replace(tmp, path)


def _write_dir_atomically(final_dir: Path, files: dict[str, bytes]) -> None:
    """A local version: written under a temporary name, fsynced, renamed into place."""
    tmp = final_dir.with_name(f".{final_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        _write_synced(tmp / name, data)
    old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp, final_dir)
    if old.exists():
        shutil.rmtree(old)


@functools.cache
def _store(url: str, options_json: str) -> IndexStore:
    return IndexStore(url, json.loads(options_json))


def index_store(settings) -> IndexStore:
    """The settings' index store (one instance per URL and options in a process)."""
    paths = settings.paths
    return _store(paths.index_url, json.dumps(paths.storage_options, sort_keys=True))
