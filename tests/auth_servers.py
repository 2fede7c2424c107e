"""Real identity servers for the team-deployment tests: an OpenID Connect provider (the npm package
``oidc-provider`` run with node, tests/oidc/provider.mjs) and nginx with basic auth in front of the app
(deploy/nginx/clustermine-proxy.conf). Both bind to 127.0.0.1, are installed into ``.cache/`` without
root when missing (``npm ci``; ``apt-get download`` + ``dpkg -x``), and are stopped by PID. A missing
tool skips the test on a developer machine and fails it on CI (``conftest.missing_resource``)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, missing_resource
from streamlit_server import stop_process

OIDC_SRC = ROOT / "tests" / "oidc"
OIDC_CACHE = Path(os.environ.get("CLUSTERMINE_TEST_OIDC_CACHE") or ROOT / ".cache" / "oidc")
NGINX_CACHE = Path(os.environ.get("CLUSTERMINE_TEST_NGINX_CACHE") or ROOT / ".cache" / "nginx")
PROXY_SNIPPET = ROOT / "deploy" / "nginx" / "clustermine-proxy.conf"
SHIPPED_SITE = ROOT / "deploy" / "nginx" / "clustermine.conf"


# --- the OpenID Connect provider -------------------------------------------------------------------

def _lock_digest() -> str:
    return hashlib.sha1((OIDC_SRC / "package-lock.json").read_bytes()).hexdigest()


def ensure_oidc_modules() -> Path:
    """The folder whose node_modules hold ``oidc-provider`` (``npm ci`` into the cache when missing or
    when tests/oidc/package-lock.json changed); skips / fails when node or npm is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        missing_resource("node and npm are needed for the OpenID Connect provider (apt-get install nodejs npm)")
    stamp = OIDC_CACHE / ".lock.sha1"
    if stamp.exists() and stamp.read_text() == _lock_digest() \
            and (OIDC_CACHE / "node_modules" / "oidc-provider" / "package.json").exists():
        return OIDC_CACHE
    OIDC_CACHE.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(OIDC_SRC / name, OIDC_CACHE / name)
    res = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=OIDC_CACHE,
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        missing_resource(f"npm ci of tests/oidc into {OIDC_CACHE} failed: {res.stderr[-800:]}")
    stamp.write_text(_lock_digest())
    return OIDC_CACHE


@contextlib.contextmanager
def oidc_provider(tmp: Path, *, client_id: str, client_secret: str, redirect_uris: list[str],
                  users: list[dict]) -> Iterator[dict]:
    """A running provider on 127.0.0.1 with one confidential client and ``users``
    (``{"id", "email", "name"}``); yields ``{"issuer", "metadata_url", "pid"}``."""
    modules = ensure_oidc_modules()
    cfg = tmp / "oidc.json"
    cfg.write_text(json.dumps({"port": 0, "modules": str(modules), "client_id": client_id,
                               "client_secret": client_secret, "redirect_uris": redirect_uris, "users": users}))
    log = tmp / "oidc.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(["node", str(OIDC_SRC / "provider.mjs"), str(cfg)], stdout=subprocess.PIPE,
                                stderr=err, text=True)
    try:
        line = proc.stdout.readline()  # "LISTENING <issuer>", or "" when node died
        if not line.startswith("LISTENING "):
            proc.wait(10)
            pytest.fail("the OpenID Connect provider did not start: " + log.read_text()[-2000:])
        issuer = line.split()[1]
        yield {"issuer": issuer, "metadata_url": issuer + "/.well-known/openid-configuration", "pid": proc.pid}
    finally:
        stop_process(proc)


# --- nginx ------------------------------------------------------------------------------------------

def find_nginx() -> Path | None:
    """nginx on the PATH, in /usr/sbin, or unpacked in the cache."""
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx", NGINX_CACHE / "usr" / "sbin" / "nginx"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    return None


def ensure_nginx() -> Path:
    """Debian's nginx binary: installed if present, else ``apt-get download nginx`` unpacked with
    ``dpkg -x`` into the cache (no root, no service started); skips / fails when neither works."""
    found = find_nginx()
    if found:
        return found
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        missing_resource("nginx not installed and no apt-get/dpkg to fetch it (apt-get install nginx)")
    debs = NGINX_CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["apt-get", "download", "nginx"], cwd=debs, capture_output=True, text=True, timeout=300)
    pkgs = sorted(debs.glob("nginx_*.deb"))
    if res.returncode != 0 or not pkgs:
        missing_resource(f"nginx not installed and `apt-get download nginx` failed: {res.stderr[-600:]}")
    for deb in pkgs:
        subprocess.run(["dpkg", "-x", str(deb), str(NGINX_CACHE)], check=True, timeout=120)
    found = find_nginx()
    if not found:
        missing_resource(f"nginx unpacked into {NGINX_CACHE} but no usr/sbin/nginx there")
    return found


def htpasswd_line(user: str, password: str) -> str:
    """One ``user:{SHA}base64(sha1(password))`` line, a scheme nginx's auth_basic reads (test use only:
    an unsalted hash; use bcrypt/apr1 from ``htpasswd`` for a real deployment)."""
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    return f"{user}:{{SHA}}{digest}"


def temp_paths(prefix: Path) -> str:
    """http-level directives that keep nginx's temporary files under ``prefix/tmp`` (created here)
    instead of Debian's /var/lib/nginx, which an unpacked (not installed) nginx does not have."""
    lines = []
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / d).mkdir(parents=True, exist_ok=True)
        lines.append(f"    {d}_temp_path {prefix / 'tmp' / d};")
    return "\n".join(lines)


def _block(text: str, head: str) -> str:
    """The block of ``text`` that starts at the line starting with ``head`` (after indentation) and
    ends at its matching closing brace, dedented."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.strip().startswith(head))
    depth, out = 0, []
    for line in lines[i:]:
        out.append(line.strip() and line[len(lines[i]) - len(lines[i].lstrip()):])
        depth += line.count("{") - line.count("}")
        if depth == 0:
            break
    return "\n".join(out) + "\n"


def shipped_location(option: str) -> str:
    """The ``location /`` block of option ``A`` (oauth2-proxy, active as shipped), ``B`` (basic auth)
    or ``C`` (TLS only, OIDC in the app) of deploy/nginx/clustermine.conf, uncommented."""
    text = SHIPPED_SITE.read_text()
    if option == "A":
        return _block(text, "location / {")
    part = text[text.index(f"# --- Option {option}:"):]
    part = part[:part.index("# }") + 3]
    commented = [line.strip()[2:] if line.strip().startswith("# ") else line.strip()[1:]
                 for line in part.splitlines() if line.strip().startswith("#")]
    return _block("\n".join(commented), "location / {")


def shipped_site(option: str = "A") -> str:
    """deploy/nginx/clustermine.conf with option ``option``'s ``location /`` in place of option A's."""
    text = SHIPPED_SITE.read_text()
    if option == "A":
        return text
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.strip() == "location / {")
    j, depth = i, 0
    for j in range(i, len(lines)):
        depth += lines[j].count("{") - lines[j].count("}")
        if depth == 0:
            break
    return "\n".join(lines[:i] + shipped_location(option).splitlines() + lines[j + 1:]) + "\n"


def nginx_conf(prefix: Path, *, listen_port: int, app_port: int, htpasswd: Path, header: str) -> str:
    """A whole nginx.conf for the test, made of the shipped parts: deploy/nginx/clustermine.conf's
    ``map``, ``upstream`` (pointed at 127.0.0.1:``app_port``) and option B's ``location /`` (basic
    auth, the htpasswd file ``htpasswd``) including deploy/nginx/clustermine-proxy.conf (its identity
    header renamed to ``header`` when the app is configured with another name), in a server on
    127.0.0.1:``listen_port``."""
    snippet = PROXY_SNIPPET.read_text()
    if header.lower() != "x-forwarded-email":
        snippet = snippet.replace("proxy_set_header X-Forwarded-Email ", f"proxy_set_header {header} ")
    (prefix / "clustermine-proxy.conf").write_text(snippet)
    site = SHIPPED_SITE.read_text()
    upstream = _block(site, "upstream clustermine_app").replace("127.0.0.1:8501", f"127.0.0.1:{app_port}")
    location = (shipped_location("B").replace("/etc/nginx/clustermine.htpasswd", str(htpasswd))
                .replace("/etc/nginx/snippets/clustermine-proxy.conf", str(prefix / "clustermine-proxy.conf")))
    user = ""
    if os.geteuid() == 0:  # workers would drop to "nobody", who cannot read the test's private folder
        user = "user root root;\n"
    return f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / 'access.log'};
{temp_paths(prefix)}
{_block(site, "map $http_upgrade")}
{upstream}
server {{
    listen 127.0.0.1:{listen_port};
    server_name localhost;
{location}}}
}}
"""


@contextlib.contextmanager
def nginx_proxy(tmp: Path, *, listen_port: int, app_port: int, users: dict[str, str],
                header: str = "X-Forwarded-Email") -> Iterator[dict]:
    """nginx with basic auth (``users``: name → password) on 127.0.0.1:``listen_port``, in front of the
    app on ``app_port``; yields ``{"url", "pid"}`` once the port answers."""
    binary = ensure_nginx()
    prefix = tmp / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    htpasswd = prefix / "htpasswd"
    htpasswd.write_text("".join(htpasswd_line(u, p) + "\n" for u, p in users.items()))
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, listen_port=listen_port, app_port=app_port, htpasswd=htpasswd, header=header))
    check = subprocess.run([str(binary), "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.fail(f"nginx refused the generated configuration {conf}: {check.stderr[-1500:]}")
    with open(prefix / "stderr.log", "w") as err:
        proc = subprocess.Popen([str(binary), "-p", str(prefix), "-c", str(conf)], stdout=err, stderr=err)
    url = f"http://127.0.0.1:{listen_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail("nginx exited at start: " + (prefix / "error.log").read_text(errors="replace")[-1500:])
            try:
                urllib.request.urlopen(url + "/", timeout=2)
            except urllib.error.HTTPError:
                break  # 401 without credentials: nginx answers
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("nginx did not answer in 20 s: " + (prefix / "error.log").read_text()[-1500:])
                time.sleep(0.1)
            else:
                break
        yield {"url": url, "pid": proc.pid, "prefix": prefix}
    finally:
        stop_process(proc)
