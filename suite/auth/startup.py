"""What every start of the stack says and refuses about the trust boundary.

``suite up`` prints ``notice`` on every start; it and every service process (``suite.serve``) call
``check``, which refuses to bind anything but a loopback address without auth and TLS: keys must not
cross a network in clear text.
"""

from __future__ import annotations

import ipaddress

from suite.settings import Settings


class UnsafeStart(ValueError):
    """A configuration the suite refuses to start with."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(settings: Settings) -> None:
    if is_loopback(settings.host):
        return
    if not settings.auth.enabled:
        raise UnsafeStart(
            f"auth.enabled = false with host {settings.host}: every route would be open to the network. "
            "Set SUITE_AUTH__ENABLED=true (and give clients keys from `suite keys create`), or bind "
            "127.0.0.1 (SUITE_HOST=127.0.0.1)")
    if not settings.tls.enabled:
        raise UnsafeStart(
            f"tls.enabled = false with host {settings.host}: API keys and prompts would cross the network "
            "in clear text. Run `suite tls init --san ADDRESS` and set SUITE_TLS__ENABLED=true, or bind "
            "127.0.0.1 (SUITE_HOST=127.0.0.1)")


def notice(settings: Settings, active_keys: int | None = None) -> str:
    """One line for `suite up`: auth on (and how many keys can use it) or, loudly, off."""
    if not settings.auth.enabled:
        return (f"WARNING: auth is OFF (auth.enabled = false): every route of every service is open to "
                f"anyone who can reach {settings.host}, as role '{settings.auth.anonymous_role}'")
    line = (f"auth: on — every route but /health, /ready, /metrics needs 'Authorization: Bearer KEY' "
            f"(key store {settings.key_store_path})")
    if active_keys == 0:
        line += "; no active key yet: `suite keys create --role admin --ttl 7d`"
    elif active_keys is not None:
        line += f"; {active_keys} active key(s) (`suite keys list`)"
    return line
