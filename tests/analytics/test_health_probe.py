"""The MLflow probe of the health endpoint against real HTTP receivers on 127.0.0.1: one connection reset is retried
at once (it is not an MLflow that is down), and a fresh process loads MLflow's client before its budget starts."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading

import pytest

from analytics.mirror.store import mlflow_probe
from tests.conftest import REPO, child_env

EXPERIMENT = {"experiment": {"experiment_id": "1", "name": "intent_detection", "lifecycle_stage": "active"}}


class ResettingMlflow:
    """Answers get-by-name like an MLflow server, except that the first `resets` connections are reset (RST)."""

    def __init__(self, *, resets: int) -> None:
        self.resets, self.connections = resets, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.uri = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)
                if self.connections <= self.resets:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                    continue
                body = json.dumps(EXPERIMENT).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def resetting():
    servers: list[ResettingMlflow] = []

    def start(resets: int) -> ResettingMlflow:
        servers.append(ResettingMlflow(resets=resets))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_one_connection_reset_is_retried_and_two_are_unreachable(resetting):
    once = resetting(1)
    probe = mlflow_probe(experiment_name="intent_detection", uri=once.uri, timeout_s=3)
    assert (probe.reachable, probe.experiment_present, once.connections) == (True, True, 2)

    twice = resetting(2)
    probe = mlflow_probe(experiment_name="intent_detection", uri=twice.uri, timeout_s=3)
    assert not probe.reachable and twice.connections == 2


@pytest.mark.django_db
def test_the_first_probe_of_a_fresh_process_is_not_spent_importing_mlflow(resetting):
    # a process that has not imported MLflow yet probes a healthy server with a budget shorter than the import
    server = resetting(0)
    code = ("from analytics.ops.health import health_get; import json, sys; "
            "print(json.dumps(health_get(probe_timeout_s=0.5)['mlflow']))")
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=child_env(MLFLOW_TRACKING_URI=server.uri))
    assert done.returncode == 0, done.stderr
    mlflow = json.loads(done.stdout.strip().splitlines()[-1])
    assert mlflow == {"reachable": True, "experiment_present": True, "error": None}
