import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
application = get_asgi_application()

from backend.production import refuse_unsafe_settings  # noqa: E402  (needs the settings loaded above)

refuse_unsafe_settings()
