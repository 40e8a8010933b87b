# Sourced by scripts/start and scripts/test: create .venv when missing and install the project
# (with the extras given in MINDOO_EXTRAS) whenever pyproject.toml, setup.py or the C source of
# the optional native sealer (built in place by the editable install) changed since the last
# install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
extras="${MINDOO_EXTRAS:-}"
stamp=".venv/.installed${extras:+-$extras}"
# The native sealer is built where a C compiler is found; with one found and no module built
# (e.g. the Python headers were missing last time), the install is tried again.
native_missing=
if command -v cc >/dev/null 2>&1 && ! compgen -G "mindoo_p2p/_seal_chain*.so" >/dev/null; then
  native_missing=1
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
    || [ mindoo_p2p/_seal_chain.c -nt "$stamp" ] || [ -n "$native_missing" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
  touch "$stamp"
fi
# The web page test (tests/test_http_page.py) loads the page in headless Chromium: install
# Debian's package when it is missing and apt-get can (root, as on CI); otherwise that test is
# skipped with a reason.
if [ "$extras" = "test" ] && ! command -v chromium >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing chromium for the web page test (apt-get)..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    >/dev/null 2>&1 || echo "warning: could not install chromium; its test will be skipped" >&2
fi
