"""DR drill scenarios: data, not code.

The built-in scenarios (the reference's sections 4.1-4.3 and 5.1) ship as
`opstower_core/data/scenarios.toml`. A user extends or overrides them with a
`scenarios.toml` in the config directory and/or the file named by `[drills] scenarios_file`
in the config: the same id replaces a scenario, a new id adds one (later files win).

A malformed file is refused with its path, the line and what is wrong: tomllib reports the
line of a syntax error; for a schema error the line of the offending key or table is found
by scanning the text, since tomllib keeps no positions.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from opstower_core.config import Settings, default_config_path
from opstower_core.drill.remedies import say
from opstower_core.errors import ConfigError

# pitr_latest: the PITR archive recovered to its end in a scratch cluster; the heartbeat read back there
# is the measured RPO (drill/pitr_phase.py).
KINDS = ("manual", "restore", "selective_restore", "verify", "pitr_latest")
AUTOMATED = ("restore", "selective_restore", "verify", "pitr_latest")
BUILTIN = "built-in"

_SCENARIO_KEYS = {"name", "description", "phases"}
_PHASE_KEYS = {"name", "target_minutes", "kind", "activities"}


@dataclass(frozen=True)
class Phase:
    """One step of a scenario, with its target duration."""

    name: str
    target_minutes: float
    kind: str = "manual"  # one of KINDS
    activities: str = ""

    @property
    def automated(self) -> bool:
        return self.kind in AUTOMATED


@dataclass(frozen=True)
class Scenario:
    """A named sequence of phases; `source` is "built-in" or the file it came from."""

    id: str
    name: str
    phases: tuple[Phase, ...]
    description: str = ""
    source: str = BUILTIN

    @property
    def target_minutes(self) -> float:
        return sum(p.target_minutes for p in self.phases)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = [asdict(p) for p in self.phases]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scenario:
        phases = tuple(Phase(**p) for p in d.get("phases", []))
        return cls(d["id"], d["name"], phases, d.get("description", ""), d.get("source", BUILTIN))


class ScenarioError(ConfigError):
    """A scenario file that cannot be used, naming the file and line."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path} line {line}" if line else path
        super().__init__(f"Scenario file {where}: {problem}", "no drill was started",
                         say("scenario_format"))


# -- locating keys in the text -------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.\-" ]+?)\s*=""")


def _split_key(text: str) -> tuple[str, ...]:
    """`a."b.c".d` -> ("a", "b.c", "d")."""
    parts, buf, quote = [], "", ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            else:
                buf += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(buf.strip())
            buf = ""
        else:
            buf += ch
    parts.append(buf.strip())
    return tuple(parts)


def locate(text: str, path: tuple[str | int, ...]) -> int | None:
    """1-based line of the key or table at `path` (e.g. ("scenarios", "x", "phases", 2, "kind")).

    Falls back to the nearest enclosing table that can be found, or None.
    """
    lines = text.splitlines()
    table: tuple[str | int, ...] = ()
    array_counts: dict[tuple[str, ...], int] = {}
    best: tuple[int, int] | None = None  # (matched depth, line)

    def consider(candidate: tuple[str | int, ...], lineno: int) -> None:
        nonlocal best
        if candidate == path[: len(candidate)] and (best is None or len(candidate) > best[0]):
            best = (len(candidate), lineno)

    for lineno, line in enumerate(lines, 1):
        m = _HEADER.match(line)
        if m and not line.lstrip().startswith(("#",)) and "=" not in line.split("]")[0]:
            key = _split_key(m.group(2))
            if m.group(1) == "[[":
                index = array_counts.get(key, 0)
                array_counts[key] = index + 1
                table = (*key, index)
            else:
                table = key
            consider(table, lineno)
            continue
        k = _KEY.match(line)
        if k and not line.lstrip().startswith("#"):
            consider((*table, *_split_key(k.group(1))), lineno)
    return best[1] if best else None


# -- validation ----------------------------------------------------------------------------

def _parse(text: str, source: str) -> dict[str, Scenario]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Messages look like "Invalid value (at line 7, column 9)".
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        line = int(m.group(1)) if m else None
        col = f", column {m.group(2)}" if m else ""
        raise ScenarioError(source, line, f"not valid TOML ({msg}{col})") from None

    def fail(path: tuple[str | int, ...], problem: str) -> ScenarioError:
        return ScenarioError(source, locate(text, path) or 1, problem)

    for key in data:
        if key != "scenarios":
            raise fail((key,), f"unknown top-level key {key!r}; scenarios are written as [scenarios.ID]")
    table = data.get("scenarios", {})
    if not isinstance(table, dict):
        raise fail(("scenarios",), "`scenarios` must be a table: write each scenario as [scenarios.ID]")
    out: dict[str, Scenario] = {}
    for sid, raw in table.items():
        where = f"scenarios.{sid}"
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", sid):
            raise fail(("scenarios", sid), f"scenario id {sid!r} may hold only letters, digits, _ and -")
        if not isinstance(raw, dict):
            raise fail(("scenarios", sid), f"{where} must be a table ([{where}])")
        for key in raw:
            if key not in _SCENARIO_KEYS:
                raise fail(("scenarios", sid, key),
                           f"{where}.{key} is not a known key (use {', '.join(sorted(_SCENARIO_KEYS))})")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise fail(("scenarios", sid, "name"), f"{where}.name is missing or not a non-empty string")
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise fail(("scenarios", sid, "description"), f"{where}.description must be a string")
        phases_raw = raw.get("phases")
        if not isinstance(phases_raw, list) or not phases_raw:
            raise fail(("scenarios", sid, "phases"),
                       f"{where} has no phases; add one or more [[{where}.phases]] tables")
        phases = [_phase(sid, i, p, fail) for i, p in enumerate(phases_raw)]
        out[sid] = Scenario(sid, name.strip(), tuple(phases), description.strip(), source)
    return out


def _phase(sid: str, i: int, raw: Any, fail: Any) -> Phase:
    where = f"scenarios.{sid}.phases[{i + 1}]"
    base: tuple[str | int, ...] = ("scenarios", sid, "phases", i)
    if not isinstance(raw, dict):
        raise fail(base, f"{where} must be a table ([[scenarios.{sid}.phases]])")
    for key in raw:
        if key not in _PHASE_KEYS:
            raise fail((*base, key), f"{where}.{key} is not a known key (use {', '.join(sorted(_PHASE_KEYS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail((*base, "name") if "name" in raw else base, f"{where}.name is missing or not a non-empty string")
    if "target_minutes" not in raw:
        raise fail(base, f"{where} ({name}) has no target_minutes")
    minutes = raw["target_minutes"]
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes > 0:
        raise fail((*base, "target_minutes"), f"{where}.target_minutes = {minutes!r} must be a number above 0")
    kind = raw.get("kind", "manual")
    if kind not in KINDS:
        raise fail((*base, "kind"), f"{where}.kind = {kind!r} must be one of {', '.join(KINDS)}")
    activities = raw.get("activities", "")
    if not isinstance(activities, str):
        raise fail((*base, "activities"), f"{where}.activities must be a string")
    return Phase(name.strip(), float(minutes), kind, activities.strip())


# -- loading -------------------------------------------------------------------------------

def parse_scenarios(text: str, source: str) -> dict[str, Scenario]:
    """Scenarios from TOML text; ScenarioError naming `source` and the line when malformed."""
    return _parse(text, source)


def load_file(path: Path) -> dict[str, Scenario]:
    """Scenarios from one file; ScenarioError when missing, unreadable or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(str(path), None, "file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), None, f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return _parse(text, str(path))


def builtin_scenarios() -> dict[str, Scenario]:
    text = resources.files("opstower_core").joinpath("data/scenarios.toml").read_text(encoding="utf-8")
    return _parse(text, BUILTIN)


def scenario_files(settings: Settings) -> list[Path]:
    """The user's scenario files, in the order they apply (later wins)."""
    config_dir = (settings.config_path or default_config_path()).parent
    files = []
    local = config_dir / "scenarios.toml"
    if local.exists():
        files.append(local)
    drills = settings.section("drills")
    extra = drills.get("scenarios_file")
    if extra is not None:
        if not isinstance(extra, str) or not extra:
            raise ConfigError(f"Config drills.scenarios_file = {extra!r} is not a path", "no drill was started",
                              'write it as scenarios_file = "/path/to/scenarios.toml"')
        path = Path(extra).expanduser()
        if not path.is_absolute():
            path = config_dir / path  # relative to the config file, like other tools do
        if path not in files:
            files.append(path)
    return files


def load_scenarios(settings: Settings) -> dict[str, Scenario]:
    """Built-in scenarios overlaid by the user's files: same id overrides, new ids add."""
    scenarios = builtin_scenarios()
    for path in scenario_files(settings):
        scenarios.update(load_file(path))
    return scenarios


def find_scenario(scenarios: dict[str, Scenario], ref: str) -> Scenario:
    """By id, by name (any case), or by a unique prefix of either."""
    if ref in scenarios:
        return scenarios[ref]
    low = ref.strip().lower()
    for s in scenarios.values():
        if s.name.lower() == low or s.id.lower() == low:
            return s
    matches = [s for s in scenarios.values() if s.id.lower().startswith(low) or s.name.lower().startswith(low)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted(scenarios))
    what = "matches several scenarios" if matches else "is not a scenario"
    raise ConfigError(f"{ref!r} {what}", f"known scenarios: {known}", say("scenario_list"))

