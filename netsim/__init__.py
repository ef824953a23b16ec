"""Network emulation for the teleoperation runtime: stdlib and numpy only, nothing of
``telepresence`` or ``robots``.

Modules, imported one by one (``import netsim`` loads only the errors):

- `netsim.units` — link parameters as people write them (``10ms``, ``20mbit``, ``64kB``);
- `netsim.link` — sans-IO link models: delay, jitter, loss, rate, queues, traces;
- `netsim.relay` — a UDP relay that applies a link model between two endpoints;
- `netsim.profiles` — named link profiles (fibre, 5G, Starlink, ...);
- `netsim.hosts` — test hosts in network namespaces joined by veth pairs, shaped by kernel
  qdiscs (``tbf``, ``htb``); needs root;
- `netsim.exceptions` — the error tree.
"""

from netsim.exceptions import HostsError, HostsUnavailable, NetsimError

__all__ = ["HostsError", "HostsUnavailable", "NetsimError"]
