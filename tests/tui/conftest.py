"""Console tests share the pytest process with CLI tests: the engine's face (advice) is process-wide."""

from __future__ import annotations

import pytest

from opstower_core import advice


@pytest.fixture(autouse=True)
def cli_face_after_each_test():
    # The app sets the console face on mount and puts the previous one back on unmount; a pilot app
    # torn down abnormally (a failed assertion mid-run) may not unmount, and the CLI tests after it
    # must still hear the CLI.
    yield
    advice.set_face("cli")
