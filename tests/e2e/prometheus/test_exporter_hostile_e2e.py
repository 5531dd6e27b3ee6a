"""The real ``krakenplug run`` process against hostile clients of its metrics port (issue 11 item 1).

Before the fix, 33 idle connections wedged the exporter for good (``/metrics`` and ``/healthz`` never
answered again, even after the connections closed) and SIGTERM then left the process hanging after
"krakenplug stopped" until SIGKILL.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from httpcheck import free_port, status, wait_until_serving

pytestmark = pytest.mark.e2e


@pytest.fixture
def exporter_agent(start_agent: Callable) -> Callable:
    def start(request_timeout: float = 1.0):
        port = free_port()
        agent = start_agent("--no-plugin", "--exporter", "--metrics-address", f"127.0.0.1:{port}",
                            config={"exporter": {"request_timeout_seconds": request_timeout}})
        wait_until_serving(port, running=lambda: agent.running, log=agent.log)
        return port, agent

    return start


def _hostile_clients(port: int) -> list[socket.socket]:
    """40 silent connections (above the old cap of 32), 5 slowloris half-requests, 3 idle keep-alives."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
    for _ in range(5):
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        clients.append(slow)
    for _ in range(3):
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.recv(4096)
        clients.append(idle)
    return clients


def test_idle_and_slow_connections_never_wedge_the_exporter(exporter_agent):
    port, agent = exporter_agent(request_timeout=1.0)
    clients = _hostile_clients(port)
    try:
        assert status(port, "/metrics") == 200
        assert status(port, "/healthz") == 200
        time.sleep(1.5)  # past the request deadline: the silent and slow clients have been dropped
        assert status(port, "/metrics") == 200
    finally:
        for client in clients:
            client.close()
    assert status(port, "/metrics") == 200 and status(port, "/healthz") == 200
    log = agent.log()
    assert "Traceback" not in log, log
    dropped = [line for line in log.splitlines() if "dropped client" in line]
    assert dropped and all("no complete request within 1 s" in line for line in dropped), log


def test_sigterm_stops_the_agent_promptly_whatever_clients_do(exporter_agent):
    port, agent = exporter_agent(request_timeout=30.0)  # nobody is dropped before the signal
    clients = _hostile_clients(port)
    try:
        started = time.monotonic()
        exit_status = agent.terminate(timeout=10)
        took = time.monotonic() - started
    finally:
        for client in clients:
            client.close()
    assert exit_status == 0, agent.log()
    # Interpreter start-up is not in it; the exporter itself stops within about 0.5 s (unit test).
    assert took < 3.0, f"the agent needed {took:.1f} s to stop:\n{agent.log()}"
    assert "krakenplug stopped" in agent.log() and "Traceback" not in agent.log()


def test_a_busy_port_is_one_line(start_agent):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = start_agent("--no-plugin", "--exporter", "--metrics-address", f"127.0.0.1:{port}")
        exit_status = agent.process.wait(timeout=30)
    log = agent.log()
    assert exit_status != 0
    assert [line for line in log.splitlines() if "address already in use" in line] == [
        next(line for line in log.splitlines() if f"exporter.address 127.0.0.1:{port}: cannot listen" in line)]
    assert "Traceback" not in log, log
