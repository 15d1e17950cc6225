# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv if missing, install, run the whole DAG on the embedded default
#   make test   create .venv if missing, install, run the test suite
# The Snakemake targets run .venv/bin/snakemake by path, exactly as the README documents it:
# rules find `facedet3d` beside it (rules/common.smk), so no activated venv or PATH is needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Extra pip arguments for torch, e.g. a CPU-only index on machines whose default torch is a CUDA build.
TORCH_PIP_ARGS ?=

.PHONY: demo test lint dry-run clean-results detail-net ablation

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: its CPU wheel, so nothing pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# profiles/local: 2 cores, one GPU job at a time (resources gpu=1), shell commands printed.
demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/snakemake --lint

dry-run: $(STAMP)
	$(BIN)/snakemake -n --profile profiles/local

# Delete results/ and Snakemake's records of the files in it (.snakemake/metadata: params, code,
# ...; .snakemake/incomplete: markers of interrupted jobs); asks nothing. Other results folders,
# conda environments and logs in .snakemake/ stay. Long keys are split into @-prefixed folders,
# whose first part still starts with the key.
clean-results:
	rm -rf results
	@$(PYTHON) -c 'import base64, os, shutil; \
	roots = ("results/", os.path.abspath("results") + "/"); \
	dirs = [".snakemake/metadata", ".snakemake/incomplete"]; \
	entries = [(d, n) for d in dirs if os.path.isdir(d) for n in os.listdir(d)]; \
	key = lambda n: base64.urlsafe_b64decode(n.lstrip("@")[: len(n.lstrip("@")) // 4 * 4]).decode(errors="replace"); \
	old = [os.path.join(d, n) for d, n in entries if key(n).startswith(roots)]; \
	[shutil.rmtree(p) if os.path.isdir(p) else os.remove(p) for p in old]; \
	print(f"removed results/ and {len(old)} Snakemake records of its files")'

# Retrain the detail network (README, extraction; ~25 min on 2 cores): rule detail_net on a
# synthetic set of its own seed (configs/detail_net.yaml: results/detail_net_set/), shape from
# shading on every image, then training. Writes results/detail_net_set/detail_net/detail_net.pt;
# use it with extract.detail_net_weights, or copy it over facedet3d/extract/weights/detail_net.pt
# to ship it.
detail-net: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --configfile config.yaml configs/detail_net.yaml \
		-- detail_net

# The renderer without the Augmented Wrinkle and Detailed Shading losses (paper Fig. 8), after
# the demo's full R, the table comparing the two on held-out people, then the demo's targets
# again: evaluate reruns with the ablation's weights and draws Fig. 8.
ablation: $(STAMP)
	$(BIN)/snakemake --profile profiles/local -- train_renderer_ablation
	$(BIN)/snakemake --profile profiles/local
	cat results/train_renderer_ablation/comparison.md
