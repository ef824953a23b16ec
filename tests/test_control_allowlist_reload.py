"""The live allowlist: the robot follows its allowlist file or directory, refuses removed keys
and closes their sessions, and keeps the list in force when an edit is bad."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Keys, control_server

from telepresence import aio
from telepresence.control import keys as keys_module
from telepresence.control.client import ControlClient
from telepresence.control.keys import (
    Allowlist,
    generate_keypair,
    load_keypair,
    load_public_key,
)
from telepresence.control.messages import Bye, Hello, LeaseState, LeaseTake, Reserve, Welcome
from telepresence.control.server import (
    NOT_ALLOWED,
    REVOKED,
    ControlServer,
    ControlState,
    ServerSession,
)
from telepresence.exceptions import AccessRefused, ConfigError, ControlRefused

S = 1_000_000_000
TIMEOUT_S = 10.0
"""Bound on every wait for the robot to notice an edit (it checks every `CHECK_EVERY_S`)."""
CHECK_EVERY_S = 0.2


def later_clock() -> int:
    """A wall clock 10 s ahead: reads are never racy (`keys.RACY_NS`), so `check` reads only
    when the signature changed."""
    return time.time_ns() + 10 * S


class Operators:
    """Alice (from `Keys`), bob and carol, with their Z85 public keys."""

    def __init__(self, tmp_path: Path) -> None:
        self.keys = Keys(tmp_path / "k")
        self.secret = {"alice": self.keys.operator_secret}
        self.public_file = {"alice": self.keys.operator_public}
        for name in ("bob", "carol"):
            public, secret = generate_keypair(tmp_path / "elsewhere", name)
            self.public_file[name], self.secret[name] = public, secret
        self.z85 = {n: load_public_key(str(p)) for n, p in self.public_file.items()}

    def line(self, name: str) -> str:
        return f"{self.z85[name].decode()} {name}\n"

    def write_file(self, path: Path, *names: str, extra: str = "") -> None:
        path.write_text(
            "# operators allowed on this robot\n" + "".join(map(self.line, names)) + extra
        )


def make_server(ops: Operators, tmp_path: Path, allowlist: Path, **kw: float) -> ControlServer:
    srv: ControlServer = control_server(
        ops.keys.robot_secret, allowlist, tmp_path,
        check_every_s=kw.get("check_every_s", CHECK_EVERY_S),
    )  # fmt: skip
    return srv


def client(endpoint: str, ops: Operators, name: str) -> ControlClient:
    return ControlClient(
        endpoint,
        keypair=load_keypair(ops.secret[name]),
        robot_public_key=load_public_key(str(ops.keys.robot_public)),
        station=f"{name}-station",
        clock=time.monotonic_ns,
    )


async def wait_for(what: str, predicate: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.02)


def operators_of(srv: ControlServer) -> list[str]:
    return sorted(s.operator for s in srv.state.sessions.values())


# -- the sans-IO parts ------------------------------------------------------------------------


def test_revoke_closes_the_sessions_of_removed_keys_as_any_close_does() -> None:
    st = ControlState(
        manifest={},
        data_addresses=[],
        control_rate_hz=500,
        secure=True,
        link_capacity_bps=100e6,
        lease_ttl_ns=2 * S,
    )
    closed: list[ServerSession] = []
    st.on_close = closed.append
    a, b = b"station-a", b"station-b"
    ka, kb = b"A" * 40, b"B" * 40
    (_, wa), _ = st.handle(a, "alice", Hello(station="a"), 0, ka)
    st.handle(b, "bob", Hello(station="b", role="observe"), 0, kb)
    assert isinstance(wa, Welcome)
    st.handle(a, "alice", LeaseTake(), 1)
    st.handle(
        a,
        "alice",
        Reserve(
            stream=3, traffic_class="video", rate_bps=5e6, burst_bytes=60000, max_packet_bytes=1200
        ),
        1,
    )
    assert st.sessions[wa.session].key == ka and st.lease.holder == wa.session

    assert st.revoke({b"C" * 40}, REVOKED, 2) == []  # no session of that key: nothing to say
    replies = st.revoke({ka}, REVOKED, 2)

    assert replies[0] == (a, Bye(reason=REVOKED))
    assert [(who, type(m)) for who, m in replies[1:]] == [(b, LeaseState)]
    lease = replies[1][1]
    assert isinstance(lease, LeaseState) and lease.holder is None
    assert [s.session for s in closed] == [wa.session]  # on_close: the data plane drops its keys
    assert st.lease.holder is None and st.admission["up"].reserved_bps == 0
    assert [s.operator for s in st.sessions.values()] == ["bob"]


def test_allowlist_file_check_reads_only_changes_and_keeps_the_list_on_a_bad_edit(
    tmp_path: Path,
) -> None:
    ops = Operators(tmp_path)
    path = tmp_path / "authorized_keys"
    ops.write_file(path, "alice")
    allowlist = Allowlist.load(path, wall_clock=later_clock)
    assert allowlist.keys == {ops.z85["alice"]: "alice"}
    assert allowlist.check() is None  # unchanged on disk: not read

    ops.write_file(path, "alice", "bob")
    change = allowlist.check()
    assert change is not None and change.added == {ops.z85["bob"]: "bob"} and not change.removed
    assert change.describe() == f"added bob ({ops.z85['bob'][:8].decode()})"

    # a malformed line: the error names the file, the line and the problem; the list stays
    ops.write_file(path, "alice", "bob", extra="not-a-key carol\n")
    with pytest.raises(ConfigError) as bad:
        allowlist.check()
    assert str(bad.value) == (
        f"{path}:4: 'not-a-key' is not a 40-character Z85 public key"
    )  # line 1 is the comment
    assert set(allowlist.keys.values()) == {"alice", "bob"}
    assert allowlist.status()["last_error"] == str(bad.value)
    assert allowlist.check() is None  # reported once, not at every check
    with pytest.raises(ConfigError, match=":4: 'not-a-key'"):
        allowlist.reload()  # ... but again when asked to read it

    # an emptied file (a half-written one, or all lines deleted) never empties the list
    path.write_text("")
    with pytest.raises(ConfigError, match="lists no keys"):
        allowlist.check()
    path.unlink()
    with pytest.raises(ConfigError, match=f"cannot read authorized keys {path}"):
        allowlist.check()
    assert set(allowlist.keys.values()) == {"alice", "bob"}

    ops.write_file(path, "bob")
    change = allowlist.check()
    assert change is not None and change.removed == {ops.z85["alice"]: "alice"}
    assert allowlist.error is None and allowlist.status()["keys"] == 1
    assert allowlist.status()["operators"] == ["bob"]

    (path.parent / "renamed").write_text(f"{ops.z85['bob'].decode()} robert\n")
    (path.parent / "renamed").replace(path)  # a new inode: an atomic replace
    change = allowlist.check()
    assert change is not None and change.renamed == {ops.z85["bob"]: ("bob", "robert")}


def test_a_read_soon_after_a_write_is_repeated_at_the_next_check(tmp_path: Path) -> None:
    """On coarse timestamps a second write may keep the signature: a racy read is done again."""
    ops = Operators(tmp_path)
    path = tmp_path / "authorized_keys"
    ops.write_file(path, "alice")
    allowlist = Allowlist.load(path)  # the real clock: the file was written just now
    change = allowlist.check()
    assert change is not None and not change  # read again, and the same
    assert Allowlist.load(path, wall_clock=later_clock).check() is None


def test_a_file_changing_while_it_is_read_is_read_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = Operators(tmp_path)
    path = tmp_path / "authorized_keys"
    ops.write_file(path, "alice", "bob")
    allowlist = Allowlist.load(path, wall_clock=later_clock)
    real_read = keys_module._read_authorized_keys

    def read_while_a_writer_finishes(p: Path) -> dict[bytes, str]:
        keys = real_read(p)  # reads a first half: bob is missing
        with p.open("a") as f:
            f.write(ops.line("carol"))
        return keys

    ops.write_file(path, "alice")
    monkeypatch.setattr(keys_module, "_read_authorized_keys", read_while_a_writer_finishes)
    assert allowlist.check() is None  # not used: bob is not revoked on a half-written file
    assert set(allowlist.keys.values()) == {"alice", "bob"}
    monkeypatch.setattr(keys_module, "_read_authorized_keys", real_read)
    change = allowlist.check()
    assert change is not None
    assert set(change.added.values()) == {"carol"} and set(change.removed.values()) == {"bob"}


def test_a_directory_allowlist_ignores_hidden_files_and_reports_a_bad_key_file(
    tmp_path: Path,
) -> None:
    ops = Operators(tmp_path)
    directory = ops.keys.allowlist
    allowlist = Allowlist.load(directory, wall_clock=later_clock)
    assert allowlist.keys == {ops.z85["alice"]: "alice"}
    (directory / ".alice.key.swp").write_text("editor state")
    (directory / "notes.txt").write_text("not a key file")
    assert allowlist.check() is None
    (directory / "carol.key").write_text('public-key = "tooshort"\n')
    with pytest.raises(ConfigError, match=r"carol\.key: 'tooshort' is not a 40-character"):
        allowlist.check()
    assert allowlist.keys == {ops.z85["alice"]: "alice"}


def test_a_directory_allowlist_reads_no_secret_key_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ops = Operators(tmp_path)
    directory = ops.keys.allowlist
    shutil.copy(ops.secret["bob"], directory)  # bob.key_secret holds bob's public key too
    with caplog.at_level(logging.WARNING, logger="telepresence.control.keys"):
        allowlist = Allowlist.load(directory, wall_clock=later_clock)
    assert allowlist.keys == {ops.z85["alice"]: "alice"}  # bob is not allowed by it
    assert "holds secret key files, not read: bob.key_secret" in caplog.text
    for f in directory.glob("alice.*"):
        f.unlink()
    with pytest.raises(ConfigError, match=r"holds no \.key files"):
        Allowlist.load(directory, wall_clock=later_clock)


# -- the robot's control plane over ZeroMQ ----------------------------------------------------


def test_a_key_added_to_the_file_lets_its_operator_in_without_a_restart(tmp_path: Path) -> None:
    ops = Operators(tmp_path)
    path = tmp_path / "authorized_keys"
    ops.write_file(path, "alice")

    async def main() -> None:
        # no periodic check during the test: the check at the handshake is what lets bob in
        srv = make_server(ops, tmp_path, path, check_every_s=3600)
        endpoint = await srv.start()
        clients = [client(endpoint, ops, "bob")]
        try:
            with pytest.raises(AccessRefused, match="refused this operator's key"):
                await clients[0].connect(timeout_s=5)
            ops.write_file(path, "alice", "bob")
            clients.append(client(endpoint, ops, "bob"))
            welcome = await clients[1].connect(timeout_s=5)
            assert srv.state.sessions[welcome.session].operator == "bob"
            status = srv.status()["allowlist"]
            assert status["path"] == str(path) and status["keys"] == 2
            assert status["operators"] == ["alice", "bob"] and status["last_error"] is None
        finally:
            for c in clients:
                await c.close()
            await srv.close()

    aio.run(main())


def test_a_key_removed_from_the_file_closes_its_session_releases_its_lease_and_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ops = Operators(tmp_path)
    path = tmp_path / "authorized_keys"
    ops.write_file(path, "alice", "bob")

    async def main() -> None:
        srv = make_server(ops, tmp_path, path)
        closed: list[ServerSession] = []
        srv.state.on_close = closed.append
        endpoint = await srv.start()
        alice, bob = client(endpoint, ops, "alice"), client(endpoint, ops, "bob")
        late = client(endpoint, ops, "alice")
        try:
            wa = await alice.connect(timeout_s=5)
            await bob.connect(timeout_s=5)
            assert (await alice.take_lease()).you_hold
            await wait_for("bob learns alice holds the lease", lambda: bob.lease is not None
                           and bob.lease.holder == wa.session)  # fmt: skip

            ops.write_file(path, "bob")  # the robot notices on its own (periodic check)
            await wait_for("alice's session closed", lambda: wa.session not in srv.state.sessions)

            assert [s.session for s in closed] == [wa.session]  # on_close: data-plane keys go
            assert srv.state.lease.holder is None and operators_of(srv) == ["bob"]
            await wait_for("bob learns the lease is free", lambda: bob.lease is not None
                           and bob.lease.holder is None)  # fmt: skip
            await wait_for("alice's station is told", lambda: any(
                REVOKED in r.getMessage() and r.name == "telepresence.control.client"
                for r in caplog.records))  # fmt: skip
            # her connection passed its handshake earlier: what it sends now is refused
            with pytest.raises(ControlRefused, match=NOT_ALLOWED):
                await alice.sync_clock(exchanges=1)
            assert operators_of(srv) == ["bob"]
            # and a new handshake with her key fails
            with pytest.raises(AccessRefused, match="refused this operator's key"):
                await late.connect(timeout_s=5)
            assert srv.status()["revoked_sessions"] == 1
            assert srv.status()["revoked_messages"] >= 1
            label = f"alice ({ops.z85['alice'][:8].decode()})"
            assert any(f"removed {label}" in r.getMessage() for r in caplog.records)
        finally:
            for c in (alice, bob, late):
                await c.close()
            await srv.close()

    aio.run(main())


def test_reload_reads_the_allowlist_at_once(tmp_path: Path) -> None:
    """`reload()` (SIGHUP) does not wait for the periodic check."""
    ops = Operators(tmp_path)
    path = tmp_path / "authorized_keys"
    ops.write_file(path, "alice", "bob")

    async def main() -> None:
        srv = make_server(ops, tmp_path, path, check_every_s=3600)
        endpoint = await srv.start()
        bob = client(endpoint, ops, "bob")
        try:
            wb = await bob.connect(timeout_s=5)
            ops.write_file(path, "alice")
            change = srv.reload()
            assert change is not None and set(change.removed.values()) == {"bob"}
            assert wb.session not in srv.state.sessions  # closed by reload() itself
            again = srv.reload()
            assert again is not None and not again  # read again: no change
        finally:
            await bob.close()
            await srv.close()

    aio.run(main())


def test_a_bad_edit_keeps_the_allowlist_in_force_and_reports_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ops = Operators(tmp_path)
    path = tmp_path / "authorized_keys"
    ops.write_file(path, "alice")

    async def main() -> None:
        srv = make_server(ops, tmp_path, path)
        endpoint = await srv.start()
        alice = client(endpoint, ops, "alice")
        others: list[ControlClient] = []
        try:
            wa = await alice.connect(timeout_s=5)
            ops.write_file(path, "alice", extra="not-a-key carol\n")

            def error() -> str | None:
                value = srv.status()["allowlist"]["last_error"]
                return None if value is None else str(value)

            await wait_for("the error is reported", lambda: error() is not None)
            assert error() == f"{path}:3: 'not-a-key' is not a 40-character Z85 public key"
            status = srv.status()["allowlist"]
            assert status["keys"] == 1 and status["last_error_at"] is not None
            logged = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert logged and f"{path}:3: 'not-a-key'" in logged[-1].getMessage()
            assert "keeping the 1 key(s) in force" in logged[-1].getMessage()
            assert wa.session in srv.state.sessions  # alice's session goes on
            others.append(client(endpoint, ops, "alice"))
            await others[-1].connect(timeout_s=5)  # and her key still opens new ones

            path.write_text("")  # truncated, as by an editor about to write it again
            await wait_for("the empty file is reported", lambda: "lists no keys" in (error() or ""))
            assert wa.session in srv.state.sessions and srv.status()["allowlist"]["keys"] == 1

            ops.write_file(path, "alice", "bob")  # fixed
            await wait_for("the error is cleared", lambda: error() is None)
            others.append(client(endpoint, ops, "bob"))
            await others[-1].connect(timeout_s=5)
            assert operators_of(srv) == ["alice", "alice", "bob"]
        finally:
            for c in (alice, *others):
                await c.close()
            await srv.close()

    aio.run(main())


def test_a_directory_allowlist_is_followed_the_same_way(tmp_path: Path) -> None:
    ops = Operators(tmp_path)
    directory = ops.keys.allowlist  # operators/alice.key

    async def main() -> None:
        srv = make_server(ops, tmp_path, directory)
        closed: list[ServerSession] = []
        srv.state.on_close = closed.append
        endpoint = await srv.start()
        alice, bob, late = (client(endpoint, ops, n) for n in ("alice", "bob", "alice"))
        try:
            wa = await alice.connect(timeout_s=5)
            assert (await alice.take_lease()).you_hold

            shutil.copy(ops.public_file["bob"], directory / "bob.key")
            await bob.connect(timeout_s=5)  # checked at the handshake

            (directory / "carol.key").write_text("public-key = \n")  # a bad key file
            await wait_for("the bad file is reported", lambda: "carol.key" in str(
                srv.status()["allowlist"]["last_error"]))  # fmt: skip
            assert sorted(srv.status()["allowlist"]["operators"]) == ["alice", "bob"]
            assert wa.session in srv.state.sessions

            (directory / "carol.key").unlink()
            for f in directory.glob("alice.*"):
                f.unlink()
            await wait_for("alice's session closed", lambda: wa.session not in srv.state.sessions)
            assert [s.session for s in closed] == [wa.session]
            assert srv.state.lease.holder is None and operators_of(srv) == ["bob"]
            assert srv.status()["allowlist"]["last_error"] is None
            with pytest.raises(AccessRefused):
                await late.connect(timeout_s=5)
        finally:
            for c in (alice, bob, late):
                await c.close()
            await srv.close()

    aio.run(main())
