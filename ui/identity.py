"""Who is using the app: the identity mode, the acting :class:`Actor` and its role, and the gate.

Three modes, chosen by configuration (README, "Team deployment"):

- *local* (default, nothing configured): a self-declared name (the Concepts page's box or
  ``?reviewer=``), else the OS user; recorded with ``auth = "none"``;
- *oidc*: ``.streamlit/secrets.toml`` has an ``[auth]`` section: Streamlit's ``st.login`` /
  ``st.user``; the identity is the verified e-mail, the issuer is recorded; nothing of any run is
  shown before login;
- *proxy*: ``trusted_header`` under ``[clustermine]`` in secrets.toml (or
  ``$CLUSTERMINE_TRUSTED_HEADER``) names the request header a reverse proxy sets after it has
  authenticated the user; a request without it is refused, never given a fallback identity.

The role comes from the roles file (:mod:`clustermine.core.roles`). The logic is in pure functions
(:func:`identity_config`, :func:`resolve`) that take the secrets, environment, claims and header
values as arguments; only :func:`current`, :func:`gate` and the drawing functions touch Streamlit.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import streamlit as st

from clustermine.core.errors import ClusterMineError
from clustermine.core.identity import Actor, local_actor, os_user
from clustermine.core.roles import RolesPolicy, configured_roles, why_not

from . import state
from .text import md_escape

MODES = ("local", "oidc", "proxy")
MODE_TEXT = {"local": "local (self-declared name)", "oidc": "OIDC login", "proxy": "trusted proxy"}
HEADER_ENV = "CLUSTERMINE_TRUSTED_HEADER"
MAX_NAME = 200


@dataclass(frozen=True)
class IdentityConfig:
    """The configured mode: ``providers`` (oidc: "default" and/or the named ``[auth.NAME]`` sections),
    ``header`` (proxy), ``roles`` (the roles file, None = no roles) and ``error`` (a configuration
    problem: then nobody gets in)."""

    mode: str = "local"
    providers: tuple[str, ...] = ()
    header: str | None = None
    roles: RolesPolicy | None = None
    error: str | None = None


@dataclass(frozen=True)
class Resolution:
    """Who acts: ``actor`` when somebody may use the app; else ``need_login`` (oidc, not logged in)
    or ``refusal`` (why this request gets nothing)."""

    actor: Actor | None = None
    need_login: bool = False
    refusal: str | None = None


def identity_config(secrets: Mapping | None, environ: Mapping[str, str] | None = None) -> IdentityConfig:
    """The identity mode from the app's secrets (``st.secrets`` as a dict) and the environment."""
    secrets = secrets or {}
    environ = os.environ if environ is None else environ
    section = secrets.get("clustermine") or {}
    if not isinstance(section, Mapping):
        return IdentityConfig(error="secrets.toml: [clustermine] must be a table")
    try:
        roles = configured_roles(environ, section)
    except ClusterMineError as exc:
        return IdentityConfig(error=str(exc))
    header = (environ.get(HEADER_ENV) or "").strip() or str(section.get("trusted_header") or "").strip() or None
    auth = secrets.get("auth")
    if auth is not None:
        if header:
            return IdentityConfig(error="both [auth] (OIDC login) and a trusted header "
                                        f"({header}) are configured; choose one identity mode", roles=roles)
        if not isinstance(auth, Mapping):
            return IdentityConfig(error="secrets.toml: [auth] must be a table", roles=roles)
        named = tuple(k for k, v in auth.items() if isinstance(v, Mapping) and k != "client_kwargs")
        providers = (("default",) if auth.get("client_id") else ()) + named
        if not providers:
            return IdentityConfig(error="secrets.toml: [auth] names no provider (client_id, client_secret, "
                                        "server_metadata_url, or an [auth.NAME] section)", roles=roles)
        return IdentityConfig(mode="oidc", providers=providers, roles=roles)
    if header:
        return IdentityConfig(mode="proxy", header=header, roles=roles)
    return IdentityConfig(mode="local", roles=roles)


def _clean(value: str) -> str | None:
    """``value`` trimmed, or None when empty, too long or holding control characters."""
    value = (value or "").strip()
    if not value or len(value) > MAX_NAME or any(unicodedata.category(ch).startswith("C") for ch in value):
        return None
    return value


def resolve(cfg: IdentityConfig, *, user_info: Mapping | None = None, header_values: Sequence[str] = (),
            typed_name: str | None = None) -> Resolution:
    """Who acts for one request. ``user_info``: ``st.user`` as a dict (oidc); ``header_values``: every
    value of the trusted header in the request (proxy); ``typed_name``: the self-declared name (local;
    ignored in the verified modes)."""
    if cfg.error:
        return Resolution(refusal=f"The app's identity configuration is broken: {cfg.error}")
    if cfg.mode == "oidc":
        info = user_info or {}
        if not info.get("is_logged_in"):
            return Resolution(need_login=True)
        email = _clean(str(info.get("email") or ""))
        if not email:
            return Resolution(refusal="Your login provider sent no e-mail address; the app needs one (the "
                                      "'email' scope) to sign decisions.")
        if info.get("email_verified") is False:
            return Resolution(refusal=f"Your login provider has not verified the e-mail address {email}.")
        actor = Actor(name=email, auth="oidc", issuer=str(info.get("iss") or "") or None)
    elif cfg.mode == "proxy":
        values = {v.strip() for v in header_values if v and v.strip()}
        if not values:
            return Resolution(refusal=f"This request did not come through the authenticating proxy: the "
                                      f"{cfg.header} header is missing. Open the app through its proxy address.")
        if len(values) > 1:
            return Resolution(refusal=f"The {cfg.header} header was sent more than once with different values; "
                                      "refused.")
        name = _clean(values.pop())
        if not name:
            return Resolution(refusal=f"The {cfg.header} header holds no usable name.")
        actor = Actor(name=name, auth="proxy")
    else:
        actor = local_actor(_clean(typed_name or "") or None)
    if cfg.roles is not None:
        actor = cfg.roles.with_role(actor)
        if actor.role == "none":
            return Resolution(refusal=f"{actor.name} has no access to this app (roles file {cfg.roles.source}); "
                                      "ask an admin to add you.")
    return Resolution(actor=actor)


# ------------------------------------------------------------------------------ the Streamlit edge
def _secrets() -> dict:
    """``st.secrets`` as a dict. A secrets file that exists but does not load is an error, never
    "no configuration": a broken ``[auth]`` must not open the app in local mode."""
    try:
        if st.secrets.load_if_toml_exists():
            return st.secrets.to_dict()
        files = st.get_option("secrets.files") or []
    except Exception as exc:  # Streamlit's own error types vary by cause
        return {"clustermine": f"secrets.toml cannot be read: {exc}"}
    broken = [f for f in files if os.path.exists(f)]
    if broken:
        return {"clustermine": f"{broken[0]}: the secrets file exists but cannot be loaded (not valid TOML?)"}
    return {}


def config() -> IdentityConfig:
    """This app's identity configuration (read on every call: tests and admins change it)."""
    secrets = _secrets()
    if isinstance(secrets.get("clustermine"), str):
        return IdentityConfig(error=secrets["clustermine"])
    return identity_config(secrets)


def _user_info() -> dict:
    try:
        return dict(st.user.to_dict())
    except Exception:  # outside a script run, or auth not set up: nobody is logged in
        return {}


def _header_values(name: str) -> list[str]:
    try:
        return list(st.context.headers.get_all(name))
    except Exception:  # no request (AppTest): no header
        return []


def typed_name() -> str:
    """The self-declared reviewer name of this session (the box, else the one kept from the URL)."""
    return (st.session_state.get("reviewer") or st.session_state.get(state.REVIEWER_KEY) or "").strip()


def current(cfg: IdentityConfig | None = None) -> Resolution:
    """Who acts in this session now."""
    cfg = cfg or config()
    return resolve(cfg, user_info=_user_info() if cfg.mode == "oidc" else None,
                   header_values=_header_values(cfg.header) if cfg.mode == "proxy" and cfg.header else (),
                   typed_name=typed_name())


def current_actor() -> Actor | None:
    """The acting Actor, or None when this session may not act (the gate shows why)."""
    return current().actor


def acting() -> Actor:
    """The Actor handed to an engine write, resolved now (a callback may come after a logout or a
    roles-file change); ClusterMineError when this session may not act at all."""
    res = current()
    if res.actor is None:
        raise ClusterMineError(res.refusal or "you are not signed in; log in again")
    return res.actor


_SHOWN_KEY = "_identity_actor"  # the actor of this script run, for drawing only (see role_block)


def role_block(action: str) -> str | None:
    """Why this session may not ``action`` (a disabled button's tooltip), or None when it may. Cosmetic:
    it reads the actor the gate resolved for this script run; the engine's check is what protects."""
    actor = st.session_state.get(_SHOWN_KEY)
    if actor is None:
        return "you are not signed in"
    return why_not(actor.role, action)


def self_declared() -> bool:
    """Whether this session's name is self-declared (local mode): then the name box is shown."""
    actor = st.session_state.get(_SHOWN_KEY)
    return actor is None or not actor.verified


def local_default_name() -> str:
    """The name local mode records when none is typed (the OS user running the app)."""
    return os_user()


def gate() -> tuple[IdentityConfig, Resolution]:
    """The mode and who acts; app.py shows :func:`blocked_page` instead of any page when nobody may."""
    cfg = config()
    res = current(cfg)
    st.session_state[_SHOWN_KEY] = res.actor
    return cfg, res


def blocked_page(cfg: IdentityConfig, res: Resolution) -> None:
    """The only page a session without an identity sees: the login buttons (oidc) or the refusal."""
    st.title("ClusterMine Studio")
    if res.need_login:
        st.subheader("Sign in")
        st.caption("This ClusterMine Studio requires a login; your decisions are signed with your verified "
                   "e-mail address.")
        for p in cfg.providers:
            label = "Log in" if p == "default" else f"Log in with {p.capitalize()}"
            if st.button(label, key=f"login_{p}", icon=":material/login:", type="primary"):
                st.login() if p == "default" else st.login(p)
        return
    st.error(md_escape(res.refusal or "Access refused."), icon=":material/block:")
    if cfg.mode == "oidc" and _user_info().get("is_logged_in"):
        st.button("Log out", key="logout_refused", on_click=st.logout, icon=":material/logout:")


def sidebar(cfg: IdentityConfig, actor: Actor) -> None:
    """The identity line of every page's sidebar: mode, identity, role; Log out in oidc mode."""
    role = actor.role or "all rights (no roles file)"
    who = md_escape(actor.name) + ("" if actor.verified else " *(self-declared)*")
    st.caption(f"Identity: **{MODE_TEXT[cfg.mode]}** · {who} · role: **{role}**")
    if cfg.mode == "oidc":
        st.button("Log out", key="logout", on_click=st.logout, icon=":material/logout:")
