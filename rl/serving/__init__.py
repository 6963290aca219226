"""Serving picks: ask the live model (or an A/B candidate) through the engine, parse the answer, store it."""
