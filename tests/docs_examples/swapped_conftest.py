# conftest.py, next to the tests: pytest imports it before any test module.
import django.test

import djasynctest

django.test.TransactionTestCase = djasynctest.AsyncTransactionTestCase
django.test.TestCase = djasynctest.AsyncTestCase
