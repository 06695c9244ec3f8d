# Lets `python -m unittest discover` import models at module level: importing
# djasynctest first sets Django up from DJANGO_SETTINGS_MODULE.
import djasynctest  # noqa: F401
