#!/usr/bin/env bash
# Creates/updates the project's virtual environment (.venv) and system data (WordNet; Chromium for
# browser tests with --with-browser). Idempotent: re-running does nothing when all is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_BROWSER=0
[ "${1:-}" = "--with-browser" ] && WITH_BROWSER=1

PY=$(command -v python3.11 || command -v python3)
STAMP=.venv/.requirements.sha1
WANT=$(sha1sum requirements.txt pyproject.toml | sha1sum | cut -c1-40)
if [ ! -x .venv/bin/python ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] creating/updating .venv with $PY (first time: a few minutes)" >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$WANT" > "$STAMP"
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then as_root apt-get update -qq || true; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# WordNet: nltk data (if the user ran nltk.download) or Debian's wordnet-base.
if ! .venv/bin/python -c "from clustermine.method.corpus import find_wordnet; find_wordnet()" 2>/dev/null; then
  echo "[setup] installing WordNet (Debian package wordnet-base)" >&2
  apt_install wordnet-base || echo "[setup] could not install wordnet-base: install it yourself (see README)" >&2
fi
if [ "$WITH_BROWSER" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "[setup] installing Debian chromium for the browser tests" >&2
  apt_install chromium || echo "[setup] could not install chromium; browser tests will be skipped" >&2
fi
# The team-deployment tests (tests/test_team_auth.py) run a real OpenID Connect provider with node;
# its npm packages are installed into .cache/oidc by the tests themselves (tests/auth_servers.py).
if [ "$WITH_BROWSER" = 1 ] && ! command -v npm >/dev/null; then
  echo "[setup] installing Debian nodejs + npm for the OpenID Connect login tests" >&2
  apt_install nodejs npm || echo "[setup] could not install nodejs/npm; the login tests will be skipped (failed on CI)" >&2
fi
# nginx for the same tests, without installing the service: Debian's package unpacked into .cache/nginx
# (tests/auth_servers.py does the same when it is missing; here an apt-get update may come first).
if [ "$WITH_BROWSER" = 1 ] && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ] \
    && [ ! -x .cache/nginx/usr/sbin/nginx ]; then
  echo "[setup] fetching Debian nginx into .cache/nginx for the reverse-proxy tests" >&2
  mkdir -p .cache/nginx/debs
  if ( cd .cache/nginx/debs && { apt-get download nginx 2>/dev/null \
        || { as_root apt-get update -qq && apt-get download nginx; }; } ); then
    dpkg -x .cache/nginx/debs/nginx_*.deb .cache/nginx
  else
    echo "[setup] could not fetch nginx; the reverse-proxy tests will be skipped (failed on CI)" >&2
  fi
fi
# Embed the default concept corpus (117,798 WordNet nouns, offline encoder) now, once, so the first
# run in the app needs no corpus stage. Cached under $CLUSTERMINE_CACHE (default ~/.cache/clustermine).
if ! HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -m clustermine prepare --device cpu; then
  echo "[setup] could not embed the default corpus now; the first run will do it (see the message above)" >&2
fi

