# One setup command, one main job, one test command (see README.md).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
SEED ?= 0
# Real PartNet-Mobility data instead of the embedded synthetic default:
#   make dataset PARTNET_MOBILITY_DIR=/path/to/partnet-mobility
PARTNET_MOBILITY_DIR ?=
QUALITY ?= draft
WORKERS ?= 1
PER_CATEGORY ?= 1
# the embedded default sweeps one joint per object; real data sweeps every joint
MAX_JOINTS ?= $(if $(PARTNET_MOBILITY_DIR),0,1)

.PHONY: setup dataset dataset-full test bench clean-data

setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'

dataset:
	$(BIN)/partdrag4d make-dataset --out $(DATA) --seed $(SEED) --per-category $(PER_CATEGORY) --max-joints $(MAX_JOINTS) \
		--quality $(QUALITY) --workers $(WORKERS) $(if $(PARTNET_MOBILITY_DIR),--source $(PARTNET_MOBILITY_DIR),)

# every joint of 20 objects per category at the standard preset (hours on 2 cores; use WORKERS/--shard on more)
dataset-full:
	$(MAKE) dataset PER_CATEGORY=20 MAX_JOINTS=0 QUALITY=standard DATA=data-full

test:
	$(BIN)/python -m pytest -q

bench:
	$(BIN)/python benchmarks/run_all.py

clean-data:
	rm -rf $(DATA)
