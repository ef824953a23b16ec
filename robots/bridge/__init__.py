"""The ``bridge`` driver: a robot driver that lives in another process, possibly written in C++
or Rust, reached over ZeroMQ (``ipc://`` on one host) with a language-neutral message format.

- `robots.bridge.protocol`: the message format (multipart: a type frame and a JSON frame);
- `robots.bridge.link`: the endpoint's side of the protocol as a sans-IO state machine;
- `robots.bridge.driver`: `BridgeDriver` and `BridgeConfig`, the socket adapter;
- `robots.bridge.server`: the reference driver process, ``python -m robots.bridge serve``.

The protocol is specified in ``docs/drivers.md``, "Out-of-process drivers: the bridge".
"""

from robots.bridge.driver import BridgeConfig, BridgeDriver
from robots.bridge.exceptions import BridgeProtocolError, DriverProcessError, DriverUnavailable

__all__ = [
    "BridgeConfig",
    "BridgeDriver",
    "BridgeProtocolError",
    "DriverProcessError",
    "DriverUnavailable",
]
