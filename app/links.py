"""Absolute links to shares, built from configuration rather than from what a client claims.

With `Host: evil.example` the API used to hand back share and delete links on evil.example, and
the share page's canonical URL pointed there. The base is PUBLIC_URL (on a Hugging Face Space,
https://$SPACE_HOST); without one, the request's own host only if it is an allowed host name,
else the link stays relative to the site the client is on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

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
    def from_settings(cls, settings, env: Mapping[str, str] | None = None) -> PublicLinks:
        env = os.environ if env is None else env
        public = settings.public_url
        if not public and env.get("SPACE_HOST"):
            public = f"https://{env['SPACE_HOST']}"
        hosts = settings.allowed_hosts.split(",")
        if settings.host not in ("0.0.0.0", "::", ""):
            hosts.append(settings.host)  # the address the server was told to answer on
        return cls(public, hosts)

    def base(self, host_header: str | None, scheme: str = "http", root_path: str = "") -> str:
        """Where absolute links start; "" (links relative to the current site) if unknown."""
        if self.public_url:
            return self.public_url
        host = (host_header or "").strip().lower()
        if host and self.host_allowed(host):
            return f"{scheme}://{host}{root_path.rstrip('/')}"
        return root_path.rstrip("/")

    def host_allowed(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in self.allowed_hosts or host in self.allowed_hosts

    def origins(self) -> list[str]:
        """Origins trusted for writes besides the request's own host (the public site)."""
        if not self.public_url:
            return []
        parts = urlsplit(self.public_url)
        return [f"{parts.scheme}://{parts.netloc}"]
