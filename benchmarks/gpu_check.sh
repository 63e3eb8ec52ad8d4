#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on a machine where the repo cannot be pip-installed (the GPU
# machine: Python 3.12, no network, no bpy; pyproject.toml pins Python 3.11 for bpy).
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options]   # e.g. --small, --only lgm-forward
#   bash benchmarks/gpu_check.sh --download               # on a networked machine: fill .whl/
#
# Each wheel in .whl/ (or $GPU_CHECK_WHEELS) whose distribution is not installed already is
# installed with `pip install --no-index --no-deps --target` into a temporary folder; the
# repo and that folder go on PYTHONPATH, its bin/ on PATH (ninja, for gsplat's JIT build).
# gsplat's compiled kernels are kept in build/torch_extensions (git-ignored), so a second
# run on the same machine skips the compile. Results go to $OUT (or --out DIR).
# Environment: PYTHON (default python3), GPU_CHECK_WHEELS, TORCH_EXTENSIONS_DIR.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="${GPU_CHECK_WHEELS:-$REPO/.whl}"
# The carried set (see the docstring of gpu_check.py), for Python 3.12 on x86-64 Linux.
PINNED=(gsplat==1.5.3 jaxtyping==0.3.11 wadler-lindig==0.1.8 ninja==1.13.2 rich==15.0.0 markdown-it-py==4.3.0
        mdurl==0.1.2 pygments==2.21.0 packaging==26.4 typing_extensions==4.16.0 pytorch-msssim==1.0.0)

if [ "${1:-}" = "--download" ]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
        -d "$WHEELS" "${PINNED[@]}"
    exit 0
fi

SITE="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-site.XXXXXX")"
trap 'rm -rf "$SITE"' EXIT

missing=()
if [ -d "$WHEELS" ]; then
    for whl in "$WHEELS"/*.whl; do
        [ -e "$whl" ] || continue
        dist="$(basename "$whl" | cut -d- -f1)"
        if ! "$PY" -c 'import importlib.metadata as m, sys; m.version(sys.argv[1])' "$dist" 2>/dev/null; then
            missing+=("$whl")
        fi
    done
else
    echo "gpu_check.sh: no wheel folder $WHEELS; using the installed packages only" >&2
fi

installed=""
if [ "${#missing[@]}" -gt 0 ]; then
    if "$PY" -m pip --version >/dev/null 2>&1; then
        "$PY" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
            --target "$SITE" "${missing[@]}"
    else
        # No pip: a wheel is a zip; unpack it and move its .data/ parts where pip would.
        "$PY" - "$SITE" "${missing[@]}" <<'EOF'
import os, shutil, stat, sys, zipfile
site = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
for entry in os.listdir(site):
    if not entry.endswith(".data"):
        continue
    data = os.path.join(site, entry)
    for kind in os.listdir(data):
        src = os.path.join(data, kind)
        dst = os.path.join(site, "bin") if kind == "scripts" else site
        os.makedirs(dst, exist_ok=True)
        for name in os.listdir(src):
            shutil.move(os.path.join(src, name), os.path.join(dst, name))
            if kind == "scripts":
                path = os.path.join(dst, name)
                os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    shutil.rmtree(data)
EOF
    fi
    for whl in "${missing[@]}"; do installed+="$(basename "$whl") "; done
    echo "gpu_check.sh: installed ${#missing[@]} carried wheel(s) into $SITE: $installed"
fi

export GPU_CHECK_INSTALLED="$installed"
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$REPO/build/torch_extensions}"
set +e
"$PY" "$REPO/benchmarks/gpu_check.py" "$@"
status=$?
exit "$status"
