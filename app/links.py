"""Absolute links to shares, built from configuration rather than from what a client claims.

With `Host: evil.example` the API used to hand back share and delete links on evil.example, and
the share page's canonical URL pointed there. The base is PUBLIC_URL (on a Hugging Face Space,
https://$SPACE_HOST); without one, the request's own host only if it is an allowed host name,
else the link stays relative to the site the client is on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# A Host header is an authority without userinfo: a DNS name, an IPv4 address or a bracketed
# IPv6 address, and an optional port. `localhost:1@evil.example` (userinfo) used to pass the
# allowed-host check on its first part and made links to evil.example.
_HOST_RE = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?)(?::(\d{1,5}))?$")

DEFAULT_ALLOWED_HOSTS = "localhost,127.0.0.1,[::1]"


class PublicLinks:
    def __init__(
        self,
        public_url: str | None = None,
        allowed_hosts: Iterable[str] = tuple(DEFAULT_ALLOWED_HOSTS.split(",")),
    ):
        self.public_url = public_url.rstrip("/") if public_url else None
        self.allowed_hosts = {h.strip().lower() for h in allowed_hosts if h.strip()}

    @classmethod
    def from_settings(cls, settings) -> PublicLinks:
        public = settings.resolved_public_url()
        hosts = settings.allowed_hosts.split(",")
        if settings.host not in ("0.0.0.0", "::", ""):
            hosts.append(settings.host)  # the address the server was told to answer on
        return cls(public, hosts)

    def base(self, host_header: str | None, scheme: str = "http", root_path: str = "") -> str:
        """Where absolute links start; "" (links relative to the current site) if unknown."""
        if self.public_url:
            return self.public_url
        authority = parse_authority(host_header)
        if authority and self.host_allowed(host_header):
            name, port = authority
            netloc = name if port is None else f"{name}:{port}"
            return f"{scheme}://{netloc}{root_path.rstrip('/')}"
        return root_path.rstrip("/")

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether `host_header` is a well-formed authority whose name we answer to."""
        authority = parse_authority(host_header)
        return authority is not None and authority[0] in self.allowed_hosts

    def origins(self) -> list[str]:
        """Origins trusted for writes besides the request's own host (the public site)."""
        if not self.public_url:
            return []
        parts = urlsplit(self.public_url)
        return [f"{parts.scheme}://{parts.netloc}"]


def parse_authority(host_header: str | None) -> tuple[str, int | None] | None:
    """(name, port) of a Host header, lower-cased; None if it is not a plain host[:port]."""
    match = _HOST_RE.match((host_header or "").strip().lower())
    if match is None:
        return None
    port = int(match.group(2)) if match.group(2) else None
    if port is not None and not 1 <= port <= 65535:
        return None
    return match.group(1), port
