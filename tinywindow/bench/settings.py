"""Settings of the API benchmark's web server: production's, plus the bench's URLconf.

Only `manage.py bench` (scenario `api`) starts gunicorn with DJANGO_SETTINGS_MODULE pointing
here; production never imports this module, so the bare view it adds is never exposed.
"""

from tinywindow.settings import *  # noqa: F403 - the production settings, unchanged

ROOT_URLCONF = "tinywindow.bench.urls"
