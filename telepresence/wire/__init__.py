"""The wire protocol: a fixed 32-byte header and one body per message type (``docs/protocol.md``).

Sans-IO: `encode` turns a message into bytes, `decode` turns bytes into a `Datagram`; neither
touches a socket or a clock.
"""

from telepresence.wire.codec import Datagram, decode, encode, encode_into, encoded_size
from telepresence.wire.header import (
    COMMAND_TYPES,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    Header,
    MessageType,
)
from telepresence.wire.messages import (
    BODY_CODECS,
    Counters,
    Heartbeat,
    Message,
    RobotMode,
    Role,
    Telemetry,
)

__all__ = [
    "BODY_CODECS",
    "COMMAND_TYPES",
    "HEADER_SIZE",
    "MAGIC",
    "VERSION",
    "Counters",
    "Datagram",
    "Header",
    "Heartbeat",
    "Message",
    "MessageType",
    "RobotMode",
    "Role",
    "Telemetry",
    "decode",
    "encode",
    "encode_into",
    "encoded_size",
]
