"""Issue 20 (1): the three identity modes (local, OIDC, trusted proxy), chosen by configuration and
stated on every page's sidebar. The resolution is pure functions of the secrets, the environment, the
OIDC claims and the header values (tested with plain dicts); the AppTest tests run the real app:
nothing of a run before login, a viewer's concept edit refused with nothing written."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from clustermine.core.identity import Actor
from clustermine.store import Run

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the app's ``ui`` package lives next to app.py
    sys.path.insert(0, str(ROOT))

from ui.identity import IdentityConfig, identity_config, resolve  # noqa: E402
from ui.text import md_escape  # noqa: E402
from test_app import open_app  # noqa: E402

AUTH = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "s" * 32,
        "client_id": "cm", "client_secret": "x", "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}
PAGES = ["runs", "data", "clusters", "audit", "search", "compare", "evaluate", "concepts", "scoring", "export"]


# ------------------------------------------------------------------------------------ configuration
def test_mode_follows_the_configuration(tmp_path):
    assert identity_config({}, {}) == IdentityConfig(mode="local")
    cfg = identity_config({"auth": AUTH}, {})
    assert cfg.mode == "oidc" and cfg.providers == ("default",)
    named = {"redirect_uri": AUTH["redirect_uri"], "cookie_secret": AUTH["cookie_secret"],
             "google": {"client_id": "g", "client_secret": "x", "server_metadata_url": "https://accounts.google.com"},
             "microsoft": {"client_id": "m", "client_secret": "x", "server_metadata_url": "https://login.microsoftonline.com",
                           "client_kwargs": {"prompt": "login"}}}
    assert identity_config({"auth": named}, {}).providers == ("google", "microsoft")
    assert identity_config({"auth": {"redirect_uri": "x", "cookie_secret": "y"}}, {}).error  # no provider
    proxy = identity_config({"clustermine": {"trusted_header": "X-Forwarded-Email"}}, {})
    assert proxy.mode == "proxy" and proxy.header == "X-Forwarded-Email"
    assert identity_config({}, {"CLUSTERMINE_TRUSTED_HEADER": "X-Remote-User"}).header == "X-Remote-User"
    both = identity_config({"auth": AUTH}, {"CLUSTERMINE_TRUSTED_HEADER": "X-Remote-User"})
    assert both.error and "choose one" in both.error
    roles = tmp_path / "roles.toml"
    roles.write_text('default = "viewer"\n[users]\nann = "admin"\n', encoding="utf-8")
    cfg = identity_config({"clustermine": {"roles_file": str(roles)}}, {})
    assert cfg.mode == "local" and cfg.roles.role_for("ann") == "admin"
    roles.write_text('default = "emperor"\n', encoding="utf-8")
    bad = identity_config({}, {"CLUSTERMINE_ROLES": str(roles)})
    assert f"{roles}, line 1" in bad.error
    res = resolve(bad, typed_name="ann")
    assert res.actor is None and str(roles) in res.refusal  # a broken roles file lets nobody in


# ------------------------------------------------------------------------------------ resolution
def test_local_mode_records_a_self_declared_name(monkeypatch):
    monkeypatch.setenv("USER", "osuser")
    local = IdentityConfig(mode="local")
    assert resolve(local, typed_name="  Ann ").actor == Actor("Ann", auth="none")
    assert resolve(local, typed_name="").actor == Actor("osuser", auth="none")
    assert resolve(local, typed_name="bad\x00name").actor == Actor("osuser", auth="none")  # not a usable name
    assert not resolve(local, typed_name="Ann").actor.verified


def test_oidc_identity_is_the_verified_email_and_ignores_the_typed_name():
    cfg = identity_config({"auth": AUTH}, {})
    assert resolve(cfg, user_info={"is_logged_in": False}, typed_name="ann").need_login
    assert resolve(cfg, user_info={}, typed_name="ann").need_login
    claims = {"is_logged_in": True, "email": "ann@example.org", "email_verified": True,
              "iss": "https://idp.example.org", "name": "Ann"}
    res = resolve(cfg, user_info=claims, typed_name="mallory", header_values=["mallory@evil"])
    assert res.actor == Actor("ann@example.org", auth="oidc", issuer="https://idp.example.org")
    assert res.actor.verified
    assert "no e-mail" in resolve(cfg, user_info={"is_logged_in": True, "sub": "123"}).refusal
    unverified = resolve(cfg, user_info={**claims, "email_verified": False})
    assert unverified.actor is None and "not verified" in unverified.refusal


def test_proxy_identity_comes_only_from_the_configured_header():
    cfg = IdentityConfig(mode="proxy", header="X-Forwarded-Email")
    res = resolve(cfg, header_values=["bo@example.org"], typed_name="mallory")
    assert res.actor == Actor("bo@example.org", auth="proxy")
    missing = resolve(cfg, header_values=[], typed_name="mallory")
    assert missing.actor is None and "X-Forwarded-Email header is missing" in missing.refusal
    assert resolve(cfg, header_values=["  "]).actor is None
    assert "more than once" in resolve(cfg, header_values=["a@x.org", "b@x.org"]).refusal
    assert resolve(cfg, header_values=["a@x.org", "a@x.org"]).actor.name == "a@x.org"
    assert resolve(cfg, header_values=["a@x.org\r\nX-Evil: 1"]).actor is None
    assert resolve(cfg, header_values=["a" * 300]).actor is None


def test_roles_are_applied_in_every_mode(tmp_path):
    from clustermine.core.roles import parse_roles

    pol = parse_roles('default = "none"\n[users]\n"@example.org" = "reviewer"\nann = "admin"\n', "r.toml")
    oidc = IdentityConfig(mode="oidc", providers=("default",), roles=pol)
    got = resolve(oidc, user_info={"is_logged_in": True, "email": "cy@example.org", "iss": "https://i"})
    assert got.actor.role == "reviewer" and got.actor.issuer == "https://i"
    outsider = resolve(oidc, user_info={"is_logged_in": True, "email": "x@gmail.com"})
    assert outsider.actor is None and "no access" in outsider.refusal and "r.toml" in outsider.refusal
    assert resolve(IdentityConfig(mode="proxy", header="H", roles=pol), header_values=["ann"]).actor.role == "admin"
    assert resolve(IdentityConfig(mode="local", roles=pol), typed_name="ann").actor.role == "admin"
    assert resolve(IdentityConfig(mode="local"), typed_name="ann").actor.role is None  # no roles file


# ------------------------------------------------------------------------------------ the app
@pytest.fixture
def app_env(small_run, monkeypatch, tmp_path):
    monkeypatch.setenv("CLUSTERMINE_RUNS_ROOT", str(small_run.parent))
    monkeypatch.setenv("CLUSTERMINE_UMAP_WARMUP", "0")
    monkeypatch.delenv("CLUSTERMINE_ROLES", raising=False)
    monkeypatch.delenv("CLUSTERMINE_TRUSTED_HEADER", raising=False)
    monkeypatch.setenv("USER", "vic")
    return small_run


def all_text(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [s.value for s in at.subheader]
    parts += [e.value for e in at.error] + [b.label for b in at.button] + [s.label for s in at.selectbox]
    return "\n".join(str(p) for p in parts)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.app
def test_oidc_mode_shows_nothing_of_a_run_before_login(app_env):
    run = Run.open(app_env)
    at = open_app(app_env.name, secrets={"auth": AUTH}, user={"is_logged_in": False})
    assert not at.exception, [e.value for e in at.exception]
    text = all_text(at)
    assert "Sign in" in text and [b.label for b in at.button] == ["Log in"]
    for secret in (app_env.name, run.concepts()[0].text, "Identity:"):
        assert secret not in text
    assert not at.sidebar.selectbox and not at.dataframe  # no run selector, no table


@pytest.mark.app
def test_oidc_login_signs_decisions_with_the_verified_email_and_hides_the_name_box(app_env):
    user = {"is_logged_in": True, "email": "ann@example.org", "email_verified": True, "iss": "https://idp.example"}
    at = open_app(app_env.name, "pages/concepts.py", secrets={"auth": AUTH}, user=user, reviewer="mallory")
    assert not at.exception, [e.value for e in at.exception]
    sidebar = "\n".join(c.value for c in at.sidebar.caption)
    assert f"Identity: **OIDC login** · {md_escape('ann@example.org')} · role: **all rights (no roles file)**" in sidebar
    assert not [t for t in at.text_input if t.key == "reviewer"]  # a verified identity: no name box
    assert [b.label for b in at.sidebar.button] == ["Log out"]
    victim = Run.open(app_env).concepts()[0]
    at.selectbox(key="concept_pick").set_value(victim.id).run()
    at.button(key="btn_reject").click().run()
    assert Run.open(app_env).edits()[-1]["user"] == "ann@example.org"


@pytest.mark.app
def test_proxy_mode_without_the_header_is_refused(app_env, monkeypatch):
    monkeypatch.setenv("CLUSTERMINE_TRUSTED_HEADER", "X-Forwarded-Email")
    at = open_app(app_env.name)
    assert not at.exception, [e.value for e in at.exception]
    assert md_escape("the X-Forwarded-Email header is missing") in "\n".join(e.value for e in at.error)
    assert app_env.name not in all_text(at) and not at.dataframe


@pytest.mark.app
def test_a_viewer_is_refused_a_concept_edit_and_nothing_is_written(app_env, tmp_path, monkeypatch):
    roles = tmp_path / "roles.toml"
    roles.write_text('default = "viewer"\n[users]\nrita = "reviewer"\n', encoding="utf-8")
    monkeypatch.setenv("CLUSTERMINE_ROLES", str(roles))
    victim = Run.open(app_env).concepts()[0]
    at = open_app(app_env.name, "pages/concepts.py")
    assert not at.exception, [e.value for e in at.exception]
    reject = at.button(key="btn_reject")
    assert reject.disabled and "needs the role reviewer" in reject.help  # the tooltip says why
    assert "read-only" in "\n".join(c.value for c in at.caption)  # the table too
    # the same session named as a reviewer (local mode: a self-declared name) may decide
    at.text_input(key="reviewer").input("rita").run()
    at.selectbox(key="concept_pick").set_value(victim.id).run()
    assert not at.button(key="btn_reject").disabled
    # the role is revoked between the drawing of the button and the click: the engine's check, not the
    # button, is what protects
    roles.write_text('default = "viewer"\n', encoding="utf-8")
    before = digest(app_env)
    at.button(key="btn_reject").click().run()
    errors = "\n".join(e.value for e in at.error)
    assert md_escape("rita has the role 'viewer', which may not decide on concepts") in errors
    assert md_escape("nothing was changed") in errors
    assert digest(app_env) == before
    assert at.button(key="btn_reject").disabled  # redrawn with the new role


@pytest.mark.app
def test_every_page_states_mode_identity_and_role_in_the_sidebar(app_env, tmp_path, monkeypatch):
    roles = tmp_path / "roles.toml"
    roles.write_text('[users]\nvic = "reviewer"\n', encoding="utf-8")
    monkeypatch.setenv("CLUSTERMINE_ROLES", str(roles))
    at = open_app(app_env.name)
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        sidebar = "\n".join(c.value for c in at.sidebar.caption)
        assert "Identity: **local (self-declared name)** · vic *(self-declared)* · role: **reviewer**" in sidebar, page
