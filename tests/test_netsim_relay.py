"""The UDP relay end to end over loopback, in this process and as the `netsim` command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsim.link import LinkConfig
from netsim.relay import DEFAULT_CLASS_MAP, Relay, RelayConfig, dscp_class


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A UDP echo server in a thread; replies prefix b'echo:'."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            sock.sendto(b"echo:" + data, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()
    stop.set()
    thread.join()
    sock.close()


def client(address: tuple[str, int]) -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(2.0)
    c.connect(address)
    return c


def test_relays_both_ways_and_keeps_clients_apart(echo_server: tuple[str, int]) -> None:
    cfg = RelayConfig(listen=("127.0.0.1", 0), server=echo_server)
    with Relay(cfg) as relay:
        a, b = client(relay.address), client(relay.address)
        for i in range(20):
            a.send(b"a%d" % i)
            b.send(b"b%d" % i)
            assert a.recv(100) == b"echo:a%d" % i
            assert b.recv(100) == b"echo:b%d" % i
        stats = relay.stats()
    assert stats["clients"] == 2
    assert stats["up"]["delivered"] == stats["down"]["delivered"] == 40


def test_delay_is_imposed_per_direction(echo_server: tuple[str, int]) -> None:
    cfg = RelayConfig(
        listen=("127.0.0.1", 0),
        server=echo_server,
        up=LinkConfig(delay=0.020),
        down=LinkConfig(delay=0.005),
    )
    with Relay(cfg) as relay:
        c = client(relay.address)
        rtts = []
        for _ in range(10):
            t = time.monotonic()
            c.send(b"x")
            c.recv(100)
            rtts.append(time.monotonic() - t)
        stats = relay.stats()
    assert min(rtts) >= 0.025
    assert sorted(rtts)[5] < 0.025 + 0.010  # generous: shared machine
    assert stats["up"]["delay_p50_us"] == 20000.0
    assert stats["down"]["delay_p50_us"] == 5000.0


def test_loss_counts_and_never_forwards(echo_server: tuple[str, int]) -> None:
    cfg = RelayConfig(listen=("127.0.0.1", 0), server=echo_server, up=LinkConfig(loss=1.0))
    with Relay(cfg) as relay:
        c = client(relay.address)
        c.settimeout(0.2)
        for _ in range(5):
            c.send(b"x")
        with pytest.raises(TimeoutError):
            c.recv(100)
        stats = relay.stats()
    assert stats["up"]["lost"] == 5 and stats["up"]["delivered"] == 0


def test_dscp_marks_select_the_class_and_survive(echo_server: tuple[str, int]) -> None:
    assert dscp_class(46 << 2, DEFAULT_CLASS_MAP) == 0
    assert dscp_class(34 << 2, DEFAULT_CLASS_MAP) == 1
    assert dscp_class(0, DEFAULT_CLASS_MAP) == 3
    # the mark is kept on the way out: a receiver with IP_RECVTOS sees it
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    sink.settimeout(2)
    cfg = RelayConfig(
        listen=("127.0.0.1", 0),
        server=sink.getsockname(),
        up=LinkConfig(rate=100e6, qdisc="priority"),
    )
    with Relay(cfg) as relay:
        c = client(relay.address)
        c.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 46 << 2)
        c.send(b"ef")
        _, anc, _, _ = sink.recvmsg(100, 64)
    tos = [v[0] for level, kind, v in anc if level == socket.IPPROTO_IP]
    assert tos and tos[0] >> 2 == 46
    sink.close()


def test_cli_relays_and_reports_json(tmp_path: Path, echo_server: tuple[str, int]) -> None:
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.bind(("127.0.0.1", 0))
    port = listen.getsockname()[1]
    out = tmp_path / "relay.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "netsim",
            "relay",
            "--listen-fd",
            str(listen.fileno()),
            "--to",
            f"{echo_server[0]}:{echo_server[1]}",
            "--profile",
            "apn",
            "--distance-km",
            "1000",
            "--down-delay",
            "1ms",
            "--json",
            str(out),
        ],
        pass_fds=(listen.fileno(),),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    listen.close()
    c = client(("127.0.0.1", port))
    for i in range(10):
        c.send(b"%d" % i)
        assert c.recv(100) == b"echo:%d" % i
    proc.send_signal(2)
    stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    data = json.loads(out.read_text())
    assert data["up"]["delivered"] == data["down"]["delivered"] == 10
    assert data["up"]["delay_p50_us"] == pytest.approx(4900.0)  # apn: 4.9 µs/km
    assert data["down"]["delay_p50_us"] == pytest.approx(1000.0)  # overridden
    assert "delay 4.9ms" in stderr and "up" in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delay", "10"], "needs a time unit"),
        (["--profile", "moon"], "invalid choice"),
        (["--loss", "150%"], "within 0-100 %"),
        (["--loss-model", "gx:1%"], "ge:P,R,1-H,1-K"),
        (["--queue", "10xb"], "needs a unit"),
        (["--qdisc", "priority"], "needs a rate"),
    ],
)
def test_cli_bad_options_say_why(args: list[str], message: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "netsim",
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--duration",
            "0.1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_profiles_list_names_and_sources() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "netsim", "profiles", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for name in (
        "loopback",
        "apn",
        "fiber-internet",
        "5g-urllc",
        "5g",
        "lte",
        "wifi",
        "wifi-congested",
        "starlink",
        "geo-satellite",
        "congested-wan",
    ):
        assert name in rows and rows[name]["source"]
    assert "outage 80ms every 15s" in rows["starlink"]["up"]
