"""Checks the web server makes before it serves anything (backend/wsgi.py, backend/asgi.py)."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def refuse_unsafe_settings() -> None:
    """Refuse to serve with DEBUG off on the published development SECRET_KEY: sessions and tokens could be forged."""
    if not settings.DEBUG and settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: the web server will not start with DEBUG off on the development key. Set the "
            "SECRET_KEY environment variable to a long random value (python -c \"import secrets; print(secrets.token_urlsafe(50))\"), "
            "or set DEBUG=true for development."
        )
