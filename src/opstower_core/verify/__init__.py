"""Verification: the eight checks of the reference verify-backup.sh, up to a full test restore.

The list of checks is import-light on purpose: the console draws it before any engine
module (psycopg, boto3, zstandard) is loaded, so `verify` and `VerifyResult` are loaded on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .checks import CHECKS

if TYPE_CHECKING:
    from .proof import ArtifactProof, EarlyDigests, ProofResult, digest_key, prove_restored
    from .run import VerifyResult, verify

__all__ = ["CHECKS", "ArtifactProof", "EarlyDigests", "ProofResult", "VerifyResult", "digest_key", "prove_restored",
           "verify"]


def __getattr__(name: str) -> Any:
    if name in ("verify", "VerifyResult"):
        from . import run

        return getattr(run, name)
    if name in ("ArtifactProof", "EarlyDigests", "ProofResult", "digest_key", "prove_restored"):
        from . import proof

        return getattr(proof, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
