"""Team deployment with real parts (issue 20): a real OpenID Connect provider (npm ``oidc-provider``,
tests/oidc/provider.mjs) and Streamlit's real ``st.login`` flow in Chromium; a real nginx with basic
auth in front of the app (the shipped deploy/nginx/clustermine-proxy.conf) setting the identity
header. Everything binds to 127.0.0.1 and is stopped by PID (tests/auth_servers.py,
tests/streamlit_server.py).

- OIDC: nothing of any run shows before login; the reviewer logs in through the provider's login
  form, rejects a concept, and the edit log's entry is signed with the verified e-mail, ``auth =
  "oidc"`` and the provider's issuer; the viewer is refused the same action and nothing is written.
- Trusted proxy: the header nginx sets arrives (sidebar: trusted proxy, the basic-auth user); a copy
  the browser sends is replaced by nginx; a request straight to the app's port (bypassing nginx) gets
  no identity; without the proxy-mode configuration the header is ignored.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from auth_servers import PROXY_SNIPPET, ensure_nginx, nginx_proxy, oidc_provider, shipped_site, temp_paths
from browser_helpers import CHROME_ARGS, idle, nav, require_browser, shot
from conftest import CHROMIUM, ROOT, missing_resource
from streamlit_server import free_port, streamlit_server


ARTIFACTS = ROOT / "test-artifacts" / "team-auth"
CLIENT_ID, CLIENT_SECRET = "clustermine-test", "test-only-client-secret"
REVIEWER = {"id": "rita", "email": "rita@example.org", "name": "Rita Reviewer"}
VIEWER = {"id": "vic", "email": "vic@example.org", "name": "Vic Viewer"}
HEADER = "X-Forwarded-Email"  # the name deploy/nginx/clustermine-proxy.conf sets
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def runs_root(small_run_template, tmp_path_factory) -> Path:
    """A runs root holding one finished run (``small-run``)."""
    root = tmp_path_factory.mktemp("team_runs")
    shutil.copytree(small_run_template, root / small_run_template.name)
    return root


def _roles_file(tmp: Path, viewer_role: str = "viewer") -> Path:
    """The roles file: the reviewer and the viewer by e-mail, the basic-auth user ``ann`` by name;
    everybody else a viewer. Rewritten in place to change the viewer's role (it is read per request)."""
    path = tmp / "roles.toml"
    path.write_text('default = "viewer"\n\n[users]\n'
                    f'"{REVIEWER["email"]}" = "reviewer"\n"{VIEWER["email"]}" = "{viewer_role}"\n"ann" = "reviewer"\n')
    return path


def _no_secrets(tmp: Path) -> str:
    """An empty secrets file: a developer's own ~/.streamlit/secrets.toml must not change the mode."""
    path = tmp / "no-secrets.toml"
    path.write_text("")
    return str(path)


def _edit_log(run_dir: Path) -> list[dict]:
    path = run_dir / "edits.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _browser(p):
    return p.chromium.launch(executable_path=str(CHROMIUM), args=CHROME_ARGS, headless=True)


def _page(browser, **ctx):
    pg = browser.new_context(viewport={"width": 1400, "height": 1000}, **ctx).new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    return pg


def _sidebar_identity(pg) -> str:
    cap = pg.locator('[data-testid="stSidebar"]').get_by_text("Identity:")
    cap.wait_for()
    return cap.inner_text()


def _pick_concept(pg, index: int = 0) -> str:
    """On the Concepts page: choose the concept at ``index`` in the picker; returns its name."""
    pg.get_by_text("What if?").wait_for()
    idle(pg)
    pick = pg.get_by_label("Concept", exact=True)
    pick.click()
    option = pg.get_by_role("option").nth(index)
    name = option.inner_text().strip()
    option.click()
    idle(pg)
    return name


def _login(pg, user: dict) -> None:
    """The real flow: the app's Log in button → st.login → the provider's login form → back."""
    pg.get_by_role("button", name="Log in").click()
    pg.locator('input[name="login"]').wait_for()  # the provider's page, not the app's
    assert pg.url.startswith("http://127.0.0.1:") and "/interaction/" in pg.url
    pg.fill('input[name="login"]', user["id"])
    pg.fill('input[name="password"]', "any")
    pg.locator('button[type="submit"]').click()
    pg.locator('[data-testid="stSidebar"]').get_by_text("Identity:").wait_for()
    idle(pg)


# --------------------------------------------------------------------------------------------- OIDC
@pytest.mark.browser
@pytest.mark.slow
def test_oidc_login_signs_decisions_and_the_viewer_is_refused(runs_root, tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    run_dir = runs_root / "small-run"
    port = free_port()
    redirect = f"http://127.0.0.1:{port}/oauth2callback"  # Streamlit's callback path
    with oidc_provider(tmp_path, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uris=[redirect],
                       users=[REVIEWER, VIEWER]) as idp:
        secrets = tmp_path / "secrets.toml"
        # Streamlit's [auth] section, as README's "Team deployment" shows it; prompt = "login": the test
        # provider knows no "select_account" (Streamlit's default prompt)
        secrets.write_text(f'[auth]\nredirect_uri = "{redirect}"\n'
                           f'cookie_secret = "test-only-cookie-secret-{"x" * 32}"\n'
                           f'client_id = "{CLIENT_ID}"\nclient_secret = "{CLIENT_SECRET}"\n'
                           f'server_metadata_url = "{idp["metadata_url"]}"\n'
                           'client_kwargs = { prompt = "login" }\n\n'
                           f'[clustermine]\nroles_file = "{_roles_file(tmp_path)}"\n')
        # instead of ./.streamlit/secrets.toml; a developer's own identity settings must not leak in
        env = {"STREAMLIT_SECRETS_FILES": str(secrets), "CLUSTERMINE_ROLES": "", "CLUSTERMINE_TRUSTED_HEADER": ""}
        with streamlit_server(runs_root, tmp_path / "streamlit.log", env=env, port=port, wait_s=90) as srv, \
                sync_playwright() as p:
            browser = _browser(p)
            try:
                # --- before login: a deep link into a run shows the sign-in page and nothing of the run
                pg = _page(browser)
                pg.goto(f"{srv['url']}/concepts?run=small-run")
                pg.get_by_role("button", name="Log in").wait_for()
                idle(pg)
                shot(pg, ARTIFACTS, "1-oidc-signin")
                body = pg.locator("body").inner_text()
                assert "small-run" not in body and "What if?" not in body
                assert "Page not found" not in body  # every page's address draws the sign-in page
                assert pg.locator('[data-testid="stSidebarNav"]').count() == 0
                pg.goto(srv["url"])  # log in from the root, as a new visitor would
                pg.get_by_role("button", name="Log in").wait_for()
                idle(pg)

                # --- the reviewer logs in at the provider and rejects a concept
                _login(pg, REVIEWER)
                who = _sidebar_identity(pg)
                assert REVIEWER["email"] in who and "OIDC" in who and "reviewer" in who, who
                pg.goto(f"{srv['url']}/concepts?run=small-run")
                concept = _pick_concept(pg)
                before = len(_edit_log(run_dir))
                pg.get_by_role("button", name="Reject").click()
                pg.get_by_text(f"{concept} → rejected").wait_for()
                idle(pg)
                shot(pg, ARTIFACTS, "2-oidc-reviewer-rejected")
                log = _edit_log(run_dir)
                assert len(log) == before + 1
                entry = log[-1]
                assert entry["user"] == REVIEWER["email"]
                assert entry["auth"] == "oidc"
                assert entry["issuer"] == idp["issuer"]
                assert entry.get("role") == "reviewer"

                # --- the viewer (fresh browser, own login) may not decide: the buttons are off and say why
                pg2 = _page(browser)
                pg2.goto(srv["url"])
                _login(pg2, VIEWER)
                who = _sidebar_identity(pg2)
                assert VIEWER["email"] in who and "viewer" in who, who
                pg2.goto(f"{srv['url']}/concepts?run=small-run")
                _pick_concept(pg2, 1)  # not the one the reviewer rejected
                edits_bytes = (run_dir / "edits.jsonl").read_bytes()
                concepts_bytes = (run_dir / "concepts.json").read_bytes()
                assert pg2.get_by_role("button", name="Reject").is_disabled()
                pg2.get_by_text("The table is read-only").wait_for()
                assert "may not decide on concepts" in pg2.locator("body").inner_text()
                shot(pg2, ARTIFACTS, "3-oidc-viewer-read-only")

                # --- enforced where the action happens, not by the button: the viewer's page was drawn
                # while the roles file made them a reviewer; demoted before the click, the click is refused
                _roles_file(tmp_path, viewer_role="reviewer")
                pg2.reload()
                pg2.get_by_text("What if?").wait_for()
                idle(pg2)
                _pick_concept(pg2, 1)
                reject = pg2.get_by_role("button", name="Reject")
                assert reject.is_enabled()
                _roles_file(tmp_path, viewer_role="viewer")
                reject.click()
                # the engine's refusal (PermissionDenied), not the read-only caption drawn with the page
                pg2.get_by_text("'viewer', which may not decide on concepts").wait_for()
                assert "nothing was changed" in pg2.locator("body").inner_text()
                idle(pg2)
                shot(pg2, ARTIFACTS, "4-oidc-viewer-refused")
                assert (run_dir / "edits.jsonl").read_bytes() == edits_bytes
                assert (run_dir / "concepts.json").read_bytes() == concepts_bytes
            finally:
                browser.close()


# ------------------------------------------------------------------------------------ trusted proxy
def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (to prove the app is not reachable on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


@pytest.mark.browser
@pytest.mark.slow
def test_nginx_sets_the_identity_and_a_bypass_gets_none(runs_root, tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    ensure_nginx()
    run_dir = runs_root / "small-run"
    app_port, proxy_port = free_port(), free_port()
    env = {"CLUSTERMINE_TRUSTED_HEADER": HEADER, "CLUSTERMINE_ROLES": str(_roles_file(tmp_path)),
           "STREAMLIT_SECRETS_FILES": _no_secrets(tmp_path)}
    with streamlit_server(runs_root, tmp_path / "streamlit.log", env=env, port=app_port, wait_s=90) as srv, \
            nginx_proxy(tmp_path, listen_port=proxy_port, app_port=app_port, users={"ann": "ann-pw", "bo": "bo-pw"},
                        header=HEADER) as proxy, sync_playwright() as p:
        addr = _non_loopback_address()
        if addr:  # the README's condition: the app listens on loopback only
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((addr, app_port)) != 0, f"the app answers on {addr}:{app_port}"
        browser = _browser(p)
        try:
            # --- through nginx, with a forged copy of the header: the basic-auth user arrives instead
            pg = _page(browser, http_credentials={"username": "ann", "password": "ann-pw"},
                       extra_http_headers={HEADER: "mallory@evil.example"})
            pg.goto(f"{proxy['url']}/concepts?run=small-run")
            who = _sidebar_identity(pg)
            shot(pg, ARTIFACTS, "5-proxy-ann")
            assert "ann" in who and "proxy" in who and "reviewer" in who, who
            assert "mallory" not in pg.locator("body").inner_text()
            concept = _pick_concept(pg, 2)  # one the OIDC test left alone
            pg.get_by_role("button", name="Reject").click()
            pg.get_by_text(f"{concept} → rejected").wait_for()
            entry = _edit_log(run_dir)[-1]
            assert (entry["user"], entry["auth"], entry.get("role")) == ("ann", "proxy", "reviewer")

            # --- wrong password: nginx answers 401, the app is never reached
            bad = _page(browser, http_credentials={"username": "ann", "password": "wrong"})
            resp = bad.goto(f"{proxy['url']}/")
            assert resp.status == 401

            # --- straight to the app's port (bypassing nginx), no header: no identity, nothing of the run
            direct = _page(browser)
            direct.goto(f"{srv['url']}/concepts?run=small-run")
            direct.get_by_text(f"{HEADER} header is missing").wait_for()
            idle(direct)
            shot(direct, ARTIFACTS, "6-proxy-bypass")
            body = direct.locator("body").inner_text()
            assert "What if?" not in body and "Identity:" not in body
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.slow
def test_without_proxy_mode_the_header_is_ignored(runs_root, tmp_path):
    """Local mode (nothing configured): a client-sent identity header changes nothing; the name stays
    self-declared (``auth = "none"``)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    env = {"CLUSTERMINE_TRUSTED_HEADER": "", "CLUSTERMINE_ROLES": "", "STREAMLIT_SECRETS_FILES": _no_secrets(tmp_path)}
    with streamlit_server(runs_root, tmp_path / "streamlit.log", env=env, wait_s=90) as srv, \
            sync_playwright() as p:
        browser = _browser(p)
        try:
            pg = _page(browser, extra_http_headers={HEADER: "mallory@evil.example"})
            pg.goto(f"{srv['url']}/concepts?run=small-run")
            who = _sidebar_identity(pg)
            assert "mallory" not in who and "self-declared" in who, who
            concept = _pick_concept(pg, 3)
            pg.get_by_role("button", name="Reject").click()
            pg.get_by_text(f"{concept} → rejected").wait_for()
            entry = _edit_log(runs_root / "small-run")[-1]
            assert entry["auth"] == "none" and "mallory" not in entry["user"], entry
        finally:
            browser.close()


# ------------------------------------------------------------------------------ the shipped example
@pytest.mark.parametrize("option", ["A", "B", "C"])
def test_the_shipped_nginx_example_is_valid(option, tmp_path):
    """deploy/nginx/clustermine.conf passes ``nginx -t`` with each of its options (A oauth2-proxy as
    shipped, B basic auth, C TLS only) in place: certificate paths pointed at a throw-away self-signed
    pair, the snippet at its place in the checkout."""
    nginx = ensure_nginx()
    if not shutil.which("openssl"):
        missing_resource("openssl not installed (needed for a throw-away certificate)")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    site = (shipped_site(option).replace("/etc/nginx/snippets/clustermine-proxy.conf", str(PROXY_SNIPPET))
            .replace("/etc/ssl/certs/clustermine.pem", str(cert)).replace("/etc/ssl/private/clustermine.key", str(key))
            .replace("listen 80;", "listen 127.0.0.1:80;").replace("listen 443 ", "listen 127.0.0.1:443 "))
    assert option == "A" or "auth_request /oauth2/auth;" not in site.split("# --- Option B")[0]
    (tmp_path / "site.conf").write_text(site)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
                    f"http {{\n  access_log {tmp_path / 'access.log'};\n{temp_paths(tmp_path)}\n"
                    f"  include {tmp_path / 'site.conf'};\n}}\n")
    res = subprocess.run([str(nginx), "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "test is successful" in res.stderr
