"""Prometheus metrics of the feedback side (served at /metrics, backend/metrics.py)."""
from prometheus_client import Counter

RATINGS_STORED = Counter("ccrl_ratings_stored_total", "Ratings stored (created or changed; counted once committed), by value.", ["value"])
