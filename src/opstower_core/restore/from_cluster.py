"""Copy one database out of a recovered (point-in-time) cluster into the live server, under a new name."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from opstower_core.config import Settings, Target
from opstower_core.events import Event
from opstower_core.pitr import ScratchCluster, copy_database


@dataclass(frozen=True)
class CopyOutResult:
    database: str  # the new database on the live server
    proof: str  # "N tables, M rows, digests equal, inventory equal (K objects); not compared: …"
    seconds: float


def copy_from_cluster(settings: Settings, cluster: ScratchCluster, dbname: str, live: Target, name: str | None,
                      on_event: Callable[[Event], None] = lambda e: None) -> CopyOutResult:
    """Copy `dbname` from the recovered cluster into a new database `name` on `live`; the cluster is untouched."""
    started = time.monotonic()
    proof: list[str] = []

    def relay(e: Event) -> None:
        detail = getattr(e, "detail", None)
        if detail and getattr(e, "step", None) == "copy_out":
            proof.append(detail)
        on_event(e)

    database = copy_database(settings, cluster, dbname, live, name, relay)
    return CopyOutResult(database, proof[-1] if proof else "", time.monotonic() - started)
