"""MCP tunnels: reach MCP servers in a private network through an outbound-only connection.

- :mod:`.hub`: :class:`TunnelHub`, Hangar's side (one per app): the connected clients, and
  :meth:`TunnelHub.transport_for` (an httpx2 transport for URLs on a tunnel's domain).
- :mod:`.client`: :class:`TunnelClient`, the ``hangar tunnel`` relay that runs in the private
  network.
- :mod:`.protocol`: the frames both speak over one WebSocket.

The API objects (tunnels, certificates, tokens) live in ``hangar.store.tunnels`` and
``hangar.http.routes.tunnels``.
"""

from hangar.tunnel.client import Route, TunnelClient, TunnelRejected, parse_route
from hangar.tunnel.hub import TunnelHub, TunnelTransport

__all__ = ["Route", "TunnelClient", "TunnelHub", "TunnelRejected", "TunnelTransport", "parse_route"]
