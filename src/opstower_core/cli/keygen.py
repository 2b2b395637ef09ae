"""`opstower keygen -o FILE [--passphrase-file F]`: an age identity for encrypted backups."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pyrage

from opstower_core.errors import OpsError, UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keygen", help="create an age identity (private key file) and print its public key",
                       description="Writes an age identity file (0600) readable by the standard `age` CLI. Put the "
                       "printed public key in [encryption] recipients on backup hosts; keep the identity where "
                       "restores run.")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="identity file to create")
    p.add_argument("--passphrase-file", metavar="FILE",
                   help="protect the identity with the passphrase in FILE (as `age -p` does)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output).expanduser()
    if out.exists():
        raise UsageError(f"{out} already exists", "nothing was written", "choose another path; never overwrite a key")
    ident = pyrage.x25519.Identity.generate()
    public = str(ident.to_public())
    data = f"# public key: {public}\n{ident}\n".encode()
    if args.passphrase_file:
        try:
            passphrase = Path(args.passphrase_file).read_text().rstrip("\n")
        except OSError as exc:
            raise OpsError(f"Cannot read {args.passphrase_file} ({exc.strerror})", "nothing was written", "") from None
        data = pyrage.passphrase.encrypt(data, passphrase)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    print(f"Identity written to {out} (keep it safe; it is needed to verify content and restore).")
    print(f"Public key (recipient): {public}")
    return 0
