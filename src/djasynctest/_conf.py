"""Options: class attributes, with defaults from the ``DJASYNCTEST`` setting, checked in one place.

A test class sets an option as a class attribute (``loop_scope = "class"``);
a project sets its default in settings::

    DJASYNCTEST = {"BLOCKING_THRESHOLD": 0.2, "TIMEOUT": 30}

The class attribute wins. Every value is checked when the class is created,
and again when the setting is read, so that a typo fails fast with the fix.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

__unittest = True

LoopScope = Literal["test", "class", "module", "session"]
LOOP_SCOPES = ("test", "class", "module", "session")
BlockingMode = Literal["fail", "warn"]
LEAK_KINDS = ("tasks", "threads", "connections")

# option name on the class -> key in settings.DJASYNCTEST, default
OPTIONS: dict[str, tuple[str, Any]] = {
    "loop_scope": ("LOOP_SCOPE", "test"),
    "loop_debug": ("LOOP_DEBUG", False),
    "loop_factory": ("LOOP_FACTORY", None),
    "blocking_threshold": ("BLOCKING_THRESHOLD", 0.1),
    "blocking_mode": ("BLOCKING_MODE", "fail"),
    "blocking_allowed": ("BLOCKING_ALLOWED", ()),
    "timeout": ("TIMEOUT", None),
    "task_creation_stacks": ("TASK_CREATION_STACKS", False),
    "leak_checks": ("LEAK_CHECKS", LEAK_KINDS),
    "cpu_affinity": ("CPU_AFFINITY", True),
}
_KEYS = frozenset(key for key, _ in OPTIONS.values())
_UNSET = object()


@dataclass(frozen=True)
class Options:
    loop_scope: LoopScope
    loop_debug: bool
    loop_factory: Callable[[], Any] | None
    blocking_threshold: float | None
    blocking_mode: BlockingMode
    blocking_allowed: tuple[str, ...]
    timeout: float | None
    task_creation_stacks: bool
    leak_checks: frozenset[str]
    cpu_affinity: bool


def check_option(name: str, value: Any, where: str) -> Any:
    """``value`` of the option ``name`` if it is one the option takes (as the option
    keeps it); else a ``TypeError`` that names ``where`` it was set and what it takes."""

    def fail(expected: str) -> NoReturn:
        msg = f"{where} is {value!r}; it must be {expected}."
        raise TypeError(msg)

    if name == "loop_scope" and value not in LOOP_SCOPES:
        fail(
            "'test' (a new event loop for each test), 'class' (one for each class), "
            "'module' (one for each test module) or 'session' (one for the whole run)"
        )
    if name == "loop_factory":
        return _loop_factory(value, fail)
    flags = ("loop_debug", "task_creation_stacks", "cpu_affinity")
    if name in flags and not isinstance(value, bool):
        fail("True or False")
    if name in ("blocking_threshold", "timeout") and not _seconds_or_none(value):
        fail("a number of seconds greater than 0, or None to turn it off")
    if name == "blocking_mode" and value not in ("fail", "warn"):
        fail("'fail' (the test fails) or 'warn' (a BlockingWarning)")
    if name == "blocking_allowed":
        if not _strings(value, lambda item: bool(item) and "/" not in item):
            fail(
                "a list of dotted names of modules or functions whose blocking calls are "
                "allowed, such as ['myapp.legacy', 'myapp.utils.render_pdf']"
            )
        return tuple(value)
    if name == "leak_checks":
        if not _strings(value, lambda item: item in LEAK_KINDS):
            fail(f"a list of the leaks to report, some of {list(LEAK_KINDS)}")
        return frozenset(value)
    return value


def _loop_factory(value: Any, fail: Callable[[str], NoReturn]) -> Any:
    if isinstance(value, str):
        from django.utils.module_loading import import_string

        try:
            value = import_string(value)
        except ImportError:
            fail("a callable that makes an event loop, or the dotted path of one")
    if value is not None and not callable(value):
        fail("a callable that makes an event loop (such as uvloop.new_event_loop), or None")
    return value


def _strings(value: Any, valid: Any) -> bool:
    return isinstance(value, list | tuple | set | frozenset) and all(
        isinstance(item, str) and valid(item) for item in value
    )


def _seconds_or_none(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def check_class(cls: type) -> None:
    """Check the options a test class sets, and catch misspelt ones (class creation)."""
    for name, value in vars(cls).items():
        if name in OPTIONS:
            if value is not INHERITED:
                check_option(name, value, f"{cls.__qualname__}.{name}")
        elif not name.startswith("_") and (close := close_option(name)):
            msg = f"{cls.__qualname__}.{name} is not a djasynctest option; did you mean {close}?"
            raise TypeError(msg)


def close_option(name: str, names: Iterable[str] = OPTIONS) -> str | None:
    """The one of ``names`` that ``name`` is most likely a misspelling of, if any."""
    matches = difflib.get_close_matches(name, names, n=1, cutoff=0.85)
    return matches[0] if matches else None


def settings_configured() -> bool:
    """Whether Django's settings are configured, or named (and loaded on first use)."""
    from django.conf import ENVIRONMENT_VARIABLE, settings

    return settings.configured or bool(os.environ.get(ENVIRONMENT_VARIABLE))


def options(cls: type) -> Options:
    """The options in force for ``cls``: its attributes, else the setting, else the default."""
    from django.conf import settings

    if not settings_configured():
        from django.core.exceptions import ImproperlyConfigured

        msg = (
            "djasynctest runs tests with Django's settings, and none are configured: set the "
            "environment variable DJANGO_SETTINGS_MODULE to the project's settings module, as "
            "in DJANGO_SETTINGS_MODULE=mysite.settings python -m unittest."
        )
        raise ImproperlyConfigured(msg)
    configured = getattr(settings, "DJASYNCTEST", {})
    if not isinstance(configured, Mapping):
        msg = (
            f"settings.DJASYNCTEST is {configured!r}; it must be a dict of options, such as "
            'DJASYNCTEST = {"LOOP_SCOPE": "session", "TIMEOUT": 30}.'
        )
        raise TypeError(msg)
    unknown = sorted(set(configured) - _KEYS, key=repr)
    if unknown:
        keys = sorted(_KEYS)
        msg = (
            f"settings.DJASYNCTEST has unknown keys {unknown}; "
            f"{_did_you_mean(unknown, keys)}the keys are {keys}."
        )
        raise TypeError(msg)
    values: dict[str, Any] = {}
    for name, (key, default) in OPTIONS.items():
        value = getattr(cls, name, _UNSET)
        if value is _UNSET or value is INHERITED:
            where = f"settings.DJASYNCTEST[{key!r}]"
            value = check_option(name, configured.get(key, default), where)
        values[name] = value
    return Options(**values)


def _did_you_mean(unknown: list[Any], keys: list[str]) -> str:
    """The hint for the misspelt keys among ``unknown`` (in any case): "did you mean ...? "."""
    close = {
        key: match
        for key in unknown
        if isinstance(key, str) and (match := close_option(key.upper(), keys))
    }
    if not close:
        return ""
    if len(unknown) == 1:
        return f"did you mean {next(iter(close.values()))!r}? "
    return f"did you mean {', '.join(f'{match!r} for {key!r}' for key, match in close.items())}? "


class _Inherited:
    """The value of an option the class does not set: the setting's, or the default."""

    def __repr__(self) -> str:
        return "<from settings.DJASYNCTEST, else the default>"


INHERITED: Any = _Inherited()
