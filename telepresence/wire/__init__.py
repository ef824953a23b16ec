"""The wire protocol: a fixed 32-byte header and one body per message type (``docs/protocol.md``).

Sans-IO: `encode` turns a message into bytes, `decode` turns bytes into a `Datagram`; neither
touches a socket or a clock. Authenticated datagrams (`FLAG_AUTHENTICATED`) are sealed and opened
by ``telepresence.security``, which builds on `encode_into` (with `flags` and a `trailer` for
the tag) and `decode_body`; `decode` rejects them (it holds no key). `encode_parts` gives the
header and body of a sealed datagram apart, for a peer that seals them itself.
"""

from telepresence.wire.codec import (
    Datagram,
    decode,
    decode_body,
    encode,
    encode_into,
    encode_parts,
    encoded_size,
)
from telepresence.wire.header import (
    AUTH_TAG_SIZE,
    COMMAND_TYPES,
    FLAG_AUTHENTICATED,
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
    "AUTH_TAG_SIZE",
    "BODY_CODECS",
    "COMMAND_TYPES",
    "FLAG_AUTHENTICATED",
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
    "decode_body",
    "encode",
    "encode_into",
    "encode_parts",
    "encoded_size",
]
