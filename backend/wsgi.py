import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
application = get_wsgi_application()

from backend.production import refuse_unsafe_settings  # noqa: E402  (needs the settings loaded above)

refuse_unsafe_settings()
