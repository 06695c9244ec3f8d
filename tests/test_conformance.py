"""How the conformance scripts (tests/conformance) read a runner's output and compare runs.

The output is unittest's own, at verbosity 2, as Django's runner writes it (also under
--parallel, where the main process writes each worker's results the same way).
"""

from __future__ import annotations

import io
import unittest

import pytest

from tests.conformance.outcomes import UNREAD, compare, runner_outcomes


def _run(stream: io.StringIO, *cases: type[unittest.TestCase]) -> str:
    """What Django's runner writes to stderr for these cases at verbosity 2."""
    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(case) for case in cases)
    unittest.TextTestRunner(stream=stream, verbosity=2).run(suite)
    return stream.getvalue()


def test_runner_outcomes_reads_every_kind_of_result_line() -> None:
    stream = io.StringIO()

    class Lines(unittest.TestCase):
        def test_ok(self) -> None:
            pass

        def test_docstring(self) -> None:
            """Its first line ... has dots ... ok and parentheses (too)."""
            self.fail()

        def test_docstring_naming_a_hook(self) -> None:
            """Settings are overridden within setUpClass (#21281)."""

        def test_subtest_with_docstring(self) -> None:
            """The time to process invalid inputs is not quadratic."""
            with self.subTest("varying depth, varying length"):
                self.fail("3.24 not less than or equal to 2")

        def test_subtest_with_message_and_params(self) -> None:
            with self.subTest("label", value=3):
                raise ValueError

        def test_subtest_with_params_then_error(self) -> None:
            for value in range(3):
                with self.subTest(value=value):
                    self.assertEqual(value, 0)
            raise ValueError

        def test_subtests_pass(self) -> None:
            with self.subTest(value=1):
                pass

        def test_writes_a_line_of_its_own(self) -> None:
            stream.write("a line the test wrote to stderr\n")

        @unittest.skip("a reason\nover two lines ... ok")
        def test_skipped(self) -> None:
            pass

        @unittest.expectedFailure
        def test_expected_failure(self) -> None:
            self.fail()

        @unittest.expectedFailure
        def test_unexpected_success(self) -> None:
            pass

    class FailingSetUpClass(unittest.TestCase):
        @classmethod
        def setUpClass(cls) -> None:
            raise RuntimeError("test_ok (a.B.test_ok) ... ok")

        def test_never_runs(self) -> None:
            pass

    output = _run(stream, Lines, FailingSetUpClass)
    prefix = f"{__name__}.test_runner_outcomes_reads_every_kind_of_result_line.<locals>"

    found = runner_outcomes(output, ["runtests.py"])

    lines = f"{prefix}.Lines"
    assert found == {
        f"test_docstring ({lines}.test_docstring)": "FAIL",
        f"test_docstring_naming_a_hook ({lines}.test_docstring_naming_a_hook)": "ok",
        f"test_expected_failure ({lines}.test_expected_failure)": "expected failure",
        f"test_ok ({lines}.test_ok)": "ok",
        f"test_skipped ({lines}.test_skipped)": "skipped",
        f"test_subtest_with_docstring ({lines}.test_subtest_with_docstring)": "FAIL",
        f"test_subtest_with_message_and_params ({lines}.test_subtest_with_message_and_params)": (
            "ERROR"
        ),
        f"test_subtest_with_params_then_error ({lines}.test_subtest_with_params_then_error)": (
            "FAIL"
        ),
        f"test_subtests_pass ({lines}.test_subtests_pass)": "ok",
        f"test_unexpected_success ({lines}.test_unexpected_success)": "unexpected success",
        f"test_writes_a_line_of_its_own ({lines}.test_writes_a_line_of_its_own)": "ok",
        f"setUpClass ({prefix}.FailingSetUpClass)": "ERROR",
    }


def test_runner_outcomes_reads_past_what_a_test_wrote_without_a_newline() -> None:
    stream = io.StringIO()

    class Lines(unittest.TestCase):
        def test_writes_half_a_line(self) -> None:
            stream.write("half a line")

        def test_ok(self) -> None:
            pass

        def test_two(self) -> None:
            pass

    output = _run(stream, Lines)
    lines = f"{__name__}.{Lines.__qualname__}"
    assert f"test_writes_half_a_line ({lines}.test_writes_half_a_line) ... half a lineok" in output
    # A worker process (under --parallel) writes while the main one writes the results.
    assert output.count("\ntest_two (") == 1
    output = output.replace("\ntest_two (", "\nhalf a linetest_two (")

    assert runner_outcomes(output, ["runtests.py"]) == {
        f"test_ok ({lines}.test_ok)": "ok",
        f"test_two ({lines}.test_two)": "ok",
        f"test_writes_half_a_line ({lines}.test_writes_half_a_line)": UNREAD,
    }


def test_runner_outcomes_reads_coloured_outcomes() -> None:
    class Lines(unittest.TestCase):
        def test_ok(self) -> None:
            pass

        def test_fails(self) -> None:
            self.fail()

    output = _run(io.StringIO(), Lines)
    lines = f"{__name__}.{Lines.__qualname__}"
    # As Python 3.14 writes them with FORCE_COLOR set.
    coloured = output.replace(" ... ok\n", " ... \x1b[32mok\x1b[0m\n").replace(
        " ... FAIL\n", " ... \x1b[31mFAIL\x1b[0m\n"
    )
    assert coloured != output

    assert runner_outcomes(coloured, ["runtests.py"]) == {
        f"test_fails ({lines}.test_fails)": "FAIL",
        f"test_ok ({lines}.test_ok)": "ok",
    }


def test_runner_outcomes_exits_when_a_test_that_ran_has_no_line() -> None:
    class Lines(unittest.TestCase):
        def test_one(self) -> None:
            pass

        def test_two(self) -> None:
            pass

    output = _run(io.StringIO(), Lines)
    output = "\n".join(line for line in output.split("\n") if not line.startswith("test_two"))

    with pytest.raises(SystemExit) as exiting:
        runner_outcomes(output, ["runtests.py", "basic"])

    assert exiting.value.code == (
        "Could not find every test's line in the output of runtests.py basic (1 found):\n" + output
    )


PLAIN = {"test_a (app.A.test_a)": "ok", "test_b (app.A.test_b)": "ok"}


def test_compare_counts_a_test_that_does_not_pass_swapped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    swapped = {"test_a (app.A.test_a)": "ok", "test_b (app.A.test_b)": "FAIL"}

    assert not compare(PLAIN, swapped, {}, "app")

    assert capsys.readouterr().out == (
        "app:\n"
        "  as published:          2 passed of 2\n"
        "  with djasynctest's:    1 passed of 2\n"
        "  allowed to differ:     0\n"
        "  BROKEN: test_b (app.A.test_b): FAIL\n"
    )


def test_compare_reports_a_self_timed_test_that_fails_swapped_without_counting_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    swapped = {"test_a (app.A.test_a)": "ok", "test_b (app.A.test_b)": "FAIL"}
    self_timed = {"test_b (app.A.test_b)": "must take less than a second"}

    assert compare(PLAIN, swapped, {}, "app", self_timed=self_timed)

    assert capsys.readouterr().out == (
        "app:\n"
        "  as published:          2 passed of 2\n"
        "  with djasynctest's:    1 passed of 2\n"
        "  allowed to differ:     0\n"
        "  not counted: test_b (app.A.test_b): FAIL, as the machine decides: must take less "
        "than a second\n"
    )


def test_compare_counts_an_outcome_that_could_not_be_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = {**PLAIN, "test_c (app.A.test_c)": UNREAD}
    swapped = {**PLAIN, "test_b (app.A.test_b)": UNREAD, "test_c (app.A.test_c)": "ok"}

    assert not compare(plain, swapped, {}, "app")

    assert capsys.readouterr().out == (
        "app:\n"
        "  as published:          2 passed of 3\n"
        "  with djasynctest's:    2 passed of 3\n"
        "  allowed to differ:     0\n"
        "  BROKEN: test_c (app.A.test_c): its outcome could not be read as published\n"
        "  BROKEN: test_b (app.A.test_b): unread\n"
    )
