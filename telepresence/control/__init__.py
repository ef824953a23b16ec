"""The control plane: session set-up, identity, manifest, clock sync, reservations and the
control lease, over ZeroMQ with CURVE security (``docs/protocol.md``, "Control plane")."""
