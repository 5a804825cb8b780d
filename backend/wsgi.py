"""WSGI entry point for gunicorn: ``gunicorn backend.wsgi:app``.

Settings are read here, when the server process starts, not at import of the other modules.
"""

from backend import logs
from backend.app import create_app
from backend.settings import Settings

settings = Settings.from_env()
logs.configure(settings.log_level)
app = create_app(settings)
