"""Who makes a decision: the actor recorded with every concept edit and exclusion.

An :class:`Actor` is what the interfaces hand to the engine: the CLI builds one from the OS user
(``auth = "os"``), the app from its identity mode (``"none"`` for a self-declared name, ``"oidc"`` for
Streamlit's verified login, ``"proxy"`` for a trusted reverse-proxy header). The engine records
:meth:`Actor.record` in the logs and never decides identity itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Identity modes, as recorded in the logs' ``auth`` field.
AUTH_MODES = ("none", "os", "oidc", "proxy")


@dataclass(frozen=True)
class Actor:
    """One person acting on a run.

    ``name``: e-mail (oidc), header value (proxy), typed name (none) or OS user (os);
    ``auth``: one of :data:`AUTH_MODES`; ``issuer``: the OIDC issuer URL, else None;
    ``role``: ``viewer`` / ``reviewer`` / ``admin`` when roles are configured, else None.
    """

    name: str
    auth: str = "none"
    issuer: str | None = None
    role: str | None = None

    def __post_init__(self) -> None:
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth mode {self.auth!r} is not one of {', '.join(AUTH_MODES)}")

    @property
    def verified(self) -> bool:
        """True when someone other than the user vouches for the name (OIDC provider, proxy)."""
        return self.auth in ("oidc", "proxy")

    def record(self) -> dict:
        """The fields written into a log entry: user, auth, and issuer / role when known."""
        out = {"user": self.name, "auth": self.auth}
        if self.issuer:
            out["issuer"] = self.issuer
        if self.role:
            out["role"] = self.role
        return out


def os_user() -> str:
    """The OS account running this process (``$USER``, else ``$USERNAME``), or 'unknown'."""
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def cli_actor(user: str | None = None) -> Actor:
    """The CLI's actor: ``--user`` when given (still ``auth = "os"``: the OS session vouches), else the
    OS user."""
    return Actor(name=(user or "").strip() or os_user(), auth="os")


def local_actor(typed_name: str | None = None) -> Actor:
    """The app's actor in local mode: the self-declared name, else the OS user; ``auth = "none"``."""
    return Actor(name=(typed_name or "").strip() or os_user(), auth="none")
