"""The archive/restore launcher: a small script PostgreSQL's own OS user can run.

PostgreSQL runs archive_command and restore_command as its OS user (`postgres`; `pgserver`
for the embedded server). That user often cannot reach our interpreter (a venv or pyenv
under a 0700 home), so `pitr enable` writes a launcher into a directory it can read: its
shebang is a system Python of the same minor version, and it adds this installation's
site-packages to sys.path. It names the config file (which that user must be able to read)
and, when configured, the AWS shared-credentials file (0600, owned by that user).
"""

from __future__ import annotations

import os
import pwd
import site
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from opstower_core.config import Settings
from opstower_core.errors import OpsError

LAUNCHER_NAME = "opstower-pitr"


def launcher_dir(settings: Settings) -> Path:
    return settings.pitr.launcher_dir or settings.state_dir / "pitr"


def launcher_path(settings: Settings) -> Path:
    return launcher_dir(settings) / LAUNCHER_NAME


def archive_command(settings: Settings) -> str:
    return f"'{launcher_path(settings)}' wal-push %p"


def restore_command(settings: Settings, spool: Path | None = None, prefetch: int = 0) -> str:
    """The launcher's wal-fetch; with a spool (a scratch cluster's), segments prefetched into it."""
    base = f"'{launcher_path(settings)}' wal-fetch %f %p"
    if spool is None:
        return base
    return f"{base} --spool '{spool}' --prefetch {int(prefetch)}"


# The launcher's first lines: a segment already in the spool (prefetch.py) is moved into place
# before site dirs are added or anything of ours is imported (~0.03 s instead of seconds).
# Only a plain segment name: .history/.partial/.backup are never spooled.
_FAST_PATH = [
    'if len(sys.argv) == 8 and sys.argv[1] == "wal-fetch" and sys.argv[4] == "--spool" \\',
    '        and len(sys.argv[2]) == 24 and all(c in "0123456789ABCDEF" for c in sys.argv[2]):',
    "    try:",
    "        os.replace(os.path.join(sys.argv[5], sys.argv[2]), sys.argv[3])",
    "    except OSError:",
    "        pass  # not spooled: the full wal-fetch below",
    "    else:",
    "        sys.exit(0)",
    "",
]


def site_dirs() -> list[str]:
    """This installation's site-packages (the editable install's .pth is processed by addsitedir)."""
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> OsUser:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise OpsError(f"The OS user {name!r} does not exist", "nothing was changed",
                           "set [pitr] os_user to the user PostgreSQL runs as") from None
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid)

    @classmethod
    def current(cls) -> OsUser:
        pw = pwd.getpwuid(os.geteuid())
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid)


def server_os_user(settings: Settings, data_directory: str | None) -> OsUser:
    """The OS user the server (and its archive_command) runs as: configured, else its data dir's owner."""
    if settings.pitr.os_user:
        return OsUser.named(settings.pitr.os_user)
    if data_directory:
        try:
            uid = os.stat(data_directory).st_uid
            pw = pwd.getpwuid(uid)
            return OsUser(pw.pw_name, pw.pw_uid, pw.pw_gid)
        except (OSError, KeyError):
            pass
    return OsUser.current()


def run_as(user: OsUser, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run argv as `user` (when we are root and it is someone else), in a neutral directory."""
    extra: dict[str, object] = {}
    if os.geteuid() == 0 and user.uid != 0:
        extra = {"user": user.uid, "group": user.gid, "extra_groups": []}
    kw.setdefault("cwd", "/")
    return subprocess.run(argv, capture_output=True, text=True, **extra, **kw)  # type: ignore[call-overload]


def pick_interpreter(user: OsUser) -> str:
    """An interpreter of our minor version that `user` can execute: ours, else a system one."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, f"/usr/bin/python{want}", "/usr/bin/python3", f"/usr/local/bin/python{want}"]
    for cand in dict.fromkeys(candidates):
        if not os.path.exists(cand):
            continue
        try:
            out = run_as(user, [cand, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], timeout=20)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == want:
            return cand
    raise OpsError(f"No Python {want} that the server's OS user {user.name} can run was found",
                   "nothing was changed",
                   f"install python{want} system-wide (e.g. /usr/bin/python3) or install opstower outside a private home")


def launcher_text(interpreter: str, settings: Settings) -> str:
    lines = [
        f"#!{interpreter}",
        '"""PostgreSQL archive_command / restore_command, written by `opstower pitr enable`.',
        "",
        'Usage: opstower-pitr wal-push PATH | wal-fetch NAME DEST [--spool DIR --prefetch K] | check"""',
        "import os",
        "import sys",
        "",
        *_FAST_PATH,
        "import site",
        "",
    ]
    lines += [f"site.addsitedir({d!r})" for d in site_dirs()]
    if settings.config_path:
        lines.append(f"os.environ['OPSTOWER_CONFIG'] = {str(settings.config_path.resolve())!r}")
    if settings.pitr.credentials_file:
        lines.append(f"os.environ.setdefault('AWS_SHARED_CREDENTIALS_FILE', {str(settings.pitr.credentials_file)!r})")
    lines += ["", "from opstower_core.cli.wal import launcher_main", "", "sys.exit(launcher_main(sys.argv[1:]))", ""]
    return "\n".join(lines)


def write_launcher(settings: Settings, user: OsUser) -> Path:
    """Write the launcher (0755, atomically) into the launcher dir, reachable by `user`."""
    directory = launcher_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    text = launcher_text(pick_interpreter(user), settings)
    path = launcher_path(settings)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return path


def write_credentials(settings: Settings, user: OsUser) -> Path | None:
    """Copy the credentials we use now into [pitr] credentials_file (0600, owned by `user`), if it is missing."""
    target = settings.pitr.credentials_file
    if target is None or target.exists():
        return None
    import boto3

    creds = boto3.session.Session().get_credentials()
    if creds is None:
        raise OpsError("No AWS credentials to hand to the server's archive command", "nothing was changed",
                       f"write {target} (an AWS shared-credentials file, mode 0600, owned by {user.name})")
    frozen = creds.get_frozen_credentials()
    body = f"[default]\naws_access_key_id = {frozen.access_key}\naws_secret_access_key = {frozen.secret_key}\n"
    if frozen.token:
        body += f"aws_session_token = {frozen.token}\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
    if os.geteuid() == 0:
        os.chown(target, user.uid, user.gid)
    return target


def check_launcher(settings: Settings, user: OsUser) -> tuple[bool, str]:
    """Run `launcher check` as the server's user: it must start, read the config and reach the bucket."""
    path = launcher_path(settings)
    if not path.exists():
        return False, f"{path} does not exist (run `opstower pitr enable --apply`)"
    try:
        out = run_as(user, [str(path), "check"], timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/"})
    except OSError as exc:
        return False, f"{user.name} cannot run {path}: {exc}"
    text = (out.stdout + out.stderr).strip().splitlines()
    last = text[-1] if text else f"exit code {out.returncode}"
    return out.returncode == 0, f"as {user.name}: {last}"
