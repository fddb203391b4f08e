#!/usr/bin/env bash
# Build an offline wheelhouse for one of the machines that install Amanat without a network.
#
#   deploy/build-wheelhouse.sh [--role offline|workstation] [OUT_DIR]
#       --role offline      (default) the review workstation and the organization-key machine:
#                           amanat-review (with its `review` extra: the report's charts) and
#                           `amanat keys`
#       --role workstation  the investigators' online workstation: `amanat transfer`
#       OUT_DIR             default dist/wheelhouse
#
# Run it on an online build machine with the same OS, CPU and Python minor version as the
# target (PYTHON=/usr/bin/python3.11 to pick the interpreter). It writes:
#   *.whl             amanat (no dependencies) + the role's third-party dependencies from
#                     pyproject.toml (offline: pynacl, argon2-cffi and the `review` extra;
#                     workstation: the `workstation` extra) and theirs, binary wheels only
#   requirements.txt  every wheel pinned by version and SHA-256, for pip --require-hashes
#   SHA256SUMS        for `sha256sum -c` after carrying the folder across
#   INSTALL.txt       the commands to run on the target, which needs no network
# Packages of the other roles (aiohttp, stem, SQLAlchemy, asyncpg, ...) are never downloaded: the
# script refuses to finish if one of them shows up.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

ROLE=offline
if [ "${1:-}" = --role ]; then ROLE=${2:?--role needs offline or workstation}; shift 2; fi
case "$ROLE" in
    offline) CHECK="amanat-review --help && ~/amanat/bin/amanat keys --help" ;;
    workstation) CHECK="amanat transfer --help" ;;
    *) echo "build-wheelhouse: unknown role $ROLE (offline or workstation)" >&2; exit 2 ;;
esac
OUT=${1:-dist/wheelhouse}
PY=${PYTHON:-python3}

# Both lists come from pyproject.toml: what the role installs, and a pattern for the wheels of
# the packages that only other roles install.
read_pyproject() {
    "$PY" - "$ROLE" "$1" <<'PYTHON'
import re, sys, tomllib
role, what = sys.argv[1:]
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
wanted = project["dependencies"] + extras["workstation" if role == "workstation" else "review"]
def names(specs): return {re.split(r"[\[<>=!~; ]", s, maxsplit=1)[0].lower() for s in specs}
if what == "wanted":
    print(" ".join(wanted))
else:
    server = extras["server"] + extras["postgresql"] + ["mako"]  # mako: alembic's
    others = names(server + extras["workstation"]) - names(wanted)
    print("^(" + "|".join(re.sub(r"[-_.]+", "[-_.]", n) for n in sorted(others)) + ")-")
PYTHON
}
read -r -a DEPS <<< "$(read_pyproject wanted)"
FORBIDDEN=$(read_pyproject forbidden)

if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    echo "build-wheelhouse: $OUT exists and is not empty" >&2
    exit 1
fi
mkdir -p "$OUT"

echo "build-wheelhouse: amanat (its dependencies come next, for the $ROLE role only)"
had_build=$([ -e build ] && echo yes || echo no)
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" .
[ "$had_build" = yes ] || rm -rf build  # setuptools' scratch folder, not ours to keep
echo "build-wheelhouse: ${DEPS[*]} and their dependencies (binary wheels only)"
"$PY" -m pip wheel --quiet --only-binary=:all: --wheel-dir "$OUT" "${DEPS[@]}"

if ls "$OUT" | grep -Eiq "$FORBIDDEN"; then
    echo "build-wheelhouse: a package of another role got into the wheelhouse:" >&2
    ls "$OUT" | grep -Ei "$FORBIDDEN" >&2
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
    cat > INSTALL.txt <<TXT
Installing Amanat ($ROLE role) on a machine without a network
==============================================================

1. Check the folder arrived intact:

       cd wheelhouse && sha256sum -c SHA256SUMS

2. Install into a fresh virtual environment, from these files only (no network), with every
   wheel checked against its SHA-256. --no-deps is deliberate: every dependency this role
   needs is pinned in requirements.txt, and pip must not look for anything else.

       python3 -m venv ~/amanat
       ~/amanat/bin/pip install --no-index --no-deps --require-hashes \\
           --find-links . -r requirements.txt

3. Check it runs:

       ~/amanat/bin/$CHECK

docs/deploy.md says what comes next on each machine.
TXT
    sha256sum *.whl requirements.txt INSTALL.txt > SHA256SUMS
)
echo "build-wheelhouse: done: $OUT ($(ls "$OUT"/*.whl | wc -l) wheels); see $OUT/INSTALL.txt"
