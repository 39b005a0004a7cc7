"""``candy ui [ROOT]``: every tracked run of an experiment root in the MLflow web UI, with one command.

Runs tracked with ``--track mlflow`` (and no ``MLFLOW_TRACKING_URI``) live in ``ROOT/mlflow.db`` with their artifacts
in ``ROOT/mlartifacts``; this starts ``mlflow server`` on that store, waits until it answers, prints its address and
serves until Ctrl+C (or SIGTERM), then stops the server it started.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from mipcandy.cli.arguments import positive_int

STARTUP_SECONDS = 180.0
SEARCH_DEPTH = 4


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("root", nargs="?", type=Path, default=Path("."),
                        help="experiment root holding mlflow.db (default: the current directory)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                            "only; 0.0.0.0 shares it with your network)")
    parser.add_argument("--port", type=positive_int, default=5000, help="port to listen on (default 5000)")


def find_store(root: Path) -> Path:
    """``root/mlflow.db``, or the one store a few levels below it; a clear error otherwise."""
    from mipcandy.frontend.mlflow_frontend import STORE

    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: pass the experiment root given to `candy train`")
    if (root / STORE).is_file():
        return root / STORE
    patterns = ("/".join(["*"] * depth + [STORE]) for depth in range(1, SEARCH_DEPTH + 1))
    found = sorted(path for pattern in patterns for path in root.glob(pattern))
    if len(found) == 1:
        return found[0]
    if found:
        raise FileNotFoundError(f"{root} holds {len(found)} MLflow stores; pass the root of one of them: "
                                + ", ".join(str(path.parent) for path in found))
    raise FileNotFoundError(f"no MLflow store in {root} ({root / STORE} is missing): train with `candy train ... "
                            f"--track mlflow` first, or pass the experiment root it used")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _address(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _wait_until_up(server: subprocess.Popen[bytes], address: str) -> bool:
    """Poll the server's health endpoint until it answers (``True``) or the process exits (``False``)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    return False


def _stop(server: subprocess.Popen[bytes]) -> None:
    """End the server and whatever it spawned (its own process group on POSIX)."""
    if server.poll() is not None:
        return
    if os.name == "posix":
        os.killpg(server.pid, signal.SIGTERM)
    else:
        server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        if os.name == "posix":
            os.killpg(server.pid, signal.SIGKILL)
        else:
            server.kill()
        server.wait()


def _tail(log: IO[bytes], lines: int = 20) -> str:
    log.seek(0)
    return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


def run(args: argparse.Namespace) -> int:
    """Serve the store until interrupted; exit 1 with the reason when it cannot start."""
    from importlib.util import find_spec

    from mipcandy.frontend.mlflow_frontend import embedded_artifact_location, embedded_tracking_uri

    try:
        store = find_store(args.root)
    except FileNotFoundError as error:
        print(f"candy ui: {error}", file=sys.stderr)
        return 1
    if find_spec("mlflow") is None:
        print("candy ui: MLflow is not installed: pip install 'mipcandy[mlflow]'", file=sys.stderr)
        return 1
    if not _port_free(args.host, args.port):
        print(f"candy ui: port {args.port} on {args.host} is in use; pick another with --port", file=sys.stderr)
        return 1
    if os.environ.get("MLFLOW_TRACKING_URI"):
        print(f"Note: MLFLOW_TRACKING_URI is set ({os.environ['MLFLOW_TRACKING_URI']}): runs tracked with it are "
              f"there, not in {store}.")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", embedded_tracking_uri(store.parent),
               "--default-artifact-root", embedded_artifact_location(store.parent), "--host", args.host,
               "--port", str(args.port), "--workers", "1"]
    address = _address(args.host, args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=os.name == "posix")
        try:
            if not _wait_until_up(server, address):
                print(f"candy ui: the MLflow server did not start:\n{_tail(log)}", file=sys.stderr)
                return 1
            print(f"MLflow UI for {store.parent}: {address}  (Ctrl+C to stop)", flush=True)
            return server.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            _stop(server)
