# myproject/testing.py, named in the test settings: TEST_RUNNER = "myproject.testing.Runner"
import django.test
from django.test.runner import DiscoverRunner

import djasynctest

# manage.py test imports the runner before any test module.
django.test.TransactionTestCase = djasynctest.AsyncTransactionTestCase
django.test.TestCase = djasynctest.AsyncTestCase


class Runner(DiscoverRunner):
    pass
