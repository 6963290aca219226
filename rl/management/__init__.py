"""The learning side's management commands."""
