"""Following the registry: the launcher's watch of a ``models:/name@alias`` MODEL_URI.

Every MODEL_REFRESH_SECONDS the watch asks the registry which version the alias points to. When it is another
version than the one served, that version is prepared exactly as at start-up (:func:`consumer.runtime.preparation.
prepare_model`, in a child process: download, trust rules, agreement with MLflow's predictions, the fast path),
pinned as ``models:/name/<version>`` so a second move of the alias meanwhile cannot mix two versions, into the
model cache beside the one served; then it is published (:func:`consumer.model.current.publish`): the shards take
it up at their next batch boundary, the fork server before its next fork.

A version whose preparation fails is refused (``model_refused``, with the reason; counted by version): the served
version stays, and the refused one is not prepared again until the alias has pointed elsewhere. A registry that
cannot be asked (``model_refresh_failed``) changes nothing either; the next interval asks again.

How the registry is asked, without MLflow in the launcher: over HTTP(S) (the tracking server's REST API,
``GET /api/2.0/mlflow/registered-models/alias``, with MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD) when MLFLOW_REGISTRY_URI, else MLFLOW_TRACKING_URI, is an http(s) URL; for any other
registry (a local store, a plugin) by the preparation child in its resolve-only mode, which imports MLflow each
time (docs/operating.md compares the two).
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from consumer.errors import ModelError
from consumer.model.current import publish
from consumer.model.prepared import read_metadata, scoring_path
from consumer.runtime.logs import get_logger
from consumer.runtime.metrics import PreparedModel
from consumer.runtime.preparation import Prepared, prepare_model, resolve_version
from consumer.runtime.settings import ModelSettings, Settings

__all__ = ["Alias", "ModelWatch", "RestRegistry", "WatchState", "start_watch", "version_query", "watched_alias"]

#: One question to the registry; a registry that does not answer within it is asked again next interval.
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Alias:
    """A registered model's alias, as ``models:/<name>@<alias>`` names it."""

    name: str
    alias: str

    def pinned(self, version: str) -> str:
        """The URI of one version of the model: what a version found behind the alias is prepared as."""
        return f"models:/{self.name}/{version}"


def watched_alias(model_uri: str) -> Alias | None:
    """The alias ``model_uri`` names, or None when it names a fixed version, a run, a logged model or a path."""
    if not model_uri.startswith("models:"):
        return None
    path = model_uri[len("models:") :].lstrip("/")
    if "/" in path or "@" not in path:
        return None
    name, alias = path.rsplit("@", 1)
    return Alias(name, alias) if name and alias else None


class VersionQuery(Protocol):
    def __call__(self) -> str: ...


class RestRegistry:
    """The alias's version from an MLflow tracking server's REST API, with the standard library alone."""

    def __init__(self, base_url: str, alias: Alias, *, headers: Mapping[str, str] | None = None) -> None:
        query = urllib.parse.urlencode({"name": alias.name, "alias": alias.alias})
        self.url = f"{base_url.rstrip('/')}/api/2.0/mlflow/registered-models/alias?{query}"
        self._headers = dict(headers or {})
        self._alias = alias

    def __call__(self) -> str:
        where = f"models:/{self._alias.name}@{self._alias.alias}"
        request = urllib.request.Request(self.url, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as exc:
            raise ModelError(f"{where}: the registry answered {exc.code}: {_message(exc)}") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"{where}: cannot ask the registry: {type(exc).__name__}: {exc}") from None
        version = body.get("model_version", {}).get("version") if isinstance(body, dict) else None
        if not isinstance(version, str | int) or not str(version):
            raise ModelError(f"{where}: the registry's answer names no version: {body!r:.200}")
        return str(version)


def _message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read())
    except (OSError, ValueError):
        return str(error.reason)
    return str(body.get("message") or body) if isinstance(body, dict) else str(body)


def _auth_headers(environ: Mapping[str, str]) -> dict[str, str]:
    if token := environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def version_query(settings: ModelSettings, alias: Alias, environ: Mapping[str, str]) -> VersionQuery:
    """How to ask which version ``alias`` points to: over HTTP when the registry is a tracking server, else in the
    preparation child (module docstring)."""
    registry = environ.get("MLFLOW_REGISTRY_URI") or environ.get("MLFLOW_TRACKING_URI") or ""
    if urllib.parse.urlparse(registry).scheme in ("http", "https"):
        return RestRegistry(registry, alias, headers=_auth_headers(environ))
    return lambda: resolve_version(settings)


class WatchState(Protocol):
    """What the watch tells the launcher's state (consumer.runtime.health.LauncherState)."""

    def model_published(self, info: PreparedModel, seconds: float) -> None: ...
    def model_refused(self, version: str) -> None: ...
    def model_refresh_failed(self) -> None: ...
    def alias_refused(self, version: str | None) -> None: ...


class ModelWatch:
    """One :meth:`check` per interval: ask, prepare, publish or refuse (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        alias: Alias,
        *,
        serving: str,
        pointer: Path,
        state: WatchState,
        query: VersionQuery,
        prepare: Callable[[ModelSettings], Prepared] = prepare_model,
    ) -> None:
        self._settings = settings
        self._alias = alias
        self._pointer = pointer
        self._state = state
        self._query = query
        self._prepare = prepare
        self.serving = serving
        self.refused: str | None = None
        self._log = get_logger().bind(model_uri=settings.model_uri)

    def check(self) -> None:
        """Ask the registry once; prepare and publish the version the alias points to if it is new and usable."""
        try:
            version = self._query()
        except ModelError as exc:
            self._log.warning("model_refresh_failed", error=str(exc), serving=self.serving)
            self._state.model_refresh_failed()
            return
        if version != self.refused:
            self.refused = None  # the alias has moved since: a version refused before may be tried again later
            self._state.alias_refused(None)
        if version in (self.serving, self.refused):
            return
        pinned = self._alias.pinned(version)
        self._log.info("model_version_found", version=version, serving=self.serving, preparing=pinned)
        try:
            prepared, seconds = self._prepare(self._settings.model_copy(update={"model_uri": pinned}))
            metadata = read_metadata(prepared)
            if str(metadata["version"]) != version:
                raise ModelError(f"{pinned}: the prepared directory {prepared} holds version {metadata['version']}")
        except ModelError as exc:
            self.refused = version
            self._log.error("model_refused", version=version, reason=str(exc), serving=self.serving)
            self._state.model_refused(version)
            self._state.alias_refused(version)
            return
        publish(self._pointer, prepared)
        previous, self.serving = self.serving, version
        info: PreparedModel = {
            "name": metadata.get("name") or "",
            "version": version,
            "uri": self._settings.model_uri,
            "model_path": scoring_path(prepared),
        }
        self._state.model_published(info, seconds)
        self._log.info(
            "model_published", version=version, previous_version=previous, path=str(prepared), seconds=round(seconds, 2)
        )

    def run(self, stop: threading.Event) -> None:
        """Check every MODEL_REFRESH_SECONDS until ``stop`` is set."""
        while not stop.wait(self._settings.model_refresh_seconds):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watch must outlive one bad check; the model keeps serving
                self._log.exception("model_refresh_failed", error=f"{type(exc).__name__}: {exc}")
                self._state.model_refresh_failed()


@dataclass
class _Running:
    thread: threading.Thread
    stop_event: threading.Event

    def stop(self) -> None:
        """Stop watching; a preparation under way ends with this thread (its child is tied to it)."""
        self.stop_event.set()
        self.thread.join(timeout=5)


def start_watch(
    settings: Settings, *, serving: str, pointer: Path, state: WatchState, environ: Mapping[str, str]
) -> _Running | None:
    """Start watching MODEL_URI's alias in a thread; None when there is nothing to watch (not an alias, or
    MODEL_REFRESH_SECONDS=0)."""
    alias = watched_alias(settings.model_uri)
    log = get_logger()
    if alias is None or settings.model_refresh_seconds == 0:
        reason = "MODEL_REFRESH_SECONDS=0" if alias is not None else "MODEL_URI names no alias"
        log.info("model_watch_off", model_uri=settings.model_uri, reason=reason)
        return None
    query = version_query(settings, alias, environ)
    watch = ModelWatch(settings, alias, serving=serving, pointer=pointer, state=state, query=query)
    stop = threading.Event()
    thread = threading.Thread(target=watch.run, args=(stop,), name="model-watch", daemon=True)
    thread.start()
    log.info(
        "model_watch_started",
        model_uri=settings.model_uri,
        every_seconds=settings.model_refresh_seconds,
        asks="registry REST API" if isinstance(query, RestRegistry) else "preparation child",
    )
    return _Running(thread, stop)
