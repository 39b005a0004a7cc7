"""Notion tracking: one row per experiment in a Notion database, updated each epoch, through ``notion-client``.

Secrets come from ``NOTION_TOKEN`` and ``NOTION_DATABASE_ID`` or the ``[notion]`` table (``token``,
``database_id``) of the user's secrets file (see :mod:`mipcandy.frontend.secrets`); they are never written anywhere.
Share the database with the integration the token belongs to. The row's title is the experiment id; these columns
are filled when the database has them (matched by name, any case), others are left alone:

========== ===================================== ============================================================
column     type                                   value
========== ===================================== ============================================================
Status     select, status or text                 ``running``, ``completed``, ``interrupted`` or ``failed``
Epoch      number (or text: ``12/100``)            the last finished epoch
Best score number                                 the best (smoothed) validation score so far
ETC        date (or text)                         estimated time of completion
Folder     text                                   the experiment folder
Error      text                                   why an interrupted run stopped
========== ===================================== ============================================================

A ``status`` column needs these four options to exist; a ``select`` column gets them created by Notion. The
database's data source and columns are read once per database; a resumed experiment finds its row again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mipcandy.frontend.protocol import FrontendError, require_module, unknown_experiment
from mipcandy.frontend.secrets import require_secret
from mipcandy.hookspecs import hookimpl

COLUMNS = ("status", "epoch", "best score", "etc", "folder", "error")
TEXT_LIMIT = 2000  # Notion's limit per rich-text item


@dataclass
class _Table:
    """The data source rows go to, its title column and the columns we fill (lower-case name -> (name, type))."""

    data_source: str
    title: str
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)


def _text(content: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"content": content[:TEXT_LIMIT]}}]


def _cell(kind: str, value: Any) -> dict[str, Any] | None:
    """The Notion property value of ``value`` for a column of type ``kind``, or ``None`` if it cannot hold it."""
    if kind == "number":
        return {"number": value} if isinstance(value, int | float) else None
    if kind == "date":
        return {"date": {"start": value.isoformat(timespec="seconds")}} if isinstance(value, datetime) else None
    if kind in ("select", "status"):
        return {kind: {"name": str(value)}}
    if kind == "rich_text":
        shown = value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else str(value)
        return {"rich_text": _text(shown)}
    return None


class NotionFrontend:
    """The ``notion`` frontend (see the module's docstring).

    :param base_url: the API's address (``notion-client``'s default when ``None``); a proxy or a test server.
    :param timeout_ms: per-request timeout.
    :param retry: let ``notion-client`` retry rate limits and server errors with back-off.
    """

    def __init__(self, *, base_url: str | None = None, timeout_ms: int = 10_000, retry: bool = True) -> None:
        self.base_url, self.timeout_ms, self.retry = base_url, timeout_ms, retry
        self.client: Any = None
        self.table: _Table | None = None
        self.pages: dict[str, str] = {}  # experiment id -> row (page) id
        self.folders: dict[str, Path] = {}

    def __repr__(self) -> str:  # never shows the token
        return f"NotionFrontend(base_url={self.base_url!r})"

    @hookimpl
    def tracking_opened(self, root: Path) -> None:
        require_module("notion_client", "notion", "notion-client")
        self._secrets()

    @staticmethod
    def _secrets() -> tuple[str, str]:
        return (require_secret("notion", "token", "NOTION_TOKEN", what="the Notion integration token"),
                require_secret("notion", "database_id", "NOTION_DATABASE_ID", what="the Notion database id"))

    def _connect(self) -> tuple[Any, _Table]:
        """The client and the database's columns, read once (retried at the next event after a failure)."""
        if self.client is None:
            from notion_client import Client

            token, _ = self._secrets()
            options: dict[str, Any] = {"timeout_ms": self.timeout_ms, "retry": self.retry}
            if self.base_url is not None:
                options["base_url"] = self.base_url
            self.client = Client(auth=token, **options)
        if self.table is None:
            _, database = self._secrets()
            sources = self.client.databases.retrieve(database_id=database).get("data_sources") or []
            if not sources:
                raise FrontendError(f"Notion database {database} has no data source the integration can see; share "
                                    f"the database with the integration")
            schema = self.client.data_sources.retrieve(data_source_id=sources[0]["id"])["properties"]
            title = next((name for name, prop in schema.items() if prop["type"] == "title"), None)
            if title is None:
                raise FrontendError(f"Notion database {database} has no title column")
            columns = {name.lower(): (name, prop["type"]) for name, prop in schema.items()
                       if name.lower() in COLUMNS}
            self.table = _Table(sources[0]["id"], title, columns)
        return self.client, self.table

    @staticmethod
    def _cells(table: _Table, **values: Any) -> dict[str, Any]:
        """Property values for the columns the table has (``best_score`` fills ``Best score``)."""
        cells = {}
        for key, value in values.items():
            column = table.columns.get(key.replace("_", " "))
            cell = None if column is None or value is None else _cell(column[1], value)
            if cell is not None:
                cells[column[0]] = cell
        return cells

    def _update(self, experiment_id: str, **values: Any) -> None:
        """Fill the experiment's row: found again (a resumed run) or created on first use, else updated."""
        client, table = self._connect()
        cells = self._cells(table, **values)
        page = self.pages.get(experiment_id)
        if page is None:
            if experiment_id not in self.folders:
                raise unknown_experiment("Notion", experiment_id)
            found = client.data_sources.query(data_source_id=table.data_source, page_size=1, filter={
                "property": table.title, "title": {"equals": experiment_id}})["results"]
            if not found:
                self.pages[experiment_id] = client.pages.create(
                    parent={"type": "data_source_id", "data_source_id": table.data_source},
                    properties={table.title: {"title": _text(experiment_id)}, **cells})["id"]
                return
            page = self.pages[experiment_id] = found[0]["id"]
        if cells:
            client.pages.update(page_id=page, properties=cells)

    @hookimpl
    def experiment_created(self, experiment_id: str, folder: Path) -> None:
        self.folders[experiment_id] = Path(folder)
        self._update(experiment_id, status="running", folder=str(folder))

    @hookimpl
    def epoch_updated(self, experiment_id: str, epoch: int, num_epochs: int | None, best_score: float | None,
                      remaining_seconds: float | None) -> None:
        _, table = self._connect()
        kind = table.columns.get("epoch", ("", "number"))[1]
        shown: int | str = epoch if kind == "number" or num_epochs is None else f"{epoch}/{num_epochs}"
        etc = None if remaining_seconds is None else datetime.now().astimezone() + timedelta(seconds=remaining_seconds)
        self._update(experiment_id, status="running", epoch=shown, best_score=best_score, etc=etc)

    @hookimpl
    def experiment_completed(self, experiment_id: str) -> None:
        self._update(experiment_id, status="completed", etc=datetime.now().astimezone())
        self._forget(experiment_id)

    @hookimpl
    def experiment_interrupted(self, experiment_id: str, error: str) -> None:
        status = "interrupted" if error.startswith("KeyboardInterrupt") else "failed"
        self._update(experiment_id, status=status, error=error)
        self._forget(experiment_id)

    def _forget(self, experiment_id: str) -> None:
        self.pages.pop(experiment_id, None)
        self.folders.pop(experiment_id, None)


plugin = NotionFrontend()
