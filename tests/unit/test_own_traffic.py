"""The agent's own connections, told apart by the ports of its own sockets and what they are
connected to (this test process stands for the agent: its sockets are the ones OwnTraffic
reads)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from otelbpf.abi import Role
from otelbpf.connections import OwnTraffic
from otelbpf.exchange import SocketAddress
from tests.unit.test_http_spans import make_exchange


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def served_from(client: socket.socket) -> object:
    """A server exchange whose peer is this client socket, as a traced collector sees it."""
    return served(client.getsockname(), client.getpeername())


def served(peer: tuple, server: tuple) -> object:
    return make_exchange(
        Role.SERVER,
        b"POST /v1/traces HTTP/1.1\r\n\r\n",
        peer=SocketAddress(*peer[:2]),
        local=SocketAddress(*server[:2]),
    )


def test_a_connection_the_agent_made_is_its_own(listener: socket.socket) -> None:
    own = OwnTraffic()
    own.refresh()
    with socket.create_connection(listener.getsockname()) as client:
        own.expect_new_socket()  # the kernel's notice of the agent's connect()
        assert own.is_own(served_from(client))


def test_a_socket_in_a_reused_descriptor_is_found_even_without_the_connect_notice(
    listener: socket.socket,
) -> None:
    """A reconnect often gets the closed socket's descriptor number back: the list of
    descriptors is the same, the socket behind one is not. The notice may be lost to a full
    ring buffer; the backstop check must still find the new port."""
    own = OwnTraffic()
    first = socket.create_connection(listener.getsockname())
    own.expect_new_socket()
    assert own.is_own(served_from(first))
    number = first.fileno()
    first.close()
    with socket.create_connection(listener.getsockname()) as second:
        assert second.fileno() == number  # the same descriptor number, a new socket
        own._checked = 0.0  # past the backstop's interval; no notice came
        assert own.is_own(served_from(second))


def test_a_closed_sockets_port_stops_being_the_agents_at_the_sweep(
    listener: socket.socket,
) -> None:
    own = OwnTraffic()
    client = socket.create_connection(listener.getsockname())
    own.expect_new_socket()
    exchange = served_from(client)
    assert own.is_own(exchange)
    client.close()  # the port may now go to a traced process's connection
    own.recheck()
    assert not own.is_own(exchange)


def test_other_peers_and_client_exchanges_are_not_its_own(listener: socket.socket) -> None:
    own = OwnTraffic()
    with socket.create_connection(listener.getsockname()) as client:
        own.expect_new_socket()
        address, port = client.getsockname()
        client_side = make_exchange(
            Role.CLIENT, b"GET / HTTP/1.1\r\n\r\n", peer=SocketAddress(address, port)
        )
        assert not own.is_own(client_side)
        assert not own.is_own(
            make_exchange(Role.SERVER, b"GET / HTTP/1.1\r\n\r\n", peer=SocketAddress("10.9.9.9", 1))
        )


SHARING_CLIENT = """
import socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.connect(("127.0.0.1", int(sys.argv[2])))
print("connected", flush=True)
sys.stdin.read()
"""


def test_a_traced_connection_sharing_the_agents_port_with_another_server_is_not_its_own(
    listener: socket.socket,
) -> None:
    """Linux lets connections to different destinations share a local port: a traced
    client's connection to a traced server may have the agent's export port. Its exchanges
    are the server's, not the agent's."""
    with socket.create_server(("127.0.0.1", 0)) as traced_server:
        agent_side = socket.socket()
        agent_side.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        agent_side.bind(("127.0.0.1", 0))
        agent_side.connect(listener.getsockname())
        port = agent_side.getsockname()[1]
        other = subprocess.Popen(
            [sys.executable, "-c", SHARING_CLIENT, str(port), str(traced_server.getsockname()[1])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert other.stdout.readline() == "connected\n"
            own = OwnTraffic()
            own.expect_new_socket()
            shared = ("127.0.0.1", port)
            assert own.is_own(served(shared, listener.getsockname()))
            assert not own.is_own(served(shared, traced_server.getsockname()))
        finally:
            other.stdin.close()
            other.wait()
            agent_side.close()
