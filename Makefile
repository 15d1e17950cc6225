# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv if missing, install, run the whole DAG on the embedded default
#   make test   create .venv if missing, install, run the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Extra pip arguments for torch, e.g. a CPU-only index on machines whose default torch is a CUDA build.
TORCH_PIP_ARGS ?=

.PHONY: demo test lint dry-run clean-results detail-net

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: its CPU wheel, so nothing pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/default --cores 2

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

lint: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

dry-run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake -n --cores 2

# Rebuild the shipped detail-network weights (README, extraction; ~25 min on 2 cores): a synthetic
# set of its own seed (configs/detail_net.yaml), shape from shading on every image, training.
DETAIL_NET_DIR := results/detail_net
detail-net: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/default --cores 2 \
		--configfile config.yaml configs/detail_net.yaml -- synth
	$(BIN)/python -m facedet3d.extract.detail_net_train collect --results $(DETAIL_NET_DIR) \
		--out $(DETAIL_NET_DIR)/samples.npy
	$(BIN)/python -m facedet3d.extract.detail_net_train train --data $(DETAIL_NET_DIR)/samples.npy \
		--out facedet3d/extract/weights/detail_net.pt
