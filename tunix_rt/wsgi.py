"""WSGI entry point (gunicorn tunix_rt.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunix_rt.settings")

application = get_wsgi_application()
