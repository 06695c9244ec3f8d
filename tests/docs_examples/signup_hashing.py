from django.contrib.auth.models import User
from django.test import override_settings

from djasynctest import AsyncTestCase


# Django's default hasher, as in a project that sets none for its tests.
@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"])
class SignUpTests(AsyncTestCase):
    async def test_sign_up(self):
        user = await User.objects.acreate_user("ann", password="correct horse")
        self.assertTrue(await user.acheck_password("correct horse"))


# settings.py (the fix: a fast hasher in the test settings)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
