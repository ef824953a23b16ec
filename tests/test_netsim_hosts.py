"""Test hosts in network namespaces (`netsim.hosts`): made, reachable, shaped and removed.

Tests marked ``netns`` need root; they skip with the reason `check_available` gives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from netsim.exceptions import HostsError, HostsUnavailable
from netsim.hosts import HostNetwork, Shaping, check_available

PY = sys.executable

# One process per side, run inside the namespaces with `python -c`.
UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""
UDP_PING = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
rtts = []
for i in range(int(sys.argv[3])):
    t0 = time.perf_counter_ns()
    s.sendto(i.to_bytes(4, "big") * 16, (sys.argv[1], int(sys.argv[2])))
    try:
        data, _ = s.recvfrom(2048)
    except TimeoutError:
        continue
    if data[:4] == i.to_bytes(4, "big"):
        rtts.append((time.perf_counter_ns() - t0) / 1000)
rtts.sort()
print(json.dumps({"received": len(rtts), "p50_us": rtts[len(rtts) // 2] if rtts else None}))
"""
TCP_SINK = """
import json, socket, sys, time
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(10)
print("ready", flush=True)
conn, _ = srv.accept()
total, first, last = 0, None, None
while chunk := conn.recv(1 << 16):
    last = time.monotonic()
    first = first or last
    total += len(chunk)
print(json.dumps({"bytes": total, "seconds": (last - first) if total else 0.0}))
"""
TCP_BLAST = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)  # drains quickly when shaped
s.connect((sys.argv[1], int(sys.argv[2])))
end, block = time.monotonic() + float(sys.argv[3]), b"x" * 16384
while time.monotonic() < end:
    s.sendall(block)
s.close()
"""


@pytest.fixture
def netns() -> None:
    try:
        check_available()
    except HostsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def shaping_available() -> None:
    try:
        check_available(qdiscs=["tbf", "htb"])
    except HostsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def pair(netns: None) -> Iterator[HostNetwork]:
    with HostNetwork(hosts=["station", "robot"]) as net:
        yield net


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def process_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0]
    except FileNotFoundError:
        return "gone"


def ready(proc: subprocess.Popen[str]) -> None:
    """Wait for the "ready" line of a server started with `popen`."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line


def ping(net: HostNetwork, src: str, dst: str, count: int = 200) -> dict[str, float]:
    server = net.popen(dst, [PY, "-c", UDP_ECHO, net.address(dst), "9000"])
    ready(server)
    out = net.run(src, [PY, "-c", UDP_PING, net.address(dst), "9000", str(count)], timeout=30)
    server.terminate()
    server.communicate()
    result: dict[str, float] = json.loads(out.stdout)
    return result


def throughput_bps(net: HostNetwork, src: str, dst: str, seconds: float) -> float:
    """Bit/s of a TCP blast from `src` to `dst`, measured by the receiver."""
    sink = net.popen(dst, [PY, "-c", TCP_SINK, net.address(dst), "9001"])
    ready(sink)
    net.run(src, [PY, "-c", TCP_BLAST, net.address(dst), "9001", str(seconds)], timeout=30)
    out, err = sink.communicate(timeout=30)
    assert sink.returncode == 0, err
    result = json.loads(out)
    assert result["seconds"] > 0.5 * seconds, result
    return float(result["bytes"] * 8 / result["seconds"])


# -- no root needed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"rate": "fast"}, "Shaping.rate"),
        ({"rate": "100bit"}, "1kbit"),
        ({"rate": "5mbit", "burst": "100B"}, "Shaping.burst"),
        ({"rate": "5mbit", "limit": "10p"}, "Shaping.limit"),
        ({"rate": "5mbit", "ceil": "10mbit"}, "'htb' only"),
        ({"rate": "5mbit", "qdisc": "htb", "limit": "64kB"}, "'tbf' only"),
        ({"rate": "5mbit", "qdisc": "htb", "ceil": "1mbit"}, "must be >= rate"),
        ({"rate": "5mbit", "qdisc": "netem"}, "Shaping.qdisc"),
    ],
)
def test_shaping_validates_its_fields(kwargs: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Shaping(**kwargs)  # type: ignore[arg-type]


def test_shaping_defaults_and_tc_arguments() -> None:
    tbf = Shaping(rate="5mbit")
    assert (tbf.rate_bps, tbf.burst_bytes, tbf.limit_bytes) == (5_000_000, 6250, 31250)
    assert tbf.tc_commands("eth0") == [
        ["qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "5000000bit", "burst", "6250b",
         "limit", "31250b"],
    ]  # fmt: skip
    assert Shaping(rate="1mbit").burst_bytes == 4096  # at least 4 KiB
    htb = Shaping(rate=2_000_000, qdisc="htb", ceil="4mbit", burst="16KiB")
    commands = htb.tc_commands("p1")
    assert [c[:2] for c in commands] == [["qdisc", "add"], ["class", "add"], ["class", "add"]]
    assert commands[2][-6:] == ["rate", "2000000bit", "ceil", "4000000bit", "burst", "16384b"]


@pytest.mark.parametrize(
    ("hosts", "subnet", "words"),
    [
        (["solo"], "10.77.0.0/24", "two or more"),
        (["a", "a"], "10.77.0.0/24", "unique"),
        (["a", "b c"], "10.77.0.0/24", "host name"),
        (["a", "b", "c"], "10.77.0.0/31", "no room"),
        (["a", "b"], "10.77.0.1/24", "host bits"),
    ],
)
def test_network_refuses_bad_arguments(hosts: list[str], subnet: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        HostNetwork(hosts, subnet=subnet)


def test_unavailable_says_why_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HostsUnavailable, match=r"needs root \(CAP_SYS_ADMIN"):
        check_available()
    with pytest.raises(HostsUnavailable, match="needs root"):
        HostNetwork().open()


def test_hosts_error_carries_command_and_stderr() -> None:
    err = HostsError(["ip", "netns", "add", "x"], b"Permission denied\n", 1)
    assert err.stderr == "Permission denied"
    assert str(err) == "`ip netns add x` exited with 1: Permission denied"
    assert "timed out" in str(HostsError(["sleep"], None))


# -- in namespaces --------------------------------------------------------------------------


@pytest.mark.netns
def test_namespaces_are_made_and_removed(netns: None) -> None:
    net = HostNetwork(hosts=["station", "robot"], subnet="10.99.5.0/24")
    names = [net.namespace("station"), net.namespace("robot")]
    assert all(name.startswith(f"tp-{net.id}-") for name in names)
    with net:
        listed = netns_list()
        assert all(name in listed for name in names)
        assert (net.address("station"), net.address("robot")) == ("10.99.5.1", "10.99.5.2")
        out = net.run("robot", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert "10.99.5.2/24" in out
        assert "LOWER_UP" in net.run("robot", ["ip", "link", "show", "lo"]).stdout
        with pytest.raises(KeyError, match="no host 'camera'"):
            net.address("camera")
    assert net.id not in netns_list()
    net.close()  # idempotent


@pytest.mark.netns
def test_two_networks_do_not_clash(netns: None) -> None:
    with HostNetwork() as one, HostNetwork() as two:
        assert one.id != two.id
        assert one.address("a") == two.address("a")  # same subnet, separate namespaces
        assert ping(one, "a", "b", count=20)["received"] == 20


@pytest.mark.netns
def test_hosts_reach_each_other_over_udp(pair: HostNetwork) -> None:
    result = ping(pair, "station", "robot", count=500)
    print(f"\nveth UDP round trip (python, 64 B): p50 {result['p50_us']:.1f} µs")
    assert result["received"] == 500
    assert 0 < result["p50_us"] < 5000
    # Separate hosts: no default route, only the veth's subnet is reachable.
    assert pair.run("robot", ["ip", "route", "get", "10.88.0.1"], check=False).returncode != 0


@pytest.mark.netns
def test_three_hosts_meet_on_a_bridge(netns: None) -> None:
    with HostNetwork(hosts=["station", "robot", "camera"]) as net:
        assert len(net.run("robot", ["ip", "-o", "link"]).stdout.splitlines()) == 2  # lo, eth0
        for src, dst in [("station", "robot"), ("camera", "station"), ("robot", "camera")]:
            assert ping(net, src, dst, count=20)["received"] == 20
        bridge = f"tp-{net.id}-_bridge"
        assert bridge in netns_list()
    assert net.id not in netns_list()


@pytest.mark.netns
@pytest.mark.parametrize("qdisc", ["tbf", "htb"])
def test_shaping_limits_throughput(pair: HostNetwork, shaping_available: None,
                                   qdisc: str) -> None:  # fmt: skip
    unshaped = throughput_bps(pair, "station", "robot", 0.3)
    pair.shape("station", "robot", Shaping(rate="5mbit", qdisc=qdisc))  # type: ignore[arg-type]
    shaped = throughput_bps(pair, "station", "robot", 1.5)
    print(f"\n{qdisc} 5 mbit: measured {shaped / 1e6:.2f} Mbit/s; unshaped {unshaped / 1e6:.0f}")
    assert 0.7 * 5e6 < shaped < 1.15 * 5e6
    assert unshaped > 20 * shaped
    stats = pair.run("station", ["tc", "-s", "qdisc", "show", "dev", "eth0"]).stdout
    assert f"qdisc {qdisc}" in stats
    pair.unshape("station", "robot")
    assert f"qdisc {qdisc}" not in pair.run("station", ["tc", "qdisc", "show"]).stdout


@pytest.mark.netns
def test_one_way_shaping_leaves_the_way_back_alone(pair: HostNetwork,
                                                   shaping_available: None) -> None:  # fmt: skip
    pair.shape("station", "robot", Shaping(rate="2mbit"), both_ways=False)
    up = pair.run("station", ["tc", "qdisc", "show", "dev", "eth0"]).stdout
    down = pair.run("robot", ["tc", "qdisc", "show", "dev", "eth0"]).stdout
    assert "tbf" in up and "rate 2Mbit" in up
    assert "tbf" not in down
    assert throughput_bps(pair, "robot", "station", 0.3) > 50e6


@pytest.mark.netns
def test_processes_and_namespaces_go_on_exception(netns: None) -> None:
    with pytest.raises(RuntimeError, match="boom"), HostNetwork() as net:
        sleeper = net.popen("a", ["sleep", "60"])
        # A grandchild that outlives its parent: only `ip netns pids` finds it.
        orphaner = net.popen("b", ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"])
        out, _ = orphaner.communicate(timeout=5)
        orphan = int(out)
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert process_state(orphan) in ("gone", "Z")
    assert net.id not in netns_list()


@pytest.mark.netns
def test_cleanup_on_keyboard_interrupt(netns: None) -> None:
    with pytest.raises(KeyboardInterrupt), HostNetwork() as net:
        raise KeyboardInterrupt
    assert net.id not in netns_list()


@pytest.mark.netns
def test_cleanup_when_the_process_gets_sigterm(netns: None) -> None:
    script = textwrap.dedent("""
        import time
        from netsim.hosts import HostNetwork
        with HostNetwork() as net:
            net.popen("a", ["sleep", "60"])
            print(net.id, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    net_id = proc.stdout.readline().strip()
    assert net_id in netns_list()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert net_id not in netns_list()


@pytest.mark.netns
def test_failing_command_raises_with_stderr(pair: HostNetwork) -> None:
    with pytest.raises(HostsError, match=r"nonexistent0.* does not exist") as info:
        pair.run("station", ["ip", "link", "show", "nonexistent0"])
    assert info.value.command[:3] == ["ip", "netns", "exec"]
    assert pair.run("station", ["false"], check=False).returncode == 1
