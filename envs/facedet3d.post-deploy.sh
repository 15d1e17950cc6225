#!/usr/bin/env bash
# Run by Snakemake (--use-conda) once, right after it creates the environment of
# envs/facedet3d.yaml, with that environment activated and Snakemake's working directory
# (the repository root, where `snakemake` is started) as the current directory.
# Installs this repository's package editable, so the rules' `facedet3d` runs the code of the
# working tree; --no-deps: every dependency is already pinned in facedet3d.yaml.
set -euo pipefail
if ! grep -qs '^name = "facedet3d"$' pyproject.toml; then
    echo "facedet3d.post-deploy.sh: run snakemake from the facedet3d repository root (no facedet3d pyproject.toml in $PWD)" >&2
    exit 1
fi
python -m pip install --no-deps -e "$PWD"
