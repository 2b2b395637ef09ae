"""`opstower verify ARTIFACT` (checks 1-7, whole process) against `zstd -dc ARTIFACT > /dev/null` (issue 18).

Goal: ≤ 1.5× the bare decompression, process start included. Both run as child processes,
interleaved in the same rounds (the machine is shared), with wall and CPU seconds (user+sys
of the child and its children, from wait4) and the load average.

    .venv/bin/python bench/verify_startup.py ARTIFACT [--rounds 5] [--before SRC_DIR]

ARTIFACT is a `<db>_<stamp>.dump.zst` with its `.meta.json` beside it (e.g. the one
`bench/run_all.py` leaves in bench/.work/out/backups, copied out before the next run). It is
copied into a scratch backup directory and uploaded to an embedded SeaweedFS, so check 7
(the S3 copy, with its sha256) runs as it does in production. No PostgreSQL server is needed
for checks 1-7; pg_restore comes from the embedded PostgreSQL's binaries.

Bytecode: an installed package runs from compiled bytecode, but this checkout is often run
with PYTHONDONTWRITEBYTECODE=1, which recompiles every engine module on each start (~0.1
CPU-s). The children here write and reuse bytecode under the scratch directory
(PYTHONPYCACHEPREFIX), as an installed copy would; `--no-bytecode` measures without it.
`--before SRC_DIR` adds an earlier engine (e.g. `git archive HEAD~3 src | tar -x -C /tmp/x`,
then /tmp/x/src) as a third contender in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPSTOWER = str(ROOT / ".venv" / "bin" / "opstower")


def timed(cmd: list[str] | str, env: dict[str, str], shell: bool = False) -> tuple[float, float, int]:
    """(wall s, CPU s of the child and its descendants, exit code)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0,):
        print(f"  {cmd!r} exited {proc.returncode}: {err[-300:]}", file=sys.stderr)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path, help="src directory of an earlier engine to measure beside")
    parser.add_argument("--without-s3", action="store_true",
                        help="also the same verify with no S3 configured (check 7 skipped): what check 7 costs")
    parser.add_argument("--no-bytecode", action="store_true", help="keep PYTHONDONTWRITEBYTECODE as it is")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    from opstower_core.artifacts.names import parse_name
    from opstower_core.devenv.embedded import EmbeddedS3, bundled_pg_bin

    src = args.artifact.resolve()
    name = parse_name(src.name)
    assert name is not None, f"{src.name} is not an artifact name"
    work = Path(tempfile.mkdtemp(prefix="verify_startup_"))
    try:
        backups = work / "backups"
        backups.mkdir()
        art = backups / src.name
        shutil.copyfile(src, art)
        meta = src.with_name(name.meta_filename)
        shutil.copyfile(meta, backups / meta.name)
        with EmbeddedS3(work / "s3") as s3:
            import json

            sha = json.loads(meta.read_text())["sha256"]
            client = s3.client()
            client.upload_file(str(art), s3.bucket, name.s3_key(""), ExtraArgs={"Metadata": {"sha256": sha}})
            client.upload_file(str(meta), s3.bucket, name.s3_meta_key(""))
            config = work / "verify.toml"
            config.write_text(f'backup_dir = "{backups}"\nstate_dir = "{work / "state"}"\n'
                              f'pg_bin = "{bundled_pg_bin()}"\nmin_free_gb = 0\n'
                              f'[s3]\nbucket = "{s3.bucket}"\nendpoint_url = "{s3.endpoint_url}"\n'
                              f'[targets.{name.database}]\nhost = "/nonexistent"\nport = 5432\nuser = "postgres"\n')
            env = {**os.environ, **s3.env(), "OPSTOWER_CONFIG": str(config)}
            if not args.no_bytecode:
                env.pop("PYTHONDONTWRITEBYTECODE", None)
                env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
            verify_cmd = [OPSTOWER, "verify", "-d", name.database, str(art)]
            contenders: dict[str, tuple[list[str] | str, dict[str, str], bool]] = {
                "zstd -dc ARTIFACT > /dev/null": (f"zstd -d -c {art} > /dev/null", env, True),
                "opstower verify ARTIFACT (checks 1-7)": (verify_cmd, env, False),
            }
            if args.without_s3:
                bare = work / "verify_no_s3.toml"
                bare.write_text("\n".join(ln for ln in config.read_text().splitlines()
                                          if not ln.startswith(("[s3]", "bucket", "endpoint_url"))) + "\n")
                contenders["the same, no S3 configured (check 7 skipped)"] = (
                    verify_cmd, {**env, "OPSTOWER_CONFIG": str(bare)}, False)
            if args.before:
                contenders["the same, earlier engine (--before)"] = (
                    verify_cmd, {**env, "PYTHONPATH": str(args.before.resolve())}, False)
            for cmd, cenv, shell in contenders.values():  # warm the page cache and the bytecode caches
                timed(cmd, cenv, shell)
            results: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
            short = {label: label.split()[0] if i < 2 else ("no-s3" if "S3" in label else "before")
                     for i, label in enumerate(contenders)}
            loads = []
            for i in range(args.rounds):
                loads.append(os.getloadavg()[0])
                line = []
                for label, (cmd, cenv, shell) in contenders.items():
                    wall, cpu, rc = timed(cmd, cenv, shell)
                    if rc != 0:
                        print(f"{label} failed: the numbers are of a failing run", file=sys.stderr)
                    results[label].append((wall, cpu))
                    line.append(f"{short[label]} {wall:.3f} s / {cpu:.3f} CPU-s")
                print(f"round {i + 1} (load {loads[-1]:.2f}): " + "; ".join(line), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{src.name}, {src.stat().st_size / 1e6:.0f} MB, {args.rounds} interleaved rounds, load average "
          f"{min(loads):.1f}-{max(loads):.1f} (1 min), bytecode {'not cached' if args.no_bytecode else 'cached'}")
    print("| contender | wall median (min-max) | CPU-s median (user+sys, with children) |")
    print("|---|---|---|")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in results.items()}
    for label, runs in results.items():
        walls = [w for w, _ in runs]
        print(f"| {label} | {med[label][0]:.3f} s ({min(walls):.3f}-{max(walls):.3f}) | {med[label][1]:.3f} |")
    zw, zc = next(iter(med.values()))
    for label, (w, c) in list(med.items())[1:]:
        print(f"{label}: {w / zw:.2f}x wall (goal ≤ 1.5x), {c / zc:.2f}x CPU of zstd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
