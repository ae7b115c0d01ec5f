# SAM `BuildMethod: makefile` targets for the control-plane functions in template.yaml.
#
# The repository Makefile includes this file; `sam build` runs
#   make --makefile <repo>/Makefile build-<LogicalId>
# with ARTIFACTS_DIR set to that function's output directory.
#
# Why a custom build rather than SAM's python builder:
# - CodeUri is the repo root (so `functions` and `shared` import as top-level packages), but only
#   those two packages may ship: no tests, no edge_media, no .venv.
# - .pyc files must ship. Lambda's code directory is read-only, so without them every cold start
#   compiles every module again: ~700 ms instead of ~300 ms to import the handler.
#   SAM's python builder ships none.
# - The pyc files are "unchecked-hash" (PEP 552). SAM's zip stamps every entry 1980-01-01, so
#   the default timestamp-checked pyc files all look stale once unpacked and are ignored (measured:
#   a SAM-zipped bundle imported in ~500 ms with timestamp pyc files, the same as with none, and
#   in ~155 ms with unchecked-hash ones). Deployed code never changes, so no check is lost.
# - pip's --no-warn-conflicts: with --target, pip compares the bundle against the packages of the
#   interpreter running it (e.g. a global awscli) and prints a misleading "ERROR" about them.
#   bin/ is dropped: console scripts with this machine's shebang are useless on Lambda.

# Including this file must not change the includer's default goal (plain `make`).
_agera_sam_saved_goal := $(.DEFAULT_GOAL)

# Root of the tree being built (the source, or SAM's scratch copy of it), found from this file's
# own path so the build does not depend on make's working directory.
AGERA_SAM_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)

# Must be the runtime's minor version: compileall writes __pycache__/*.cpython-311.pyc, and the
# python3.11 runtime ignores pyc files written by any other version.
LAMBDA_PYTHON ?= python3.11
LAMBDA_PYTHON_VERSION := 3.11
# Must match `Architectures: [arm64]` in template.yaml.
LAMBDA_PIP_PLATFORM := manylinux2014_aarch64

AGERA_LAMBDA_REQUIREMENTS := $(AGERA_SAM_ROOT)/functions/requirements.txt
AGERA_LAMBDA_PACKAGES := functions shared

define agera-lambda-bundle
@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set: run this through sam build" >&2; exit 2; }
@$(LAMBDA_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "$(LAMBDA_PYTHON) is not Python 3.11 (the Lambda runtime)" >&2; exit 2; }
$(LAMBDA_PYTHON) -m pip install --quiet --disable-pip-version-check --no-warn-conflicts \
	--root-user-action=ignore --no-compile --upgrade \
	--requirement "$(AGERA_LAMBDA_REQUIREMENTS)" --target "$(ARTIFACTS_DIR)" \
	--platform $(LAMBDA_PIP_PLATFORM) --implementation cp --python-version $(LAMBDA_PYTHON_VERSION) \
	--only-binary=:all:
cd "$(ARTIFACTS_DIR)" && rm -rf bin $(AGERA_LAMBDA_PACKAGES)
cd "$(AGERA_SAM_ROOT)" && cp -R $(AGERA_LAMBDA_PACKAGES) "$(ARTIFACTS_DIR)/"
cd "$(ARTIFACTS_DIR)" && find $(AGERA_LAMBDA_PACKAGES) \( -name __pycache__ -o -name tests \
	-o -name .pytest_cache -o -name '*.pyc' -o -name 'requirements*.txt' \) -prune -exec rm -rf {} +
$(LAMBDA_PYTHON) -m compileall -q --invalidation-mode unchecked-hash "$(ARTIFACTS_DIR)"
endef

.PHONY: build-ApiFunction build-EventsFunction build-CallbacksFunction build-ReaperFunction

build-ApiFunction:
	$(agera-lambda-bundle)

build-EventsFunction:
	$(agera-lambda-bundle)

build-CallbacksFunction:
	$(agera-lambda-bundle)

build-ReaperFunction:
	$(agera-lambda-bundle)

.DEFAULT_GOAL := $(_agera_sam_saved_goal)
