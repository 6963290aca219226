# `make demo`: set up, seed the demo and run the main job.  `make test`: set up and run every test.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test serve

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	$(PY) -m pytest

serve: setup
	$(PY) manage.py migrate --noinput
	DEBUG=true $(PY) manage.py runserver 127.0.0.1:8000
