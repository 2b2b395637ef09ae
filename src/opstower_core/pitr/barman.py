"""barman-cloud, called with our S3 settings: the destination URL, options and environment.

Secrets never go into argv: barman-cloud's boto3 reads them from the environment or from
the shared-credentials file named by AWS_SHARED_CREDENTIALS_FILE ([pitr] credentials_file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

from opstower_core.config import Settings
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken


def require_s3(settings: Settings) -> None:
    if not settings.s3.enabled:
        raise OpsError("Point-in-time recovery needs an S3 bucket", "nothing was changed",
                       "set [s3] bucket (and endpoint_url for an S3-compatible store) in the config file")


def destination_url(settings: Settings) -> str:
    """barman-cloud's destination/source URL: s3://BUCKET/<s3 prefix><pitr path>."""
    require_s3(settings)
    return f"s3://{settings.s3.bucket}/{settings.s3.prefix}{settings.pitr.path}"


def key_root(settings: Settings) -> str:
    """The object key prefix of this server's backups and WAL ("…/<server_name>/").

    An empty path is barman-cloud's bucket root (a CloudNativePG destinationPath of
    "s3://bucket/"): its keys start with the server name, not with "/".
    """
    parts = [settings.s3.prefix.strip("/"), settings.pitr.path.strip("/"), settings.pitr.server_name]
    return "/".join(p for p in parts if p) + "/"


def cloud_options(settings: Settings) -> list[str]:
    """Options every barman-cloud command takes: provider, endpoint (never credentials)."""
    opts = ["--cloud-provider", "aws-s3"]
    if settings.s3.endpoint_url:
        opts += ["--endpoint-url", settings.s3.endpoint_url]
    return opts


def upload_options(settings: Settings) -> list[str]:
    """Server-side encryption options for the commands that write (backup, wal-archive)."""
    opts: list[str] = []
    if settings.s3.sse:
        opts += ["-e", settings.s3.sse]
        if settings.s3.sse == "aws:kms" and settings.s3.sse_kms_key_id:
            opts += ["--sse-kms-key-id", settings.s3.sse_kms_key_id]
    return opts


def cloud_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a barman-cloud run: credentials by file or inherited AWS_* variables."""
    env = dict(os.environ if base is None else base)
    if settings.pitr.credentials_file:
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(settings.pitr.credentials_file)
    if settings.s3.region:
        env.setdefault("AWS_DEFAULT_REGION", settings.s3.region)
    # S3-compatible stores reject the checksums boto3 >= 1.36 adds by default.
    env.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    env.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    return env


def client_argv(module: str, args: Sequence[str]) -> list[str]:
    """argv running barman.clients.<module> with this interpreter (its scripts' shebangs may be unreachable)."""
    return [sys.executable, "-m", f"barman.clients.{module}", *args]


def run_client(settings: Settings, module: str, args: Sequence[str], *, timeout: float | None = None,
               on_line: Callable[[str], None] | None = None,
               cancel: CancelToken | None = None) -> subprocess.CompletedProcess[str]:
    """Run a barman-cloud client; stdout captured, stderr lines passed to `on_line` as they come.

    On `cancel` the client gets SIGINT: barman-cloud-backup then marks its backup FAILED in
    the bucket and exits 1 (a SIGKILL would leave it listed as STARTED).
    """
    argv = client_argv(module, args)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cloud_env(settings), stdin=subprocess.DEVNULL)
    err_lines: list[str] = []
    if cancel is not None:
        def watch() -> None:
            while proc.poll() is None:
                if cancel.wait(0.2):
                    proc.send_signal(signal.SIGINT)
                    return

        threading.Thread(target=watch, daemon=True).start()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            if on_line:
                on_line(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        out = proc.stdout.read() if proc.stdout else ""
        proc.wait(timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    reader.join(5)
    return subprocess.CompletedProcess(argv, proc.returncode, out, "".join(err_lines))


def call_in_process(settings: Settings, main: Callable[[list[str]], object], args: list[str]) -> int:
    """Run a barman-cloud client's main() here (the archive command's hot path: no second interpreter)."""
    os.environ.update(cloud_env(settings))
    try:
        main(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def last_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "rror" in ln]
    return (errors or lines or [f"exit code {proc.returncode}"])[-1][:400]
