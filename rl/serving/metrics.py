"""Prometheus metrics of serving (served at /metrics, backend/metrics.py)."""
from prometheus_client import Counter, Histogram

PICKS_SERVED = Counter("ccrl_picks_served_total", "Picks served and stored, by model version and A/B arm.", ["model_version", "arm"])
PICK_SECONDS = Histogram("ccrl_pick_seconds", "Seconds the serving engine took to answer a pick, by A/B arm.", ["arm"],
                         buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60))
SERVING_ERRORS = Counter("ccrl_serving_errors_total", "Picks not served, by the error the API answered.", ["code"])
