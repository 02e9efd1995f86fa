# Everything a fresh machine needs: Debian's ffmpeg and chromium, a venv in .venv, pinned torch pair (constraints.txt).
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEBIAN  := ffmpeg chromium chromium-driver iproute2 fonts-dejavu-core
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export NO_ALBUMENTATIONS_UPDATE := 1
export RAY_USAGE_STATS_ENABLED := 0
# Bytecode is written by the first process that imports a module (pip installs without compiling: a third of its
# time went to compiling ~25k files, most of them never imported). With PYTHONDONTWRITEBYTECODE set, as in some
# environments, every process (each CLI call, Ray worker, image-download helper) would compile what it imports anew.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml setup.py constraints.txt
	@# Debian's packages install in the background while pip fills the venv: neither needs the other, and one after
	@# the other they took ~60 s and ~100 s on a fresh machine. Recommends left out: they were 90 of the 210 packages
	@# (printing, avahi, Vulkan and VA drivers, perl's web modules), none of which the browser tests or ffmpeg use.
	@# A failed pip still waits for apt-get (the trap), so no install is left holding dpkg's lock behind it.
	@set -e; apt=; log=$$(mktemp); trap '[ -z "$$apt" ] || wait $$apt' EXIT; \
	if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null || ! command -v chromium >/dev/null \
		|| ! command -v chromedriver >/dev/null || ! command -v ip >/dev/null \
		|| [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then \
		{ $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(DEBIAN); } >$$log 2>&1 & apt=$$!; fi; \
	test -x $(PY) || python3 -m venv $(VENV); \
	echo "pip install -e .[test] into $(VENV) (pinned by constraints.txt)$${apt:+; apt-get install $(DEBIAN) meanwhile}"; \
	$(PY) -m pip install -q "pip>=26"; \
	$(PY) -m pip install -q --no-compile -c constraints.txt -e ".[test]"; \
	$(PY) -m pip install -q --no-compile -c constraints.txt --no-deps "rapidocr-onnxruntime==1.4.4"; \
	if [ -n "$$apt" ]; then rc=0; wait $$apt || rc=$$?; apt=; \
		if [ $$rc != 0 ]; then cat $$log; echo "apt-get install $(DEBIAN) failed"; exit 1; fi; fi; \
	rm -f $$log
	@# A current pip: the venv's bundled one (23.2 with Python 3.11) resolved this project's 200 packages in ~60 s,
	@# pip 26 in ~30 s. RapidOCR's wheel asks for opencv-python, a second OpenCV beside our headless one: its other
	@# needs are in pyproject, the wheel itself goes in without dependencies.
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/curate demo --out demo_out

# Inside a loopback-only network namespace (tests/loopback_only.sh): no test can reach any host but 127.0.0.1.
# Two pytest workers (each its own Ray runtime, S3 server and corpus), a test file whole on one worker so a
# module's fixture (a cluster, a trained run) is built once: most tests wait on processes, not on both cores.
# Files start in tests/conftest.py's order, longest first (xdist would otherwise start the files with the
# most tests first and leave a long one-test file, such as the toy reproduction, alone at the end).
test: setup
	tests/loopback_only.sh $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

bench: setup
	$(PY) scripts/bench_download.py
	$(PY) scripts/bench_stats.py
	$(PY) scripts/bench_score.py
	$(PY) scripts/bench_caption.py
	$(PY) scripts/bench_unet_vs_official.py --threads 1
	$(PY) scripts/bench_train_loader.py
	$(PY) scripts/bench_loader_real.py
	$(PY) scripts/bench_storage.py
	$(PY) scripts/bench_eval.py
	$(PY) scripts/bench_split.py

clean:
	rm -rf demo_out .pytest_cache
