"""The loader fed by another read (issue 18: verification in the load's read): a tool that fails
stops that read, and its own error is the one reported."""

from __future__ import annotations

import threading

import pytest

from opstower_core.config import Target
from opstower_core.errors import OpsError
from opstower_core.events import Reporter
from opstower_core.pg import load


def test_a_failed_tool_stops_the_read_feeding_it():
    failed = threading.Event()
    fed: list = []

    def reader(put):
        chunk = memoryview(b"x" * 65536)
        try:
            for _ in range(200_000):  # ~13 GB: only a stop ends it in time
                put(chunk)
                fed.append(1)
        except load.ToolStopped:
            fed.append("stopped")
            raise

    def stream(stdin):
        with load._PipeWriter(stdin, failed) as put:
            reader(put)

    tool = ["sh", "-c", "head -c 100000 > /dev/null; echo 'error: the tool broke'; exit 3"]
    with pytest.raises(OpsError) as err:
        load.run_tool(tool, Target("t", "t"), Reporter(None), "restore", stream, failed=failed)
    assert "the tool broke" in err.value.what and "exit 3" in err.value.what
    assert fed[-1] == "stopped" and len(fed) < 200_000
