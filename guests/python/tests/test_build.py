"""Tests of `scripts/build-python-handler.sh`: refusals in one line, no traceback; the world follows the module.

They run the real build, with the componentize-py the script installs into
`guests/python/.tools` on its first run; without it they are skipped rather
than download it (`scripts/test.sh` builds Python guests before it runs this
suite, so there they always run).
"""

import os
import pathlib
import subprocess
import tempfile
import unittest

SDK = pathlib.Path(__file__).resolve().parent.parent
ROOT = SDK.parent.parent
SCRIPT = ROOT / "scripts" / "build-python-handler.sh"
TOOLS = SDK / ".tools"


def tools_installed() -> bool:
    stamp = TOOLS / "installed.txt"
    return stamp.is_file() and stamp.read_bytes() == (SDK / "requirements-build.txt").read_bytes()


@unittest.skipUnless(tools_installed(), "componentize-py is not installed yet: run scripts/build-python-handler.sh once")
class BuildRefusalTest(unittest.TestCase):
    def build(self, source: str) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            app = pathlib.Path(tmp)
            (app / "handler.py").write_text(source)
            env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
            return subprocess.run(
                [str(SCRIPT), str(app), str(app / "out.wasm")],
                capture_output=True,
                text=True,
                env=env,
            )

    def test_an_async_handler_fails_the_build_with_one_line(self):
        """An `async def` handler fails the build with the SDK's one-line error alone on stderr."""
        result = self.build("import wharf\n\n\n@wharf.handler\nasync def handle(msg):\n    pass\n")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(
            result.stderr,
            "error: handler.py: handle is an async def; Wharf handlers are plain functions\n",
        )

    def test_the_world_follows_what_the_module_registers(self):
        """A batch handler the module's text does not reveal is built again for `batch-handler` after the first guess."""
        result = self.build(
            "import wharf\n\nregister = getattr(wharf, 'batch_' + 'handler')\n\n\n@register\n"
            "def handle(batch):\n    return [None] * len(batch)\n"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(", world batch-handler)", result.stderr.splitlines()[-1])

    def test_two_handlers_fail_the_build_with_one_line(self):
        """A module that registers a handler and a batch handler fails the build, naming both."""
        result = self.build(
            "import wharf\n\n\n@wharf.handler\ndef handle(msg):\n    pass\n\n\n"
            "@wharf.batch_handler\ndef handle_batch(batch):\n    return []\n"
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(
            result.stderr,
            "error: handler.py: handle_batch: a handler is already registered (handle, with @wharf.handler); "
            "a component has exactly one, made by @wharf.handler or @wharf.batch_handler\n",
        )

    def test_a_module_without_a_handler_fails_the_build_with_one_line(self):
        """A module that registers no handler fails the build with one line saying what to do."""
        result = self.build("def handle(msg):\n    pass\n")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(
            result.stderr,
            "error: module handler registers no handler: decorate its handler function with @wharf.handler "
            "(or @wharf.batch_handler)\n",
        )


if __name__ == "__main__":
    unittest.main()
