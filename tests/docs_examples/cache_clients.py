from djasynctest import AsyncTestCase, at_loop_close
from tests.docs_examples.cache import add_to_cart, client


class CartTests(AsyncTestCase):
    loop_scope = "session"

    @classmethod
    async def asyncSetUpClass(cls):
        # Close the connections when the loop closes, after the last test.
        at_loop_close(client.aclose)

    async def asyncTearDown(self):
        await client.delete("cart:1")

    async def test_add_to_cart(self):
        self.assertEqual(await add_to_cart(1, "pen"), 1)
        self.assertEqual(await add_to_cart(1, "pen", 2), 3)


class CheckoutTests(AsyncTestCase):
    loop_scope = "session"

    async def test_empty_cart(self):
        # The same client, on the same loop, in another class (or module).
        self.assertEqual(await client.hgetall("cart:2"), {})
