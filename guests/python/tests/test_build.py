"""Tests of `scripts/build-python-handler.sh` refusing a handler: one line, no traceback.

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

    def test_a_module_without_a_handler_fails_the_build_with_one_line(self):
        """A module that registers no handler fails the build with one line saying what to do."""
        result = self.build("def handle(msg):\n    pass\n")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(
            result.stderr,
            "error: module handler registers no handler: decorate its handler function with @wharf.handler\n",
        )


if __name__ == "__main__":
    unittest.main()
