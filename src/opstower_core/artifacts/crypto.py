"""Encryption at rest in the age format (https://age-encryption.org), through pyrage.

The compressed stream is encrypted in the same single pass, in constant memory, to one or
more public recipients (X25519 `age1…` keys or SSH public keys). Only the identity
(private key) can read a backup back, so a compromised backup host cannot read old
backups. A standard `age -d -i KEY` decrypts our artifacts without this tool.

Passphrase mode: the identity file itself is passphrase-protected (as `age -p` writes it);
the passphrase comes from a file or a command, never from argv or the config file.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyrage

from opstower_core.config import Settings
from opstower_core.errors import ConfigError, OpsError

AGE_MAGIC = b"age-encryption.org/v1"


@dataclass(frozen=True)
class EncryptionSettings:
    recipients: tuple[str, ...] = ()
    identity_file: Path | None = None
    passphrase_file: Path | None = None
    passphrase_command: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.recipients)

    @property
    def can_decrypt(self) -> bool:
        return self.identity_file is not None


def encryption_settings(settings: Settings, env: Mapping[str, str] | None = None) -> EncryptionSettings:
    """`[encryption]` from the config file; OPSTOWER_AGE_RECIPIENTS / OPSTOWER_AGE_IDENTITY win."""
    env = os.environ if env is None else env
    raw = settings.section("encryption")
    for key in raw:
        if key not in ("recipients", "identity_file", "passphrase_file", "passphrase_command"):
            raise ConfigError(f"Config encryption.{key} is not a known key", "",
                              "use recipients, identity_file, passphrase_file or passphrase_command")
    if "passphrase" in raw:
        raise ConfigError("Config encryption.passphrase is not allowed", "", "use passphrase_file or passphrase_command")
    recipients: list[str] = []
    if env.get("OPSTOWER_AGE_RECIPIENTS"):
        recipients = [r.strip() for r in env["OPSTOWER_AGE_RECIPIENTS"].split(",") if r.strip()]
    elif raw.get("recipients"):
        value = raw["recipients"]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("Config encryption.recipients is not a list of public keys", "",
                              'write recipients = ["age1…"]')
        recipients = value
    for r in recipients:
        parse_recipient(r)  # fail early, naming the key
    identity = env.get("OPSTOWER_AGE_IDENTITY") or raw.get("identity_file")
    return EncryptionSettings(
        recipients=tuple(recipients),
        identity_file=Path(identity).expanduser() if identity else None,
        passphrase_file=Path(raw["passphrase_file"]).expanduser() if raw.get("passphrase_file") else None,
        passphrase_command=raw.get("passphrase_command") or None,
    )


def parse_recipient(text: str) -> Any:
    text = text.strip()
    try:
        if text.startswith("age1"):
            return pyrage.x25519.Recipient.from_str(text)
        if text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
            return pyrage.ssh.Recipient.from_str(text)
    except Exception:  # noqa: BLE001 - reported below with the key name
        pass
    raise ConfigError(f"Config encryption.recipients has an invalid public key {text[:16]!r}…", "",
                      "use an age X25519 key (age1…) or an ssh-ed25519 / ssh-rsa public key")


def fingerprint(recipient: str) -> str:
    """A short, non-secret name for a recipient, recorded in the metadata."""
    return "sha256:" + hashlib.sha256(recipient.strip().encode()).hexdigest()[:16]


def _passphrase(enc: EncryptionSettings) -> str:
    if enc.passphrase_file is not None:
        try:
            return enc.passphrase_file.read_text().rstrip("\n")
        except OSError as exc:
            raise OpsError(f"Cannot read the passphrase file {enc.passphrase_file} ({exc.strerror})", "nothing was decrypted",
                           "check encryption.passphrase_file") from None
    if enc.passphrase_command:
        proc = subprocess.run(shlex.split(enc.passphrase_command), capture_output=True, timeout=30)
        if proc.returncode != 0:
            raise OpsError("The passphrase command failed", "nothing was decrypted", "check encryption.passphrase_command")
        return proc.stdout.decode().rstrip("\n")
    raise OpsError("The identity file is passphrase-protected but no passphrase is configured", "nothing was decrypted",
                   "set encryption.passphrase_file or passphrase_command")


def load_identities(enc: EncryptionSettings) -> list[Any]:
    """The private keys from the identity file (plain, or passphrase-protected as `age -p` writes it)."""
    if enc.identity_file is None:
        raise OpsError("No age identity configured", "the encrypted artifact cannot be read",
                       "set OPSTOWER_AGE_IDENTITY or encryption.identity_file")
    try:
        data = enc.identity_file.read_bytes()
    except OSError as exc:
        raise OpsError(f"Cannot read the identity file {enc.identity_file} ({exc.strerror})",
                       "the encrypted artifact cannot be read", "check OPSTOWER_AGE_IDENTITY") from None
    if data.startswith(AGE_MAGIC):
        try:
            data = pyrage.passphrase.decrypt(data, _passphrase(enc))
        except pyrage.DecryptError:
            raise OpsError("The passphrase does not unlock the identity file", "nothing was decrypted",
                           "check the passphrase file or command") from None
    identities = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            identities.append(pyrage.x25519.Identity.from_str(line))
    if not identities and b"PRIVATE KEY" in data:
        try:
            identities.append(pyrage.ssh.Identity.from_buffer(data))
        except Exception:  # noqa: BLE001
            pass
    if not identities:
        raise OpsError(f"No age identity found in {enc.identity_file}", "nothing was decrypted",
                       "point OPSTOWER_AGE_IDENTITY at a file with an AGE-SECRET-KEY-… line or an SSH private key")
    return identities


class _PipeReader:
    """Readable end of an os.pipe, for handing a push-style stream to pyrage's pull-style API."""

    def __init__(self, fd: int) -> None:
        self._fh = os.fdopen(fd, "rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        return self._fh.readinto(buf)

    def read(self, n: int = -1) -> bytes:
        return self._fh.read(n)

    def close(self) -> None:
        self._fh.close()


class _CallbackWriter:
    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class EncryptingWriter:
    """write() plaintext; ciphertext goes to `sink` from pyrage's thread. close() finishes the stream."""

    def __init__(self, sink: Callable[[bytes], Any], recipients: list[str]) -> None:
        self._recipients = [parse_recipient(r) for r in recipients]
        rfd, wfd = os.pipe()
        self._w = os.fdopen(wfd, "wb", buffering=1024 * 1024)
        self._r = _PipeReader(rfd)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sink,), daemon=True, name="age-encrypt")
        self._thread.start()

    def _run(self, sink: Callable[[bytes], Any]) -> None:
        try:
            pyrage.encrypt_io(self._r, _CallbackWriter(sink), self._recipients)
        except BaseException as exc:  # noqa: BLE001 - re-raised in close()
            self.error = exc
        finally:
            self._r.close()

    def write(self, data: bytes) -> None:
        try:
            self._w.write(data)
        except BrokenPipeError:
            pass  # the encryption thread died; close() reports why

    def abort(self) -> None:
        """Stop without raising (the run failed elsewhere); frees the thread and the pipe."""
        try:
            self._w.close()
        except OSError:
            pass
        self._thread.join(10)

    def close(self) -> None:
        try:
            self._w.close()
        except BrokenPipeError:
            pass
        self._thread.join()
        if self.error is not None:
            raise OpsError(f"Encryption failed ({self.error})", "no backup was written", "check the recipients")


class DecryptingReader:
    """A readable stream of plaintext from an age ciphertext stream `raw` (pyrage in a thread)."""

    def __init__(self, raw: IO[bytes], identities: list[Any]) -> None:
        rfd, wfd = os.pipe()
        self._r = os.fdopen(rfd, "rb", buffering=0)
        self._w = os.fdopen(wfd, "wb", buffering=0)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(raw, identities), daemon=True, name="age-decrypt")
        self._thread.start()

    def _run(self, raw: IO[bytes], identities: list[Any]) -> None:
        try:
            pyrage.decrypt_io(raw, self._w, identities)
        except BaseException as exc:  # noqa: BLE001 - raised to the reader at the end of the stream
            self.error = exc
        finally:
            try:
                self._w.close()
            except BrokenPipeError:
                pass

    def read(self, n: int = -1) -> bytes:
        data = self._r.read(n)
        if not data:
            self._thread.join()
            if self.error is not None:
                raise DecryptionFailed(describe_decrypt_error(self.error))
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._r.close()
        self._thread.join(5)

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DecryptionFailed(Exception):
    """The age stream could not be decrypted (wrong identity, tampering, truncation)."""


def describe_decrypt_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "No matching keys" in text:
        return "the configured identity is not a recipient of this artifact (wrong key)"
    return f"age decryption failed: {text} (the file is damaged, truncated or tampered with)"
