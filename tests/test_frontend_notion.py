"""The Notion frontend through the real ``notion-client`` against a local stub of the endpoints it uses; a tracker
answering 500 is isolated while training records every epoch in metrics.csv."""
from __future__ import annotations

import csv
import io
import json
import threading
import warnings
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from mipcandy.frontend import FrontendWarning, open_frontends, register_frontend
from mipcandy.frontend.notion_frontend import NotionFrontend
from mipcandy.plugins import BundleError
from mipcandy.training.experiment import ExperimentWriter

pytest.importorskip("notion_client")

TOKEN, DATABASE, SOURCE = "secret_stub_token", "db-1", "ds-1"
SCHEMA = {"Name": {"id": "title", "type": "title"}, "Status": {"id": "s", "type": "select"},
          "Epoch": {"id": "e", "type": "number"}, "Best score": {"id": "b", "type": "number"},
          "ETC": {"id": "t", "type": "date"}, "Folder": {"id": "f", "type": "rich_text"},
          "Notes": {"id": "n", "type": "rich_text"}}


class NotionStub(ThreadingHTTPServer):
    """Answers databases.retrieve, data_sources.retrieve/query, pages.create/update; records every request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.pages: dict[str, dict] = {}
        self.fail_pages = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: NotionStub

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        stub, path = self.server, self.path.removeprefix("/v1/")
        stub.requests.append({"method": self.command, "path": path, "body": body,
                              "auth": self.headers.get("Authorization"), "version": self.headers.get("Notion-Version")})
        if stub.fail_pages and path.startswith("pages"):
            return self._answer(500, {"object": "error", "status": 500, "code": "internal_server_error",
                                      "message": "stub outage"})
        if (self.command, path) == ("GET", f"databases/{DATABASE}"):
            return self._answer(200, {"object": "database", "id": DATABASE,
                                      "data_sources": [{"id": SOURCE, "name": "Runs"}]})
        if (self.command, path) == ("GET", f"data_sources/{SOURCE}"):
            return self._answer(200, {"object": "data_source", "id": SOURCE, "properties": SCHEMA})
        if (self.command, path) == ("POST", f"data_sources/{SOURCE}/query"):
            wanted = body["filter"]["title"]["equals"]
            found = [{"object": "page", "id": page_id} for page_id, properties in stub.pages.items()
                     if properties["Name"]["title"][0]["text"]["content"] == wanted]
            return self._answer(200, {"object": "list", "results": found, "has_more": False, "next_cursor": None})
        if (self.command, path) == ("POST", "pages"):
            page_id = f"page-{len(stub.pages) + 1}"
            stub.pages[page_id] = dict(body["properties"])
            return self._answer(200, {"object": "page", "id": page_id})
        if self.command == "PATCH" and path.removeprefix("pages/") in stub.pages:
            stub.pages[path.removeprefix("pages/")].update(body["properties"])
            return self._answer(200, {"object": "page", "id": path.removeprefix("pages/")})
        return self._answer(404, {"object": "error", "status": 404, "code": "object_not_found", "message": path})

    do_GET = do_POST = do_PATCH = _handle


@pytest.fixture
def stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotionStub]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no secrets file of the person running tests
    monkeypatch.setenv("NOTION_TOKEN", TOKEN)
    monkeypatch.setenv("NOTION_DATABASE_ID", DATABASE)
    server = NotionStub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def select(stub: NotionStub, name: str) -> NotionFrontend:
    frontend = NotionFrontend(base_url=stub.url, timeout_ms=5000, retry=False)
    register_frontend(frontend, name)
    return frontend


def test_one_row_per_experiment_created_then_updated_each_epoch(stub: NotionStub, tmp_path: Path) -> None:
    select(stub, "notion_stub")
    folder = tmp_path / "Dataset001" / "unet" / "fold_0" / "20260101-120000-aaaa"
    before = datetime.now().astimezone()
    with open_frontends(["notion_stub"], root=tmp_path) as frontends:
        frontends.emit("experiment_created", experiment_id=folder.name, folder=folder, config={"lr": 0.01})
        frontends.emit("epoch_updated", experiment_id=folder.name, epoch=1, metrics={"loss": 1.0}, num_epochs=2,
                       best_score=None, remaining_seconds=3600.0)
        frontends.emit("epoch_updated", experiment_id=folder.name, epoch=2, metrics={"loss": 0.5}, num_epochs=2,
                       best_score=0.71, remaining_seconds=0.0)
        frontends.emit("experiment_completed", experiment_id=folder.name, summary={"best_score": 0.71})
    assert frontends.stats()["notion_stub"].failed == 0
    assert stub.calls() == [("GET", f"databases/{DATABASE}"), ("GET", f"data_sources/{SOURCE}"),
                            ("POST", f"data_sources/{SOURCE}/query"), ("POST", "pages"), ("PATCH", "pages/page-1"),
                            ("PATCH", "pages/page-1"), ("PATCH", "pages/page-1")]
    assert {r["auth"] for r in stub.requests} == {f"Bearer {TOKEN}"} and all(r["version"] for r in stub.requests)
    created = stub.requests[3]["body"]
    assert created["parent"] == {"type": "data_source_id", "data_source_id": SOURCE}
    assert created["properties"]["Name"]["title"][0]["text"]["content"] == folder.name
    assert created["properties"]["Status"] == {"select": {"name": "running"}}
    assert created["properties"]["Folder"]["rich_text"][0]["text"]["content"] == str(folder)
    first, second, done = (r["body"]["properties"] for r in stub.requests[4:])
    assert first["Epoch"] == {"number": 1} and "Best score" not in first
    etc = datetime.fromisoformat(first["ETC"]["date"]["start"])
    assert 3590 <= (etc - before).total_seconds() <= 3600 + 60
    assert second["Epoch"] == {"number": 2} and second["Best score"] == {"number": 0.71}
    assert done["Status"] == {"select": {"name": "completed"}}
    assert "Notes" not in {key for r in stub.requests[3:] for key in r["body"]["properties"]}  # not ours


def test_a_resumed_experiment_finds_its_row_again(stub: NotionStub, tmp_path: Path) -> None:
    folder = tmp_path / "20260101-120000-aaaa"
    for attempt, name in enumerate(("first", "resumed")):  # a second process: a fresh frontend, the same row
        select(stub, name)
        with open_frontends([name], root=tmp_path) as frontends:
            frontends.emit("experiment_created", experiment_id=folder.name, folder=folder, config={})
            if attempt == 0:
                frontends.emit("experiment_interrupted", experiment_id=folder.name, error="KeyboardInterrupt: ")
    assert [c for c in stub.calls() if c[1].startswith("pages")] == [("POST", "pages"), ("PATCH", "pages/page-1"),
                                                                       ("PATCH", "pages/page-1")]
    assert stub.pages["page-1"]["Status"] == {"select": {"name": "running"}}


def test_secrets_come_from_the_user_file_when_the_environment_has_none(stub: NotionStub, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTION_TOKEN")
    monkeypatch.delenv("NOTION_DATABASE_ID")
    secrets = tmp_path / "config" / "mipcandy" / "secrets.toml"
    secrets.parent.mkdir(parents=True)
    secrets.write_text(f'[notion]\ntoken = "secret_from_file"\ndatabase_id = "{DATABASE}"\n', encoding="utf-8")
    secrets.chmod(0o600)
    select(stub, "notion_stub")
    with open_frontends(["notion_stub"], root=tmp_path) as frontends:
        frontends.emit("experiment_created", experiment_id="exp", folder=tmp_path / "exp", config={})
    assert {r["auth"] for r in stub.requests} == {"Bearer secret_from_file"}


def test_without_secrets_the_run_is_refused_before_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("NOTION_TOKEN", raising=False)
    monkeypatch.delenv("NOTION_DATABASE_ID", raising=False)
    with pytest.raises(BundleError, match=r"'notion' cannot track this run: the Notion integration token is not "
                                          r"set: export NOTION_TOKEN=\.\.\. or add .* in .*secrets\.toml"):
        open_frontends(["notion"], root=tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_a_tracker_answering_500_is_reported_once_disabled_and_training_records_every_epoch(
        stub: NotionStub, tmp_path: Path) -> None:
    stub.fail_pages = True
    select(stub, "notion_stub")
    folder = tmp_path / "20260101-120000-aaaa"
    folder.mkdir()
    frontends = open_frontends(["notion_stub"], root=tmp_path, max_failures=3)
    writer = ExperimentWriter(folder, folder.name, console=Console(file=io.StringIO()), frontends=frontends)
    history: dict[str, list[float]] = {"epoch": [], "combined loss": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer.emit("experiment_created", experiment_id=folder.name, folder=folder, config={})
        for epoch in range(1, 7):
            history["epoch"].append(epoch)
            history["combined loss"].append(1.0 / epoch)
            writer.write_metrics(history)
            writer.emit("epoch_updated", experiment_id=folder.name, epoch=epoch, metrics={"combined loss": 1 / epoch})
        writer.emit("experiment_completed", experiment_id=folder.name, summary={})
        frontends.close()
    reports = [str(w.message) for w in caught if issubclass(w.category, FrontendWarning)]
    assert len(reports) == 2, reports
    assert "'notion_stub' failed in experiment_created: APIResponseError" in reports[0] and "stub outage" in reports[0]
    assert "disabled after 3 consecutive failures" in reports[1]
    assert TOKEN not in " ".join(reports)
    pages = [call for call in stub.calls() if call[1].startswith("pages")]
    assert len(pages) == 3  # tried at the first three events, then left alone
    with open(folder / "metrics.csv", encoding="utf-8") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [1, 2, 3, 4, 5, 6]
