"""Issue 18's table: each piece of work against its reference point, medians of interleaved runs.

Every contender runs as its own process, the way an operator or cron runs it; one round runs
each contender once, rounds repeat (`--rounds`), and the median of each is reported with the
load average seen before and after, because this machine is shared. Called by run_all.py
(`make bench`): `--size 0.6` (default, 2 M rows) or `--size 3` (10 M rows, generated into its
own database, not committed).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from run_all import OPSTOWER, newest, run_timed


@dataclass
class Pair:
    work: str
    ours: str  # contender key
    reference: str  # contender key
    goal: str  # e.g. "≤ 1.3×" or "≥ 4.5× faster"
    faster: bool = False  # the ratio reads reference / ours


PAIRS = [
    Pair("whole restore plan into a new database", "restore_new", "bare_restore", "≤ 1.3×"),
    Pair("whole restore plan, swap into the live database", "restore_swap", "bare_restore", "≤ 1.3×"),
    Pair("  the same, new database, until it is in service (the RTO clock; VACUUM runs after)", "restore_new_service",
         "bare_restore", "≤ 1.3×"),
    Pair("  the same, swap, until it is in service (the RTO clock; VACUUM runs after)", "restore_swap_service",
         "bare_restore", "≤ 1.3×"),
    Pair("backup --local-only", "backup_local", "floor", "≤ 1.3×"),
    Pair("backup --local-only vs the reference's plain dump + gzip", "backup_local", "reference", "≥ 4.5× faster",
         faster=True),
    Pair("backup with S3", "backup_s3", "backup_local", "≤ 1.2×"),
    Pair("verify checks 1–7 (whole process)", "verify", "zstd", "≤ 1.5×"),
    Pair("verify --full-test", "full_test", "bare_restore", "≤ 1.1×"),
]

# With --before SRC (the engine's source tree of an earlier commit, e.g. from `git archive`): the
# same contenders run that code too, interleaved in the same rounds, so "before" and "after" see the
# same machine load.
BEFORE = ("verify", "restore_new", "restore_swap", "full_test")

LABELS = {
    "restore_new": "opstower restore --force --target-db NEW", "restore_swap": "opstower restore --force (swap)",
    "bare_restore": "bare zstd -dc \\| pg_restore", "backup_local": "opstower backup --local-only",
    "floor": "pg_dump -Fc -Z0 to a file", "reference": "pg_dump --format=plain > file && gzip",
    "backup_s3": "opstower backup (local + S3)", "verify": "opstower verify ARTIFACT",
    "zstd": "zstd -dc ARTIFACT > /dev/null", "full_test": "opstower verify --full-test",
    "restore_new_service": "restore --target-db NEW, process start to service",
    "restore_swap_service": "restore (swap), process start to service",
}


@dataclass
class Bench:
    ctx: dict
    db: str
    times: dict[str, list[float]] = field(default_factory=dict)
    # CPU-s per run: "client" = the timed process and its children (opstower, pg_dump, psql, zstd ...),
    # "store" = the embedded S3 store, "server" = PostgreSQL (its backends, reaped by the postmaster):
    # all three share the 2 cores.
    cpu: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    steps: dict[str, list[dict]] = field(default_factory=dict)  # contender -> step tables of its runs
    before: str | None = None  # source tree of the earlier engine (see BEFORE)
    use_before: bool = False

    @property
    def env(self) -> dict[str, str]:
        if self.use_before and self.before:
            return {**self.ctx["env"], "PYTHONPATH": self.before}
        return self.ctx["env"]

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(**self.ctx["pg"].conninfo("postgres"), autocommit=True) as c:
            c.execute(sql)

    def timed(self, key: str, fn: Callable[[], float]) -> None:
        client, store, server = _children_cpu(), self._store_cpu(), self._server_cpu()
        self.times.setdefault(key, []).append(fn())
        self.cpu.setdefault(key, []).append((_children_cpu() - client, self._store_cpu() - store,
                                             self._server_cpu() - server))

    def _store_cpu(self) -> float:
        proc = getattr(self.ctx["s3"], "_proc", None)
        return _proc_cpu(proc.pid, children=False) if proc is not None else 0.0

    def _server_cpu(self) -> float:
        try:  # the postmaster's own CPU and its reaped children's (every backend of a finished run)
            pid = int((Path(self.ctx["pg"].pgdata) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        return _proc_cpu(pid, children=True)

    # -- contenders ------------------------------------------------------------------------
    def artifact(self) -> Path:
        return newest(self.ctx["out"] / "backups", f"{self.db}_*.dump.zst")

    def floor(self) -> float:
        out = self.ctx["out"] / "floor.dump"
        t, _ = run_timed([f"{self.ctx['tools']}/pg_dump", "-Fc", "-Z0", f"--dbname={self.db}", f"--file={out}"],
                         self.env)
        out.unlink()
        return t

    def reference(self) -> float:
        ref = self.ctx["out"] / "ref"
        ref.mkdir(exist_ok=True)
        for p in ref.glob("*"):
            p.unlink()
        cmd = (f"{self.ctx['tools']}/pg_dump --format=plain --no-owner --no-acl --dbname={self.db} > {ref}/b.sql "
               f"&& gzip {ref}/b.sql")
        return run_timed(cmd, self.env, shell=True)[0]

    def backup(self, local_only: bool) -> float:
        return run_timed([OPSTOWER, "backup", "-d", self.db] + (["--local-only"] if local_only else []), self.env)[0]

    def zstd(self) -> float:
        return run_timed(f"zstd -d -c {self.artifact()} > /dev/null", self.env, shell=True)[0]

    def verify(self, full: bool) -> float:
        if full:
            self.settle()
        return run_timed([OPSTOWER, "verify", "-d", self.db, str(self.artifact())] + (["--full-test"] if full else []),
                         self.env)[0]

    def settle(self) -> None:
        """Untimed, before each restore-like run: flush what earlier steps left dirty (a CREATE DATABASE
        ... TEMPLATE copies ~600 MB through WAL and shared buffers), so no run pays for another's writes."""
        self.admin("CHECKPOINT")
        os.sync()

    def bare_restore(self) -> float:
        self.admin('DROP DATABASE IF EXISTS "bench_bare" WITH (FORCE)')
        self.admin('CREATE DATABASE "bench_bare"')
        self.settle()
        t = run_timed(f"zstd -d -c {self.artifact()} | {self.ctx['tools']}/pg_restore --exit-on-error "
                      "--dbname=bench_bare", self.env, shell=True)[0]
        self.admin('DROP DATABASE IF EXISTS "bench_bare" WITH (FORCE)')
        return t

    def restore(self, key: str, args: list[str]) -> float:
        t0 = time.monotonic()
        proc = subprocess.run([OPSTOWER, "restore", "-d", self.db, str(self.artifact()), "--force", "--json", *args],
                              env=self.env, capture_output=True, text=True)
        t = time.monotonic() - t0
        if proc.returncode != 0:
            raise SystemExit(f"restore failed: {proc.stderr[-1500:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        self.steps.setdefault(key + ("_before" if self.use_before else ""), []).append(summary)
        service = summary.get("service_seconds")
        if service is not None and not self.use_before:
            # From the process start until the restored database was in service (the RTO clock): the
            # wall time less what ran after the switch (VACUUM) and the process's exit.
            self.times.setdefault(f"{key}_service", []).append(t - (summary["total_seconds"] - service))
        return t

    def restore_new(self) -> float:
        self.admin('DROP DATABASE IF EXISTS "bench_new" WITH (FORCE)')
        self.settle()
        t = self.restore("restore_new", ["--target-db", "bench_new"])
        self.admin('DROP DATABASE IF EXISTS "bench_new" WITH (FORCE)')
        return t

    def restore_swap(self) -> float:
        # The live database: a copy of the benchmark database (made untimed), replaced by the restore.
        self.admin('DROP DATABASE IF EXISTS "bench_live" WITH (FORCE)')
        self.admin(f'CREATE DATABASE "bench_live" TEMPLATE "{self.db}"')
        self.settle()
        t = self.restore("restore_swap", ["--target-db", "bench_live"])
        summary = self.steps["restore_swap" + ("_before" if self.use_before else "")][-1]
        for name in ("bench_live", summary.get("old_database") or ""):
            if name:
                self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return t

    def round(self, only: list[str] | None = None) -> None:
        for key, fn in (("reference", self.reference), ("floor", self.floor),
                        ("backup_local", lambda: self.backup(True)), ("backup_s3", lambda: self.backup(False)),
                        ("zstd", self.zstd), ("verify", lambda: self.verify(False)),
                        ("bare_restore", self.bare_restore), ("restore_new", self.restore_new),
                        ("restore_swap", self.restore_swap), ("full_test", lambda: self.verify(True))):
            if only is None or key in only:
                self.timed(key, fn)
            if self.before and key in BEFORE and (only is None or key in only):
                self.use_before = True
                try:
                    self.timed(f"{key}_before", fn)
                finally:
                    self.use_before = False


def _proc_cpu(pid: int, children: bool) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")  # utime + stime (+ cutime + cstime)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bench_issue18(ctx: dict, db: str, rounds: int, only: list[str] | None = None, before: str | None = None) -> str:
    b = Bench(ctx, db, before=before)
    b.backup(False)  # an artifact in both places for check 7, before the rounds
    before = loadavg()
    for _ in range(rounds):
        b.round(only)
    return render(b, before, loadavg(), rounds)


def render(b: Bench, before: str, after: str, rounds: int) -> str:
    med = {k: statistics.median(v) for k, v in b.times.items()}
    lines = [f"Medians of {rounds} interleaved rounds; load average {before} before, {after} after.", "",
             "| work | ours | reference point | ratio | goal |", "|---|---|---|---|---|"]
    for p in PAIRS:
        if p.ours not in med or p.reference not in med:
            continue
        ours, ref = med[p.ours], med[p.reference]
        ratio = f"{ref / ours:.2f}× faster" if p.faster else f"{ours / ref:.2f}×"
        lines.append(f"| {p.work} | {ours:.2f} s | {LABELS[p.reference]} {ref:.2f} s | {ratio} | {p.goal} |")
    if any(k.endswith("_before") for k in med):
        lines += ["", f"Before/after in the same rounds (before: the engine from {b.before}):", "",
                  "| work | before | after | reference point | ratio before | ratio after | goal |",
                  "|---|---|---|---|---|---|---|"]
        for p in PAIRS:
            if p.ours in BEFORE and f"{p.ours}_before" in med and p.reference in med:
                was, now, ref = med[f"{p.ours}_before"], med[p.ours], med[p.reference]
                lines.append(f"| {p.work} | {was:.2f} s | {now:.2f} s | {LABELS[p.reference]} {ref:.2f} s | "
                             f"{was / ref:.2f}× | {now / ref:.2f}× | {p.goal} |")
    label = {**LABELS, **{f"{k}_before": f"{LABELS[k]} (before)" for k in BEFORE}}
    cpu = {k: tuple(statistics.median(run[i] for run in v) for i in range(3)) for k, v in b.cpu.items()}
    lines += ["", "CPU-s per run (median; client = the command and its children, e.g. pg_dump, psql; server = "
              "PostgreSQL's backends; store = the S3 store; all on the same 2 cores): "
              + "; ".join(f"{label[k]}: client {c:.2f}, server {sv:.2f}" + (f", store {st:.2f}" if st >= 0.05 else "")
                          for k, (c, st, sv) in cpu.items())]
    lines += ["", "Every run (s): " + "; ".join(f"{label[k]}: {', '.join(f'{x:.2f}' for x in v)}"
                                                 for k, v in b.times.items())]
    for key in ("restore_new", "restore_swap", "restore_new_before", "restore_swap_before"):
        if key not in b.steps:
            continue
        lines += ["", f"Steps of `{label[key]}` (median s; `beside` = ran in parallel, the clock waited `waited`):"]
        by_step: dict[str, list[float]] = {}
        waited: dict[str, list[float]] = {}
        after: set[str] = set()
        for summary in b.steps.get(key, []):
            for s in summary["steps"]:
                by_step.setdefault(s["step"], []).append(s["seconds"])
                if s.get("after_service"):
                    after.add(s["step"])
                elif s.get("parallel_with"):
                    waited.setdefault(s["step"], []).append(s.get("waited", 0.0))

        def note(step: str, after: set[str] = after, waited: dict[str, list[float]] = waited) -> str:
            if step in after:
                return " (after the switch, off the clock)"
            return f" (beside; waited {statistics.median(waited[step]):.2f})" if step in waited else ""

        lines.append(" · ".join(f"{step} {statistics.median(v):.2f}{note(step)}"
                                for step, v in by_step.items() if statistics.median(v) >= 0.005))
    return "\n".join(lines) + "\n"


def size_rows(size: float) -> int:
    """Rows of `events` for a database of about `size` GB (2 M rows ≈ 0.6 GB)."""
    return int(round(size / 0.6 * 2_000_000, -5))


def db_name(size: float) -> str:
    return "bench" if abs(size - 0.6) < 1e-9 else f"bench_{str(size).replace('.', '_')}gb"


if __name__ == "__main__":
    raise SystemExit("run it through bench/run_all.py (make bench)")

