#!/usr/bin/env bash
# Install Autobahn|Testsuite's `wstest` (PyPI autobahntestsuite==25.10.1, Python 2.7 only)
# into a self-contained prefix, on Debian 12 (bookworm) or a close derivative.
#
#   scripts/install-wstest.sh                       # prefix: ${WSTEST_HOME:-$HOME/.cache/wstest}
#   WSTEST_HOME=/opt/wstest scripts/install-wstest.sh
#
# How: Python 2.7 is unpacked (`dpkg -x`, not installed) from Debian 11 (bullseye) .debs into
# $WSTEST_HOME/py27, then pip 20.3.4 for 2.7 (fetched by python3's pip) installs autobahntestsuite
# with a fully pinned dependency set. Nothing is added to /etc/apt: the bullseye package list lives
# in a temp dir. The only system change is `apt-get install` of a few bookworm packages (a C
# compiler, python3-pip, shared libs) when they are missing; that step needs root (or sudo).
#
# Env: WSTEST_HOME   install prefix (default $HOME/.cache/wstest)
#      DEBIAN_MIRROR Debian mirror carrying bullseye (default: the one in /etc/apt, then
#                    deb.debian.org, then archive.debian.org)
#
# Idempotent: when `wstest` already works this only prints its path (well under a second).
# Progress goes to stderr; the last (only) stdout line is the path of `wstest`.
set -euo pipefail
umask 022

WSTEST_HOME=${WSTEST_HOME:-$HOME/.cache/wstest}
WSTEST=$WSTEST_HOME/bin/wstest
wstest_works() { "$WSTEST" -a >/dev/null 2>&1; }
if wstest_works; then echo "$WSTEST"; exit 0; fi

log() { echo "install-wstest: $*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$WSTEST_HOME"
WSTEST_HOME=$(cd "$WSTEST_HOME" && pwd -P)
ROOT=$WSTEST_HOME/py27
WSTEST=$WSTEST_HOME/bin/wstest

# One installer at a time per prefix; a concurrent one may have finished while we waited.
exec 9>"$WSTEST_HOME/.install.lock"
flock 9
if wstest_works; then echo "$WSTEST"; exit 0; fi

log "installing into $WSTEST_HOME"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
rm -rf "$ROOT"; rm -f "$WSTEST_HOME/bin/python2.7" "$WSTEST"   # start clean after a partial install

# 1. Bookworm packages: a C compiler (wsaccel has no Python 2 wheel), pip for python3 (to fetch
#    pip for 2.7), and the shared libraries bullseye's python2.7 and its modules link against.
PKGS="gcc libc6-dev ca-certificates debian-archive-keyring libbz2-1.0 libdb5.3 libexpat1
      libncursesw6 libnsl2 libreadline8 libsqlite3-0 libtinfo6 libtirpc3 zlib1g"
python3 -m pip --version >/dev/null 2>&1 || PKGS="$PKGS python3-pip"
missing=$(for p in $PKGS; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"
done)
if [ -n "$missing" ]; then
  missing=$(echo $missing)                               # one line
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
    die "missing packages ($missing) and not root: apt-get install them, then re-run"
  fi
  log "apt-get install $missing"
  if ! { ${SUDO[@]+"${SUDO[@]}"} apt-get update -qq &&
         ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -qq --no-install-recommends $missing; } > "$TMP/apt.log" 2>&1; then
    tail -n 30 "$TMP/apt.log" >&2; die "apt-get failed"
  fi
fi
command -v gcc >/dev/null || die "gcc not found"
python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip does not work"

# 2. Python 2.7 from bullseye, through a private apt state dir.
MULTIARCH=$(gcc -dumpmachine)                            # e.g. x86_64-linux-gnu
mirrors=()
[ -n "${DEBIAN_MIRROR:-}" ] && mirrors+=("$DEBIAN_MIRROR")
mirrors+=($(grep -hsE '^\s*(URIs:|deb\s)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
              /etc/apt/sources.list.d/*.sources | grep -oE '[a-z+]+://[^ ]+/debian/?(\s|$)' || true))
mirrors+=(http://deb.debian.org/debian http://archive.debian.org/debian)
mkdir -p "$TMP/lists/partial" "$TMP/cache/archives/partial" "$TMP/debs"
APT=(-qq -o Dir::Etc::sourcelist="$TMP/sources.list" -o Dir::Etc::sourceparts=/dev/null
     -o Dir::State::Lists="$TMP/lists" -o Dir::Cache="$TMP/cache" -o Acquire::Languages=none
     -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User="$(id -un)")
found= tried=" "
for m in "${mirrors[@]}"; do
  m=${m%/}
  case $tried in *" $m "*) continue;; esac; tried="$tried$m "
  log "fetching python2.7 (bullseye) from $m"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $m bullseye main" > "$TMP/sources.list"
  rm -rf "$TMP/lists"/*_* "$TMP/debs"/*
  if { apt-get "${APT[@]}" update && (cd "$TMP/debs" && apt-get "${APT[@]}" download \
       python2.7-minimal libpython2.7-minimal libpython2.7-stdlib libpython2.7-dev libssl1.1 libffi7)
     } > "$TMP/fetch.log" 2>&1
  then found=1; break; fi
  log "no usable bullseye at $m: $(grep -m1 -E '^(E|W):' "$TMP/fetch.log" || tail -n1 "$TMP/fetch.log")"
done
[ -n "$found" ] || die "could not download Python 2.7 from bullseye; set DEBIAN_MIRROR"
for deb in "$TMP"/debs/*.deb; do dpkg -x "$deb" "$ROOT"; done
rm -rf "$ROOT"/usr/share/doc "$ROOT"/usr/share/man "$ROOT"/usr/lib/python2.7/config-*/*.a

# 3. python2.7 wrapper: finds bullseye's libssl1.1/libffi7 and ignores the caller's Python env.
mkdir -p "$WSTEST_HOME/bin"
PY=$WSTEST_HOME/bin/python2.7
cat > "$PY" <<EOF
#!/bin/sh
export LD_LIBRARY_PATH="$ROOT/usr/lib/$MULTIARCH\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" PYTHONNOUSERSITE=1
unset PYTHONHOME PYTHONPATH PYTHONSTARTUP
exec "$ROOT/usr/bin/python2.7" "\$@"
EOF
chmod +x "$PY"
"$PY" -c 'import ssl, ctypes, zlib, sqlite3' || die "unpacked python2.7 does not work"

# 4. pip for 2.7, then wstest with a fully pinned dependency set. pip runs with -qq (errors only):
#    pip 20.3 warns at length, e.g. about every unusable index in a pip.conf.
log "bootstrapping pip for python2.7"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_PYTHON_VERSION_WARNING=1 PIP_NO_CACHE_DIR=1
# pip 20.3.4 bundles a 2020 CA list; use the system store (proxies, custom CAs) unless told otherwise.
[ -n "${PIP_CERT:-}" ] || [ ! -f /etc/ssl/certs/ca-certificates.crt ] || export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
python3 -m pip download -qq --no-deps --python-version 2.7 --only-binary=:all: -d "$TMP/wheels" \
  pip==20.3.4 setuptools==44.0.0 wheel==0.37.1 >&2
"$PY" "$(echo "$TMP"/wheels/pip-*.whl)/pip" install -qq --no-warn-script-location --no-index \
  --find-links "$TMP/wheels" pip==20.3.4 setuptools==44.0.0 wheel==0.37.1 >&2

log "pip install autobahntestsuite==25.10.1 (+ pinned dependencies)"
cat > "$TMP/requirements.txt" <<'EOF'
autobahntestsuite==25.10.1
autobahn[accelerate,twisted]==0.10.9
Twisted==19.10.0
txaio==2.1.0
zope.interface==4.6.0
jinja2==2.11.3
markupsafe==1.1.1
klein==17.10.0
Werkzeug==1.0.1
incremental==16.10.1
unittest2==1.1.0
six==1.16.0
pyOpenSSL==19.1.0
cryptography==3.3.2
service_identity==18.1.0
wsaccel==0.6.6
ujson==2.0.3
attrs==21.4.0
Automat==22.10.0
constantly==15.1.0
hyperlink==21.0.0
idna==2.10
PyHamcrest==1.10.1
typing==3.10.0.0
cffi==1.15.1
pycparser==2.21
enum34==1.1.10
ipaddress==1.0.23
pyasn1==0.5.1
pyasn1-modules==0.3.0
linecache2==1.0.0
traceback2==1.4.0
EOF
# Debian's Python.h includes <$MULTIARCH/python2.7/pyconfig.h>: both dirs must be searched.
C_INCLUDE_PATH="$ROOT/usr/include/python2.7:$ROOT/usr/include" \
  "$PY" -m pip install -qq --no-warn-script-location -r "$TMP/requirements.txt" >&2

# Debian's distutils installs scripts under <prefix>/local/bin; look rather than assume.
script=$(find "$ROOT" -path '*/bin/wstest' -type f | head -n1)
[ -n "$script" ] || die "pip did not install a wstest script"
# wstest last, so that "wstest -a works" implies a complete install. Python 2 EOL warnings
# (cryptography, Twisted) are silenced so that they don't bury wstest's own output.
printf '#!/bin/sh\nexport PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"\nexec "%s" "%s" "$@"\n' "$PY" "$script" > "$WSTEST.tmp"
chmod +x "$WSTEST.tmp"; mv "$WSTEST.tmp" "$WSTEST"
wstest_works || { "$WSTEST" -a >&2 || true; die "wstest was installed but does not run"; }
log "installed: $("$WSTEST" -a 2>&1 | paste -sd " ")"
echo "$WSTEST"
