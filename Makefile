# `make demo`: set up, seed the demo and run the main job.  `make test`: set up and run every test.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test lint-imports test-sqlite test-postgres serve serve-prod

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

# The import contracts of .importlinter (rl's stages as layers), every test on SQLite, then the tests that touch the
# database again on PostgreSQL (Debian's, on loopback).
test: setup lint-imports test-sqlite test-postgres

lint-imports:
	.venv/bin/lint-imports --no-logo

test-sqlite:
	$(PY) -m pytest

test-postgres:
	url=$$(bash scripts/postgres.sh) && DATABASE_URL="$$url" $(PY) -m pytest --database-tests-only

serve: setup
	$(PY) manage.py migrate --noinput
	DEBUG=true $(PY) manage.py runserver 127.0.0.1:8000

# Production: gunicorn (deploy/gunicorn.conf.py: WEB_BIND, WEB_WORKERS, WEB_THREADS, WEB_TIMEOUT, ...) with whitenoise
# serving the collected static files. Needs SECRET_KEY (and the rest of deploy/production.env.example behind TLS).
serve-prod: setup
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	.venv/bin/gunicorn -c deploy/gunicorn.conf.py backend.wsgi:application
