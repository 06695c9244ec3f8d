from djasynctest import AsyncTestCase


class ReportTests(AsyncTestCase):
    blocking_threshold = 0.5  # the PDF export is known to be slow


# settings.py
DJASYNCTEST = {"BLOCKING_THRESHOLD": 0.2, "BLOCKING_MODE": "warn"}
