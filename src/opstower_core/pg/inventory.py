"""The object inventory of a dump and of a live database, compared by name.

The artifact's side comes from its table of contents (`DumpDigester.toc`: the custom archive's
TOC, or a plain dump's ``-- Name: X; Type: Y; Schema: Z; Owner: W`` headers with the SQL of
the entries that matter here). The live side is a handful of catalog queries. Both are
reduced to the same keys, pg_dump's own: ``(TYPE, schema, tag)`` such as
``("INDEX", "public", "people_tags_gin")`` or ``("CONSTRAINT", "inventory", "items items_pkey")``.

Compared: schemas, tables, views, materialized views, sequences and their last values, indexes,
constraints (primary key, unique, exclusion, foreign key, check), triggers, policies,
extensions, types, domains, functions and procedures (by name and argument types), owners,
grants to other roles (per grantee; grant options are not compared), comments (presence) and
database-level settings (``ALTER DATABASE … SET``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opstower_core.pg.digest import TocEntry

if TYPE_CHECKING:  # only the live side connects; an artifact's inventory needs no psycopg
    import psycopg

Key = tuple[str, str, str]  # (pg_dump TOC type, schema or "", tag)

# TOC types that name an object of their own; the kind word is pg_dump's.
OBJECT_TYPES = {
    "SCHEMA", "TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "FOREIGN TABLE", "INDEX", "CONSTRAINT",
    "FK CONSTRAINT", "CHECK CONSTRAINT", "TRIGGER", "POLICY", "EXTENSION", "TYPE", "DOMAIN", "FUNCTION",
    "PROCEDURE", "AGGREGATE",
}
OWNED_TYPES = {"SCHEMA", "TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "FOREIGN TABLE", "TYPE", "DOMAIN",
               "FUNCTION", "PROCEDURE", "AGGREGATE"}
# pg_dump writes a foreign key and a separately dumped check as their own TOC types.
_SAME_AS = {"FK CONSTRAINT": "CONSTRAINT", "CHECK CONSTRAINT": "CONSTRAINT"}
# A bare identifier: a letter, _ or any non-ASCII character, then those, digits and $ (written as
# negated ASCII classes: a \x80-\uffff range costs ~85 ms to compile at import).
_IDENT = r'(?:"(?:[^"]|"")*"|[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f][^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]*)'
_CHECK_RE = re.compile(rf"CONSTRAINT ({_IDENT}) CHECK ")
_SETVAL_RE = re.compile(r"setval\('(?:[^']|'')*', (-?\d+), (true|false)\)")
_GRANT_RE = re.compile(r"^(GRANT|REVOKE) (.+?) ON (?:[A-Z]+ )+.*? (?:TO|FROM) (.+?)(?: WITH GRANT OPTION)?;$")
_DBSET_RE = re.compile(rf"^ALTER DATABASE {_IDENT} SET ({_IDENT}) TO (.*);$")


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def _strip_args(tag: str) -> str:
    """`FUNCTION slugify(txt text)` -> `FUNCTION slugify`: comments and grants name a function
    with argument names, the catalog without; overloads share one key there."""
    return tag.split("(", 1)[0] if "(" in tag else tag


@dataclass
class Inventory:
    objects: dict[Key, str | None] = field(default_factory=dict)  # -> owner (None: not recorded)
    sequences: dict[tuple[str, str], int | None] = field(default_factory=dict)  # last value, None = never called
    grants: dict[Key, frozenset[str]] = field(default_factory=dict)  # ("ACL", schema, tag) -> statements
    comments: set[Key] = field(default_factory=set)
    settings: dict[str, str] = field(default_factory=dict)
    has_owners: bool = False  # the artifact names owners (not dumped with --no-owner)
    has_settings_entry: bool = False  # the artifact carries database-level properties
    blobs: bool = False
    default_acls: bool = False

    @property
    def size(self) -> int:
        return (len(self.objects) + len(self.sequences) + len(self.grants) + len(self.comments)
                + len(self.settings))


# -- the artifact's side ---------------------------------------------------------------------


def artifact_inventory(toc: list[TocEntry]) -> Inventory:
    """The inventory a dump's table of contents promises."""
    inv = Inventory()
    for te in toc:
        desc, ns, tag = te.desc, te.namespace or "", te.tag or ""
        if desc in OBJECT_TYPES:
            if desc == "CHECK CONSTRAINT" and " " not in tag:
                continue
            inv.objects[(_SAME_AS.get(desc, desc), ns, tag)] = te.owner or None
            if te.owner and desc in OWNED_TYPES:
                inv.has_owners = True
            if desc == "TABLE" and te.defn:
                for name in _CHECK_RE.findall(te.defn):  # checks written inside CREATE TABLE
                    inv.objects[("CONSTRAINT", ns, f"{tag} {_unquote(name)}")] = None
        elif desc == "SEQUENCE SET" and te.defn:
            m = _SETVAL_RE.search(te.defn)
            if m:
                inv.sequences[(ns, tag)] = int(m.group(1)) if m.group(2) == "true" else None
        elif desc == "ACL":
            inv.grants[("ACL", ns, _strip_args(tag))] = _acl_statements(te.defn or "", te.owner)
        elif desc == "COMMENT":
            inv.comments.add(("COMMENT", ns, _strip_args(tag)))
        elif desc == "DATABASE PROPERTIES":
            inv.has_settings_entry = True
            for line in (te.defn or "").splitlines():
                m = _DBSET_RE.match(line.strip())
                if m:
                    inv.settings[_unquote(m.group(1)).lower()] = _setting_value(m.group(2))
        elif desc in ("BLOBS", "BLOB", "LARGE OBJECT"):
            inv.blobs = True
        elif desc == "DEFAULT ACL":
            inv.default_acls = True
    return inv


def _setting_value(sql: str) -> str:
    """`'8MB'` -> 8MB; `'a', 'b'` -> a, b (the form pg_db_role_setting stores)."""
    return ", ".join(p.strip().strip("'").replace("''", "'") for p in sql.split(","))


def _acl_statements(defn: str, owner: str | None) -> frozenset[str]:
    """pg_dump's GRANT/REVOKE lines as "GRANT grantee PRIVS" / "REVOKE grantee", owner left out
    (owners are compared on their own; a no-owner restore changes them)."""
    out = set()
    for line in defn.splitlines():
        m = _GRANT_RE.match(line.strip())
        if not m:
            continue
        verb, privs, grantee = m.groups()
        grantee = _unquote(grantee)
        if owner and grantee == owner:
            continue
        if verb == "REVOKE":
            out.add(f"REVOKE {grantee}")
        else:
            out.add(f"GRANT {grantee} {','.join(sorted(p.strip() for p in privs.split(',')))}")
    return frozenset(out)


# -- the live side ---------------------------------------------------------------------------

_NSP = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
_NOT_EXT = ("NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = {cls}::pg_catalog.regclass "
            "AND d.objid = {oid} AND d.deptype = 'e')")

_OBJECTS_SQL = f"""
-- text, not name: a UNION typed by its first branch would cut "table constraint" tags at 63 bytes
SELECT CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'v' THEN 'VIEW'
         WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
         ELSE 'INDEX' END, n.nspname::text, c.relname::text, pg_catalog.pg_get_userbyid(c.relowner)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE {_NSP} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I')
   AND {_NOT_EXT.format(cls="'pg_catalog.pg_class'", oid="c.oid")}
   -- an index that backs a constraint is dumped as the constraint
   AND NOT (c.relkind IN ('i', 'I') AND EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
            WHERE k.conindid = c.oid AND k.contype IN ('p', 'u', 'x')))
UNION ALL
SELECT 'CONSTRAINT', n.nspname, c.relname || ' ' || k.conname, NULL
  FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE {_NSP} AND (k.contype IN ('p', 'u', 'x') OR (k.contype = 'f' AND k.conparentid = 0)
                   OR k.contype = 'c')
UNION ALL
SELECT 'TRIGGER', n.nspname, c.relname || ' ' || t.tgname, NULL
  FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE {_NSP} AND NOT t.tgisinternal AND t.tgparentid = 0
UNION ALL
SELECT 'POLICY', n.nspname, c.relname || ' ' || p.polname, NULL
  FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {_NSP}
UNION ALL
SELECT 'EXTENSION', '', e.extname, NULL FROM pg_catalog.pg_extension e WHERE e.extname <> 'plpgsql'
UNION ALL
SELECT 'SCHEMA', '', n.nspname, pg_catalog.pg_get_userbyid(n.nspowner) FROM pg_catalog.pg_namespace n
 WHERE {_NSP} AND {_NOT_EXT.format(cls="'pg_catalog.pg_namespace'", oid="n.oid")}
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname,
       pg_catalog.pg_get_userbyid(t.typowner)
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE {_NSP} AND {_NOT_EXT.format(cls="'pg_catalog.pg_type'", oid="t.oid")}
   AND (t.typtype IN ('d', 'e', 'r')
        OR (t.typtype = 'b' AND NOT (t.typelem <> 0 AND t.typsubscript =
            'pg_catalog.array_subscript_handler'::pg_catalog.regproc))
        OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c'))
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, n.nspname,
       p.proname || '(' || coalesce((SELECT string_agg(pg_catalog.format_type(a.t, NULL), ', ' ORDER BY a.i)
                                       FROM unnest(p.proargtypes) WITH ORDINALITY AS a(t, i)), '') || ')',
       pg_catalog.pg_get_userbyid(p.proowner)
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE {_NSP} AND {_NOT_EXT.format(cls="'pg_catalog.pg_proc'", oid="p.oid")}
"""

_SEQUENCES_SQL = "SELECT schemaname, sequencename, last_value FROM pg_catalog.pg_sequences"

_COMMENTS_SQL = f"""
SELECT n.nspname, CASE WHEN d.objsubid > 0 THEN 'COLUMN ' || quote_ident(c.relname) || '.' || quote_ident(a.attname)
       ELSE CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
            WHEN 'i' THEN 'INDEX' WHEN 'I' THEN 'INDEX' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END
            || ' ' || quote_ident(c.relname) END
  FROM pg_catalog.pg_description d JOIN pg_catalog.pg_class c ON d.classoid = 'pg_catalog.pg_class'::regclass
       AND c.oid = d.objoid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid
 WHERE {_NSP} AND {_NOT_EXT.format(cls="'pg_catalog.pg_class'", oid="c.oid")}
UNION ALL
SELECT '', 'SCHEMA ' || quote_ident(n.nspname) FROM pg_catalog.pg_description d
  JOIN pg_catalog.pg_namespace n ON d.classoid = 'pg_catalog.pg_namespace'::regclass AND n.oid = d.objoid
 WHERE {_NSP}  -- public's stock comment is every database's; pg_dump leaves it out
   AND NOT (n.nspname = 'public' AND d.description = 'standard public schema')
UNION ALL
SELECT '', 'EXTENSION ' || quote_ident(e.extname) FROM pg_catalog.pg_description d
  JOIN pg_catalog.pg_extension e ON d.classoid = 'pg_catalog.pg_extension'::regclass AND e.oid = d.objoid
 WHERE e.extname <> 'plpgsql'
UNION ALL
SELECT n.nspname, CASE t.typtype WHEN 'd' THEN 'DOMAIN ' ELSE 'TYPE ' END || quote_ident(t.typname)
  FROM pg_catalog.pg_description d
  JOIN pg_catalog.pg_type t ON d.classoid = 'pg_catalog.pg_type'::regclass AND t.oid = d.objoid
  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE {_NSP} AND {_NOT_EXT.format(cls="'pg_catalog.pg_type'", oid="t.oid")}
UNION ALL
SELECT n.nspname, CASE p.prokind WHEN 'p' THEN 'PROCEDURE ' WHEN 'a' THEN 'AGGREGATE ' ELSE 'FUNCTION ' END
       || quote_ident(p.proname)
  FROM pg_catalog.pg_description d
  JOIN pg_catalog.pg_proc p ON d.classoid = 'pg_catalog.pg_proc'::regclass AND p.oid = d.objoid
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE {_NSP} AND {_NOT_EXT.format(cls="'pg_catalog.pg_proc'", oid="p.oid")}
UNION ALL
SELECT n.nspname, 'CONSTRAINT ' || quote_ident(k.conname) || ' ON ' || quote_ident(c.relname)
  FROM pg_catalog.pg_description d
  JOIN pg_catalog.pg_constraint k ON d.classoid = 'pg_catalog.pg_constraint'::regclass AND k.oid = d.objoid
  JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE {_NSP}
UNION ALL
SELECT n.nspname, 'TRIGGER ' || quote_ident(t.tgname) || ' ON ' || quote_ident(c.relname)
  FROM pg_catalog.pg_description d
  JOIN pg_catalog.pg_trigger t ON d.classoid = 'pg_catalog.pg_trigger'::regclass AND t.oid = d.objoid
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE {_NSP}
"""

# Every ACL that differs from its baseline (the initdb/extension privileges, else the default),
# exploded per grantee: what was granted (acl) and what the baseline had (base).
_GRANTS_SQL = f"""
WITH objs(kind, nsp, tag, owner, acl, base) AS (
  SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, n.nspname, quote_ident(c.relname), c.relowner,
         c.relacl, coalesce(i.initprivs, pg_catalog.acldefault((CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char",
                                                                 c.relowner))
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_init_privs i ON i.objoid = c.oid AND i.classoid = 'pg_catalog.pg_class'::regclass
         AND i.objsubid = 0
   WHERE {_NSP} AND c.relacl IS NOT NULL AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  UNION ALL
  SELECT 'COLUMN', n.nspname, quote_ident(c.relname) || '.' || quote_ident(a.attname), c.relowner, a.attacl,
         NULL::aclitem[]
    FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE {_NSP} AND a.attacl IS NOT NULL AND a.attnum > 0
  UNION ALL
  SELECT 'SCHEMA', '', quote_ident(n.nspname), n.nspowner, n.nspacl,
         coalesce(i.initprivs, pg_catalog.acldefault('n', n.nspowner))
    FROM pg_catalog.pg_namespace n
    LEFT JOIN pg_catalog.pg_init_privs i ON i.objoid = n.oid AND i.classoid = 'pg_catalog.pg_namespace'::regclass
   WHERE ({_NSP} OR n.nspname = 'public') AND n.nspacl IS NOT NULL
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, n.nspname,
         quote_ident(p.proname), p.proowner, p.proacl,
         coalesce(i.initprivs, pg_catalog.acldefault('f', p.proowner))
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    LEFT JOIN pg_catalog.pg_init_privs i ON i.objoid = p.oid AND i.classoid = 'pg_catalog.pg_proc'::regclass
   WHERE {_NSP} AND p.proacl IS NOT NULL
  UNION ALL
  SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, quote_ident(t.typname), t.typowner,
         t.typacl, coalesce(i.initprivs, pg_catalog.acldefault('T', t.typowner))
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
    LEFT JOIN pg_catalog.pg_init_privs i ON i.objoid = t.oid AND i.classoid = 'pg_catalog.pg_type'::regclass
   WHERE {_NSP} AND t.typacl IS NOT NULL
), full_privs AS (  -- every privilege of a kind: the owner's default set
  SELECT o.kind, o.nsp, o.tag, array_agg(DISTINCT x.privilege_type) AS privs
    FROM objs o, aclexplode(pg_catalog.acldefault((CASE o.kind WHEN 'SEQUENCE' THEN 's' WHEN 'SCHEMA' THEN 'n'
           WHEN 'FUNCTION' THEN 'f' WHEN 'PROCEDURE' THEN 'f' WHEN 'AGGREGATE' THEN 'f'
           WHEN 'TYPE' THEN 'T' WHEN 'DOMAIN' THEN 'T' ELSE 'r' END)::"char", o.owner)) x
   WHERE x.grantee = o.owner GROUP BY 1, 2, 3
), per AS (
  SELECT o.kind, o.nsp, o.tag, g.grantee,
         array(SELECT privilege_type FROM aclexplode(o.acl) WHERE grantee = g.grantee ORDER BY 1) AS now,
         array(SELECT privilege_type FROM aclexplode(o.base) WHERE grantee = g.grantee ORDER BY 1) AS was
    FROM objs o
    CROSS JOIN LATERAL (SELECT grantee FROM aclexplode(o.acl) UNION SELECT grantee FROM aclexplode(o.base)) g
   WHERE g.grantee <> o.owner
)
SELECT p.kind, p.nsp, p.tag, CASE p.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(p.grantee) END,
       p.now, p.was, f.privs
  FROM per p LEFT JOIN full_privs f USING (kind, nsp, tag)
 WHERE p.now IS DISTINCT FROM p.was
"""

_SETTINGS_SQL = """SELECT unnest(s.setconfig) FROM pg_catalog.pg_db_role_setting s
  JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database() AND s.setrole = 0"""


def live_inventory(conn: psycopg.Connection) -> Inventory:
    """The restored database's inventory, in the artifact's terms (five catalog queries)."""
    inv = Inventory(has_owners=True, has_settings_entry=True)
    with conn.transaction():
        # Type names in function signatures schema-qualified, as pg_dump writes them.
        conn.execute("SELECT pg_catalog.set_config('search_path', '', true)")
        for kind, nsp, tag, owner in conn.execute(_OBJECTS_SQL):
            inv.objects[(kind, nsp, tag)] = owner
        for nsp, name, last in conn.execute(_SEQUENCES_SQL):
            inv.sequences[(nsp, name)] = last
        for nsp, tag in conn.execute(_COMMENTS_SQL):
            inv.comments.add(("COMMENT", nsp, tag))
        grants: dict[Key, set[str]] = {}
        for kind, nsp, tag, grantee, now, was, full in conn.execute(_GRANTS_SQL):
            column = tag.rsplit(".", 1)[1] if kind == "COLUMN" else None
            grants.setdefault(("ACL", nsp, f"{kind} {tag}"), set()).update(
                _live_statements(grantee, now, was, full, column))
        inv.grants = {k: frozenset(v) for k, v in grants.items()}
        for (item,) in conn.execute(_SETTINGS_SQL):
            name, _, value = item.partition("=")
            inv.settings[name.lower()] = value
    return inv


def _live_statements(grantee: str, now: list[str], was: list[str], full: list[str] | None,
                     column: str | None) -> list[str]:
    """What pg_dump writes for one grantee: REVOKE when a baseline privilege was taken away
    (then GRANT of all that remains), else GRANT of the privileges added. Column privileges
    read `SELECT(col)`, as in the dump."""
    def privs(p: list[str]) -> str:
        if column is not None:
            return ",".join(sorted(f"{x}({column})" for x in p))
        if full and set(p) >= set(full):
            return "ALL"
        return ",".join(sorted(p))

    if set(was) - set(now):
        return [f"REVOKE {grantee}"] + ([f"GRANT {grantee} {privs(now)}"] if now else [])
    return [f"GRANT {grantee} {privs(sorted(set(now) - set(was)))}"]


# -- comparison ------------------------------------------------------------------------------


@dataclass
class InventoryComparison:
    differences: list[str]
    compared: int  # objects, sequence values, grants, comments and settings compared
    not_compared: list[str]


def _label(key: Key) -> str:
    kind, nsp, tag = key
    if kind in ("CONSTRAINT", "TRIGGER", "POLICY") and " " in tag:
        table, name = tag.split(" ", 1)
        return f"{kind.lower()} {name} on {nsp}.{table}"
    return f"{kind.lower()} {nsp + '.' if nsp else ''}{tag}"


def compare_inventories(want: Inventory, have: Inventory, *, owners: bool = True, grants: bool = True,
                        settings: bool = True, tables: set[tuple[str, str]] | None = None) -> InventoryComparison:
    """Differences between the artifact's inventory (`want`) and the restored database's (`have`).

    `tables`: a selective restore of these (schema, table): only those tables and their
    constraints are expected, and nothing else is compared.
    """
    diffs: list[str] = []
    skipped: list[str] = []
    if tables is not None:
        def wanted(key: Key) -> bool:
            kind, nsp, tag = key
            return ((kind == "TABLE" and (nsp, tag) in tables)
                    or (kind == "CONSTRAINT" and (nsp, tag.split(" ", 1)[0]) in tables))
        objects = {k: v for k, v in want.objects.items() if wanted(k)}
        skipped.append("objects other than the restored tables and their constraints (selective restore)")
    else:
        objects = want.objects
    compared = len(objects)
    for key in sorted(objects.keys() - have.objects.keys()):
        diffs.append(f"{_label(key)}: in the artifact, missing from the restored database")
    if tables is None:
        extra = have.objects.keys() - want.objects.keys()
        extra.discard(("SCHEMA", "", "public"))  # every new database has it; pg_dump leaves it out
        for key in sorted(extra):
            diffs.append(f"{_label(key)}: in the restored database, not in the artifact")
    if owners and want.has_owners:
        for key in sorted(objects.keys() & have.objects.keys()):
            if key[0] in OWNED_TYPES and want.objects[key] and want.objects[key] != have.objects[key]:
                diffs.append(f"{_label(key)}: owner {want.objects[key]} in the artifact, {have.objects[key]} restored")
    elif want.has_owners:
        skipped.append("owners (restored without ownership)")
    else:
        skipped.append("owners (the artifact was dumped without them)")
    if tables is not None:
        return InventoryComparison(diffs, compared, skipped)
    compared += _compare_sequences(want, have, diffs)
    if grants:
        compared += _compare_map("grants on", want.grants, have.grants, diffs, lambda s: "; ".join(sorted(s)))
    elif want.grants:
        skipped.append(f"grants on {len(want.grants)} objects (restored without grants)")
    compared += len(want.comments | have.comments)
    for _, nsp, tag in sorted(want.comments - have.comments):
        diffs.append(f"comment on {tag}{f' in {nsp}' if nsp else ''}: in the artifact, missing from the restored database")
    for _, nsp, tag in sorted(have.comments - want.comments):
        diffs.append(f"comment on {tag}{f' in {nsp}' if nsp else ''}: in the restored database, not in the artifact")
    if settings and want.has_settings_entry:
        compared += _compare_map("database setting", {("", "", k): v for k, v in want.settings.items()},
                                 {("", "", k): v for k, v in have.settings.items()}, diffs, str)
    elif want.settings:
        skipped.append(f"{len(want.settings)} database-level settings (not applied by this restore)")
    elif not want.has_settings_entry:
        skipped.append("database-level settings (not in the artifact)")
    if want.blobs:
        skipped.append("large objects")
    if want.default_acls:
        skipped.append("default privileges (ALTER DEFAULT PRIVILEGES)")
    return InventoryComparison(diffs, compared, skipped)


def _compare_sequences(want: Inventory, have: Inventory, diffs: list[str]) -> int:
    for key, value in sorted(want.sequences.items()):
        if key not in have.sequences:
            continue  # the sequence itself is reported missing
        if have.sequences[key] != value:
            def shown(v: int | None) -> str:
                return "never used" if v is None else f"last value {v}"
            diffs.append(f"sequence {key[0]}.{key[1]}: {shown(value)} in the artifact, "
                         f"{shown(have.sequences[key])} restored")
    return len(want.sequences)


def _compare_map(what: str, want: dict, have: dict, diffs: list[str], show) -> int:
    for key in sorted(want.keys() | have.keys()):
        a, b = want.get(key), have.get(key)
        if a != b:
            name = key[2]
            diffs.append(f"{what} {key[1] + '.' if key[1] else ''}{name}: "
                         f"{show(a) if a else 'none'} in the artifact, {show(b) if b else 'none'} restored")
    return len(want.keys() | have.keys())
