#!/usr/bin/env bash
# Build an offline wheelhouse for the air-gapped review workstation (amanat-review only).
#
#   deploy/build-wheelhouse.sh [OUT_DIR]        default OUT_DIR: dist/wheelhouse
#
# Run it on an online build machine with the same OS, CPU and Python minor version as the
# workstation (PYTHON=/usr/bin/python3.11 to pick the interpreter). It writes:
#   *.whl             amanat (no dependencies) + the review tool's only third-party
#                     dependencies, pynacl and argon2-cffi, and theirs (cffi, pycparser, ...)
#   requirements.txt  every wheel pinned by version and SHA-256, for pip --require-hashes
#   SHA256SUMS        for `sha256sum -c` after carrying the folder across
#   INSTALL.txt       the commands to run on the workstation, which needs no network
# The server's dependencies (aiohttp, stem, SQLAlchemy, ...) are never downloaded: the script
# refuses to finish if one of them shows up.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

OUT=${1:-dist/wheelhouse}
PY=${PYTHON:-python3}
# Both lists come from pyproject.toml: the offline roles install [project] dependencies only; the
# packages of the networked roles' extras (server, workstation) must never show up here.
read_pyproject() {
    "$PY" - "$1" <<'PYTHON'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
def names(specs): return sorted({re.split(r"[\[<>=!~; ]", s, maxsplit=1)[0] for s in specs})
if sys.argv[1] == "offline":
    print(" ".join(project["dependencies"]))
else:
    extras = project["optional-dependencies"]
    networked = names(extras["server"] + extras["workstation"]) + ["mako"]  # alembic's
    print("^(" + "|".join(re.sub(r"[-_.]+", "[-_.]", n) for n in networked) + ")-")
PYTHON
}
read -r -a REVIEW_DEPS <<< "$(read_pyproject offline)"
SERVER_ONLY=$(read_pyproject networked)

if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    echo "build-wheelhouse: $OUT exists and is not empty" >&2
    exit 1
fi
mkdir -p "$OUT"

echo "build-wheelhouse: amanat (without its server dependencies)"
had_build=$([ -e build ] && echo yes || echo no)
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" .
[ "$had_build" = yes ] || rm -rf build  # setuptools' scratch folder, not ours to keep
echo "build-wheelhouse: ${REVIEW_DEPS[*]} and their dependencies (binary wheels only)"
"$PY" -m pip wheel --quiet --only-binary=:all: --wheel-dir "$OUT" "${REVIEW_DEPS[@]}"

if ls "$OUT" | grep -Eiq "$SERVER_ONLY"; then
    echo "build-wheelhouse: a server-only package got into the wheelhouse:" >&2
    ls "$OUT" | grep -Ei "$SERVER_ONLY" >&2
    exit 1
fi

(
    cd "$OUT"
    : > requirements.txt
    for whl in *.whl; do
        # name-version-...whl; names in wheel files use underscores for dashes
        IFS=- read -r name version _ <<< "$whl"
        echo "${name//_/-}==${version} --hash=sha256:$(sha256sum "$whl" | cut -d' ' -f1)" >> requirements.txt
    done
    cat > INSTALL.txt <<'TXT'
Installing amanat-review on the offline workstation
===================================================

1. Check the folder arrived intact:

       cd wheelhouse && sha256sum -c SHA256SUMS

2. Install into a fresh virtual environment, from these files only (no network), with every
   wheel checked against its SHA-256. --no-deps is deliberate: amanat's package metadata also
   names the server's dependencies, which the review tool never imports.

       python3 -m venv ~/amanat-review
       ~/amanat-review/bin/pip install --no-index --no-deps --require-hashes \
           --find-links . -r requirements.txt

3. Check it runs:

       ~/amanat-review/bin/amanat-review --help

Then create a vault with `amanat-review init --vault DIR --identity FILE --keyring FILE
--org-pub FILE` (the identity file from `amanat keys add-investigator`, keyring.json and org.pub
from the organization).
TXT
    sha256sum *.whl requirements.txt INSTALL.txt > SHA256SUMS
)
echo "build-wheelhouse: done: $OUT ($(ls "$OUT"/*.whl | wc -l) wheels); see $OUT/INSTALL.txt"
