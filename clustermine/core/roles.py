"""Who may do what: the roles *viewer* < *reviewer* < *admin*, the roles file, and :func:`require`.

Every write entry point of the engine calls :func:`require` with the acting :class:`Actor` before it
writes anything. The interfaces resolve the actor's role from the roles file (:func:`load_roles`,
:meth:`RolesPolicy.role_for`) and carry it in ``Actor.role``; ``role = None`` means no roles file is
configured, and then everybody may do everything (the single-user, local default).

The roles file (TOML; its path in ``$CLUSTERMINE_ROLES`` or ``roles_file`` under ``[clustermine]`` in
``.streamlit/secrets.toml``)::

    default = "viewer"              # everybody not listed; "none" refuses them everything

    [users]                         # exact names / e-mails (case-insensitive) and "@domain"s
    "ann@example.org" = "admin"
    "bob" = "reviewer"              # a CLI / proxy user name
    "@example.org" = "reviewer"     # everybody with an e-mail at example.org

An exact entry wins over a domain, a domain over ``default``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clustermine.core.errors import ClusterMineError
from clustermine.core.identity import Actor

#: Roles, lowest first; "none" (only as a default or an entry) may do nothing, not even browse.
ROLES = ("none", "viewer", "reviewer", "admin")
#: Each action and the lowest role that may do it.
ACTIONS: dict[str, str] = {
    "browse": "viewer", "search": "viewer", "score": "viewer", "export": "viewer",
    "edit_concepts": "reviewer", "exclude": "reviewer", "remine": "reviewer",
    # re-clusters and writes seed_labels.npy, which changes every concept's support: a reviewer's step
    # like re-mine (the issue names only re-mine; stability is the same kind of work on the same run)
    "stability": "reviewer",
    "launch": "admin", "label": "admin", "delete": "admin",
}
#: How an action reads in a refusal ("… may not <this>").
ACTION_TEXT = {
    "browse": "browse runs", "search": "search images", "score": "score images", "export": "export a run",
    "edit_concepts": "decide on concepts", "exclude": "exclude or restore images", "remine": "re-mine a run",
    "stability": "compute concept stability", "launch": "launch mining jobs", "label": "label runs",
    "delete": "delete runs",
}
#: The environment variable naming the roles file (wins over secrets.toml).
ROLES_ENV = "CLUSTERMINE_ROLES"
DEFAULT_ROLE = "viewer"


class PermissionDenied(ClusterMineError):
    """An actor's role lacks the right for an action; nothing was written."""

    def __init__(self, actor: Actor, action: str) -> None:
        need = ACTIONS[action]
        super().__init__(f"{actor.name} has the role {actor.role!r}, which may not {ACTION_TEXT[action]} "
                         f"({action!r} needs the role {need!r} or higher); nothing was changed")
        self.actor, self.action, self.needed = actor, action, need


def rank(role: str) -> int:
    """Position of ``role`` in :data:`ROLES` (0 = none … 3 = admin); ValueError for an unknown role."""
    try:
        return ROLES.index(role)
    except ValueError:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}") from None


def allowed(role: str | None, action: str) -> bool:
    """Whether ``role`` may do ``action``; ``role = None`` (no roles configured) may do everything."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return role is None or rank(role) >= rank(ACTIONS[action])


def require(actor: Actor | None, action: str) -> None:
    """Raise :class:`PermissionDenied` unless ``actor`` may do ``action``.

    ``actor = None`` (a library call, the mining worker) and ``actor.role = None`` (no roles file)
    are allowed: the interfaces are where identities and roles are resolved."""
    role = actor.role if actor is not None else None
    if not allowed(role, action):
        raise PermissionDenied(actor, action)


def why_not(role: str | None, action: str) -> str | None:
    """A tooltip for a disabled button: why ``role`` may not ``action``, or None when it may."""
    if allowed(role, action):
        return None
    return f"your role ({role}) may not {ACTION_TEXT[action]}: that needs the role {ACTIONS[action]}"


@dataclass(frozen=True)
class RolesPolicy:
    """A parsed roles file: ``users`` (lower-cased exact names / e-mails → role), ``domains``
    (lower-cased domain without "@" → role) and the ``default`` role; ``source``: the file."""

    default: str = DEFAULT_ROLE
    users: dict[str, str] = field(default_factory=dict)
    domains: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def role_for(self, name: str) -> str:
        """The role of the identity ``name``: its exact entry, else its e-mail domain's, else the default."""
        key = (name or "").strip().lower()
        if key in self.users:
            return self.users[key]
        if "@" in key:
            domain = key.rsplit("@", 1)[1]
            if domain in self.domains:
                return self.domains[domain]
        return self.default

    def with_role(self, actor: Actor) -> Actor:
        """``actor`` carrying its role from this file."""
        return Actor(name=actor.name, auth=actor.auth, issuer=actor.issuer, role=self.role_for(actor.name))


def _line_of(text: str, key: str) -> int | None:
    """1-based line where ``key`` (bare or quoted) is assigned, for error messages."""
    pat = re.compile(r'^\s*(?:"' + re.escape(key) + r'"|\'' + re.escape(key) + r"'|" + re.escape(key) + r")\s*=")
    for i, line in enumerate(text.splitlines(), 1):
        if pat.match(line):
            return i
    return None


def parse_roles(text: str, source: str = "roles file") -> RolesPolicy:
    """Parse the TOML ``text`` of a roles file; ClusterMineError naming ``source``, the line and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClusterMineError(f"{source}: not valid TOML: {exc}") from None

    def where(key: str) -> str:
        line = _line_of(text, key)
        return f"{source}, line {line}" if line else source

    def check(key: str, value: object, context: str) -> str:
        if not isinstance(value, str) or value.strip().lower() not in ROLES:
            raise ClusterMineError(f"{where(key)}: {context} = {value!r} is not a role; use one of "
                                   f"{', '.join(ROLES)}")
        return value.strip().lower()

    unknown = sorted(set(data) - {"default", "users"})
    if unknown:
        raise ClusterMineError(f"{where(unknown[0])}: unknown key {unknown[0]!r}; a roles file has `default = "
                               "\"ROLE\"` and a [users] table")
    default = check("default", data.get("default", DEFAULT_ROLE), "default")
    table = data.get("users", {})
    if not isinstance(table, dict):
        raise ClusterMineError(f"{where('users')}: `users` must be a table ([users] with \"name\" = \"role\" lines)")
    users, domains = {}, {}
    for name, value in table.items():
        role = check(name, value, f"[users] {name!r}")
        key = name.strip().lower()
        if not key or key == "@":
            raise ClusterMineError(f"{where(name)}: [users] has an empty name")
        if key.startswith("@"):
            domains[key[1:]] = role
        else:
            users[key] = role
    return RolesPolicy(default=default, users=users, domains=domains, source=source)


def load_roles(path: str | os.PathLike) -> RolesPolicy:
    """Read and parse the roles file at ``path``; ClusterMineError naming the file when it is missing,
    unreadable or wrong."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClusterMineError(f"{p}: the roles file cannot be read ({exc.__class__.__name__}: {exc}); set "
                               f"${ROLES_ENV} or [clustermine] roles_file to an existing file") from None
    return parse_roles(text, str(p))


def roles_file_setting(environ: Mapping[str, str] | None = None,
                       settings: Mapping[str, object] | None = None) -> Path | None:
    """The configured roles file: ``$CLUSTERMINE_ROLES``, else ``roles_file`` of the ``[clustermine]``
    section ``settings``; None when neither is set (no roles: everybody may do everything)."""
    environ = os.environ if environ is None else environ
    value = (environ.get(ROLES_ENV) or "").strip() or str((settings or {}).get("roles_file") or "").strip()
    return Path(value).expanduser() if value else None


def configured_roles(environ: Mapping[str, str] | None = None,
                     settings: Mapping[str, object] | None = None) -> RolesPolicy | None:
    """The roles file's policy when one is configured (see :func:`roles_file_setting`), else None."""
    path = roles_file_setting(environ, settings)
    return load_roles(path) if path is not None else None


#: Where the CLI looks for the app's settings (the same files Streamlit reads, project one first).
SECRETS_FILES = (Path(".streamlit") / "secrets.toml", Path("~/.streamlit/secrets.toml"))


def clustermine_settings(files: tuple[Path, ...] = SECRETS_FILES) -> dict:
    """The ``[clustermine]`` section of the first secrets.toml that has one ({} when none does), for
    the CLI (the app reads ``st.secrets``). ClusterMineError naming a file that is not valid TOML."""
    for f in files:
        f = Path(f).expanduser()
        if not f.is_file():
            continue
        try:
            data = tomllib.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ClusterMineError(f"{f}: not valid TOML: {exc}") from None
        section = data.get("clustermine")
        if isinstance(section, dict):
            return section
    return {}
