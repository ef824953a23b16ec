"""The control plane over real ZeroMQ with CURVE: allowlist, sessions, lease, reservations."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from helpers import Keys, control_server

from telepresence import aio
from telepresence.control.client import ControlClient
from telepresence.control.keys import (
    generate_keypair,
    load_authorized_keys,
    load_keypair,
    load_public_key,
)
from telepresence.control.server import ControlServer, ControlState
from telepresence.exceptions import AccessRefused, ControlRefused, RobotUnreachable


def server(keys: Keys, tmp_path: Path) -> ControlServer:
    srv: ControlServer = control_server(keys.robot_secret, keys.allowlist, tmp_path)
    return srv


def client(endpoint: str, secret: Path, keys: Keys, station: str = "s") -> ControlClient:
    return ControlClient(
        endpoint,
        keypair=load_keypair(secret),
        robot_public_key=load_public_key(str(keys.robot_public)),
        station=station,
        clock=time.monotonic_ns,
    )


def test_allowed_operator_gets_a_session_and_the_lease(tmp_path: Path) -> None:
    keys = Keys(tmp_path / "k")

    async def main() -> None:
        srv = server(keys, tmp_path)
        endpoint = await srv.start()
        c = client(endpoint, keys.operator_secret, keys)
        try:
            welcome = await c.connect(timeout_s=3)
            assert welcome.manifest == {"robot_id": "r1"} and len(welcome.secret) == 64
            offset = await c.sync_clock(exchanges=8)
            assert offset.offset_ns is not None and abs(offset.offset_ns) < 2_000_000
            lease = await c.take_lease()
            assert lease.you_hold and srv.state.lease.holder == welcome.session
            session = srv.state.sessions[welcome.session]
            assert session.operator == "alice"  # named by the allowlist
        finally:
            await c.close()
            await asyncio.sleep(0.1)
            assert not srv.state.sessions  # bye closed it
            await srv.close()

    aio.run(main())


def test_key_not_on_the_allowlist_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    keys = Keys(tmp_path / "k")
    _, stranger = generate_keypair(tmp_path / "other", "mallory")

    async def main() -> None:
        srv = server(keys, tmp_path)
        endpoint = await srv.start()
        c = client(endpoint, stranger, keys)
        try:
            with pytest.raises(AccessRefused, match="refused this operator's key"):
                await c.connect(timeout_s=3)
            assert not srv.state.sessions
        finally:
            await c.close()
            await srv.close()

    aio.run(main())


def test_two_stations_contend_for_control(tmp_path: Path) -> None:
    keys = Keys(tmp_path / "k")
    bob_secret = keys.add_operator("bob")

    async def main() -> None:
        state = ControlState(
            manifest={},
            data_addresses=[":7000"],
            control_rate_hz=500,
            secure=True,
            link_capacity_bps=10e6,
            lease_ttl_ns=300_000_000,
        )
        srv = ControlServer(
            state,
            bind=f"ipc://{tmp_path / 'c2.sock'}",
            keypair=load_keypair(keys.robot_secret),
            authorized=load_authorized_keys(keys.allowlist),
            clock=time.monotonic_ns,
        )
        endpoint = await srv.start()
        alice = client(endpoint, keys.operator_secret, keys, "alice-station")
        bob = client(endpoint, bob_secret, keys, "bob-station")
        try:
            await alice.connect()
            await bob.connect()
            await alice.take_lease()
            with pytest.raises(ControlRefused, match="held by alice at alice-station"):
                await bob.take_lease()
            await alice.release_lease()
            await asyncio.sleep(0.05)
            assert (await bob.take_lease()).you_hold
            # reservations: a request that does not fit is refused with the reason
            grant = await bob.reserve(
                stream=1,
                traffic_class="control",
                rate_bps=1e6,
                burst_bytes=3000,
                max_packet_bytes=200,
            )
            assert grant.dscp == 46
            with pytest.raises(ControlRefused, match="video stream 3 asks 20 Mbit/s"):
                await bob.reserve(
                    stream=3,
                    traffic_class="video",
                    rate_bps=20e6,
                    burst_bytes=60000,
                    max_packet_bytes=1200,
                )
        finally:
            await alice.close()
            await bob.close()
            await srv.close()

    aio.run(main())


def test_no_robot_is_reported(tmp_path: Path) -> None:
    keys = Keys(tmp_path / "k")

    async def main() -> None:
        c = client(f"ipc://{tmp_path / 'nobody.sock'}", keys.operator_secret, keys)
        try:
            with pytest.raises(RobotUnreachable, match="no welcome"):
                await c.connect(timeout_s=0.3)
        finally:
            await c.close()

    aio.run(main())
