"""The plugin's live server fixture, ``async_live_server``, in throwaway pytest projects
(see tests/test_pytest_plugin.py)."""

from __future__ import annotations

import pytest

from tests.test_pytest_plugin import make_project, run

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return make_project(pytester, monkeypatch)


LIVE = """
import json

import httpx
import pytest
from django.contrib.auth.models import User
from websockets.asyncio.client import connect

from tests.testapp.models import Item


async def test_requests_and_the_test_share_its_transaction(async_live_server):
    await Item.objects.acreate(name="pen")
    async with httpx.AsyncClient(base_url=async_live_server.url) as http:
        response = await http.get("/items/")
        assert response.json() == {"items": ["pen"]}
        css = await http.get("/static/testapp/site.css")
        assert css.text == "body { color: teal; }\\n"


async def test_rolled_back(async_live_server):
    assert await Item.objects.acount() == 0


async def test_websocket_of_the_projects_application(async_live_server, async_client):
    user = await User.objects.acreate(username="ann")
    await Item.objects.acreate(name="pen")
    await async_client.aforce_login(user)
    cookie = f"sessionid={async_client.cookies['sessionid'].value}"
    url = async_live_server.url.replace("http", "ws") + "/ws/items/"
    async with connect(url, additional_headers={"Cookie": cookie}) as socket:
        assert json.loads(await socket.recv()) == {"user": "ann", "items": 1}


def test_pytest_djangos_live_server_unchanged(live_server):
    assert httpx.get(live_server.url + "/items/").json() == {"items": []}
"""


def test_a_server_for_each_test(project: pytest.Pytester) -> None:
    project.makepyfile(test_live=LIVE)
    run(project, "-p", "no:randomly").assert_outcomes(passed=4)


def test_one_server_for_the_session(project: pytest.Pytester) -> None:
    """On the session's loop, serving whichever test runs, in its transaction."""
    project.makeini(
        """
        [pytest]
        addopts = -p djasynctest.pytest -p no:cacheprovider -p no:asyncio -p no:randomly
        filterwarnings = error
        djasynctest_loop_scope = session
        djasynctest_live_server_scope = session
        """
    )
    project.makepyfile(
        test_live=LIVE,
        test_port="""
        import httpx

        from tests.testapp.models import Item

        urls = set()


        async def test_first(async_live_server):
            urls.add(async_live_server.url)
            await Item.objects.acreate(name="ink")
            async with httpx.AsyncClient(base_url=async_live_server.url) as http:
                assert (await http.get("/items/")).json() == {"items": ["ink"]}


        async def test_same_server(async_live_server):
            assert urls == {async_live_server.url}
            async with httpx.AsyncClient(base_url=async_live_server.url) as http:
                assert (await http.get("/items/")).json() == {"items": []}
        """,
    )
    run(project).assert_outcomes(passed=6)


def test_a_test_on_another_loop_is_refused(project: pytest.Pytester) -> None:
    project.makeini(
        """
        [pytest]
        addopts = -p djasynctest.pytest -p no:cacheprovider -p no:asyncio
        filterwarnings = error
        djasynctest_live_server_scope = module
        """
    )
    project.makepyfile(
        test_refused="""
        async def test_own_loop(async_live_server):
            pass
        """
    )
    result = run(project)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*async_live_server serves on the event loop of its scope (module), and "
            "test_refused.py::test_own_loop runs on another, which would never serve its "
            "requests. Give the test a loop_scope of module or wider*"
        ]
    )


def test_a_wrong_scope_stops_pytest(project: pytest.Pytester) -> None:
    project.makeini(
        """
        [pytest]
        addopts = -p djasynctest.pytest -p no:cacheprovider -p no:asyncio
        djasynctest_live_server_scope = forever
        """
    )
    project.makepyfile(test_x="async def test_x(async_live_server): pass")
    result = run(project)
    result.stderr.fnmatch_lines(
        ["*The ini option djasynctest_live_server_scope is 'forever'; it must be*"]
    )
    assert result.ret != 0


def test_on_the_loops_of_pytest_asyncio(project: pytest.Pytester) -> None:
    project.makeini(
        """
        [pytest]
        addopts = -p djasynctest.pytest -p no:cacheprovider -p no:randomly
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = session
        asyncio_default_test_loop_scope = session
        djasynctest_live_server_scope = session
        filterwarnings = error
        """
    )
    project.makepyfile(
        test_asyncio="""
        import httpx
        from tests.testapp.models import Item


        async def test_rows_seen(async_live_server):
            await Item.objects.acreate(name="pen")
            async with httpx.AsyncClient(base_url=async_live_server.url) as http:
                assert (await http.get("/items/")).json() == {"items": ["pen"]}


        async def test_rolled_back(async_live_server):
            async with httpx.AsyncClient(base_url=async_live_server.url) as http:
                assert (await http.get("/items/")).json() == {"items": []}
        """
    )
    run(project).assert_outcomes(passed=2)
