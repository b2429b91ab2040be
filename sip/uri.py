"""SIP URIs (RFC 3261 §19.1); the GB/T 28181 20-digit IDs in them follow :mod:`sip.gbid`.

GB/T 28181-2016 §9.1 addresses every device and channel as
``sip:<20-digit id>@<domain or host:port>``; the user part is the identity
the platform cares about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sip.errors import SipParseError

# The ID rules live in sip.gbid; re-exported because URIs are where IDs are read.
from sip.gbid import is_gb_id as is_gb_id
from sip.numbers import ascii_uint

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")


@dataclass
class SipUri:
    """A parsed ``sip:`` / ``sips:`` URI."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse ``text``; raise SipParseError on anything that is not a SIP URI."""
        text = text.strip()
        scheme, sep, rest = text.partition(":")
        if not sep or not _SCHEME_RE.match(scheme):
            raise SipParseError(f"not a URI: {text!r}")
        scheme = scheme.lower()
        if scheme not in ("sip", "sips"):
            raise SipParseError(f"unsupported URI scheme {scheme!r}", 416)
        if any(c in rest for c in " \t\r\n<>\""):
            raise SipParseError(f"invalid character in URI {text!r}")
        user: str | None = None
        password: str | None = None
        if "@" in rest:
            # RFC 3261 §25.1: '@' cannot appear unescaped after the userinfo, but
            # the user part may hold '?' and ';' (TC_INTMETH, TC_SEMIURI), so
            # the userinfo is split off before the headers; keep it as is.
            userinfo, _, rest = rest.partition("@")
            user, psep, pw = userinfo.partition(":")
            password = pw if psep else None
        headers: str | None = None
        if "?" in rest:
            rest, _, headers = rest.partition("?")
        hostport, _, paramstr = rest.partition(";")
        host, port = _split_hostport(hostport, text)
        params: dict[str, str | None] = {}
        if paramstr:
            for p in paramstr.split(";"):
                if not p:
                    continue
                k, eq, v = p.partition("=")
                params[k.lower()] = v if eq else None
        return cls(scheme, user, password, host, port, params, headers)

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        out = f"{self.scheme}:"
        if self.user is not None:
            out += self.user
            if self.password is not None:
                out += f":{self.password}"
            out += "@"
        out += self.hostport
        for k, v in self.params.items():
            out += f";{k}" if v is None else f";{k}={v}"
        if self.headers:
            out += f"?{self.headers}"
        return out


def _split_hostport(hostport: str, text: str) -> tuple[str, int | None]:
    if not hostport:
        raise SipParseError(f"URI without host: {text!r}")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference in {text!r}")
        host = hostport[: end + 1]
        rest = hostport[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise SipParseError(f"bad host in {text!r}")
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise SipParseError(f"URI without host: {text!r}")
    if port_text == "":
        return host, None
    port = ascii_uint(port_text, 5)
    if port is None or not 0 < port < 65536:
        raise SipParseError(f"bad port in {text[:100]!r}")
    return host, port
