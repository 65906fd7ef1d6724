"""pg_catalog / information_schema emulation, so psql, BI tools and drivers can look around.

DuckDB ships a partial pg_catalog whose OIDs, type names and namespaces are its
own (``main`` instead of ``public``, DuckDB type ids in ``atttypid``). meansql
installs its own catalog instead: views over ``duckdb_tables()``,
``duckdb_columns()`` and friends in an in-memory database attached as
``meansql_catalog``, with PostgreSQL's OIDs, type names and column names, plus
macros for the catalog functions clients call (``format_type``,
``pg_get_userbyid``, ...).

A statement that reads the catalog is rewritten with sqlglot before DuckDB sees
it: ``pg_catalog.pg_class`` becomes ``meansql_catalog.main.pg_class``,
``'t'::regclass`` an OID lookup, ``version()`` and ``current_setting(...)`` the
session's values. A few client queries too intricate for DuckDB (asyncpg's
recursive type introspection) are recognised and answered by an equivalent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from importlib import metadata

import duckdb
import sqlglot
from sqlglot import exp

from server.pgwire import types

CATALOG = "meansql_catalog"
PUBLIC_OID = 2200
PG_CATALOG_OID = 11
INFORMATION_SCHEMA_OID = 13_000
OWNER_OID = 10
DATABASE_OID = 16_384
# OIDs of objects DuckDB has no OID for (indexes and constraints behind keys).
_INDEX_BASE = 1 << 28
_CONSTRAINT_BASE = 1 << 29


def _version() -> str:
    try:
        return metadata.version("meansql")
    except metadata.PackageNotFoundError:
        return "dev"


VERSION = f"PostgreSQL 15.0 (meansql {_version()}) on x86_64-pc-linux-gnu, compiled by DuckDB {duckdb.__version__}, 64-bit"

# -- types -------------------------------------------------------------------------
# (oid, typname, format_type name, typlen, typcategory, typelem, typarray)
PG_TYPES: list[tuple[int, str, str, int, str, int, int]] = [
    (16, "bool", "boolean", 1, "B", 0, 1000),
    (17, "bytea", "bytea", -1, "U", 0, 1001),
    (18, "char", '"char"', 1, "Z", 0, 1002),
    (19, "name", "name", 64, "S", 0, 1003),
    (20, "int8", "bigint", 8, "N", 0, 1016),
    (21, "int2", "smallint", 2, "N", 0, 1005),
    (22, "int2vector", "int2vector", -1, "A", 21, 1006),
    (23, "int4", "integer", 4, "N", 0, 1007),
    (24, "regproc", "regproc", 4, "N", 0, 1008),
    (25, "text", "text", -1, "S", 0, 1009),
    (26, "oid", "oid", 4, "N", 0, 1028),
    (30, "oidvector", "oidvector", -1, "A", 26, 1013),
    (114, "json", "json", -1, "U", 0, 199),
    (142, "xml", "xml", -1, "U", 0, 143),
    (700, "float4", "real", 4, "N", 0, 1021),
    (701, "float8", "double precision", 8, "N", 0, 1022),
    (705, "unknown", "unknown", -2, "X", 0, 0),
    (790, "money", "money", 8, "N", 0, 791),
    (1042, "bpchar", "character", -1, "S", 0, 1014),
    (1043, "varchar", "character varying", -1, "S", 0, 1015),
    (1082, "date", "date", 4, "D", 0, 1182),
    (1083, "time", "time without time zone", 8, "D", 0, 1183),
    (1114, "timestamp", "timestamp without time zone", 8, "D", 0, 1115),
    (1184, "timestamptz", "timestamp with time zone", 8, "D", 0, 1185),
    (1186, "interval", "interval", 16, "T", 0, 1187),
    (1266, "timetz", "time with time zone", 12, "D", 0, 1270),
    (1560, "bit", "bit", -1, "V", 0, 1561),
    (1562, "varbit", "bit varying", -1, "V", 0, 1563),
    (1700, "numeric", "numeric", -1, "N", 0, 1231),
    (2205, "regclass", "regclass", 4, "N", 0, 2210),
    (2206, "regtype", "regtype", 4, "N", 0, 2211),
    (2249, "record", "record", -1, "P", 0, 2287),
    (2278, "void", "void", 4, "P", 0, 0),
    (2950, "uuid", "uuid", 16, "U", 0, 2951),
    (3802, "jsonb", "jsonb", -1, "U", 0, 3807),
    (4089, "regnamespace", "regnamespace", 4, "N", 0, 4090),
]
_ARRAYS = [(arr, f"_{name}", f"{fmt}[]" if not fmt.startswith('"') else '"char"[]', -1, "A", oid, 0)
           for oid, name, fmt, _len, _cat, _elem, arr in PG_TYPES if arr]
ALL_TYPES = PG_TYPES + _ARRAYS

# DuckDB type names as duckdb_columns() prints them.
_DUCK_TYPES = ["BOOLEAN", "TINYINT", "SMALLINT", "UTINYINT", "INTEGER", "USMALLINT", "BIGINT", "UINTEGER",
               "UBIGINT", "HUGEINT", "UHUGEINT", "FLOAT", "DOUBLE", "VARCHAR", "BLOB", "DATE", "TIME",
               "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE",
               "INTERVAL", "UUID", "JSON"]


def _values(rows: list[tuple[object, ...]]) -> str:
    def lit(v: object) -> str:
        if isinstance(v, str):
            return "'" + v.replace("'", "''") + "'"
        return str(v)
    return ", ".join("(" + ", ".join(lit(v) for v in row) + ")" for row in rows)


def _map(entries: Mapping[object, object]) -> str:
    """A DuckDB MAP literal: lookups without a correlated subquery."""
    def lit(v: object) -> str:
        return "'" + v.replace("'", "''") + "'" if isinstance(v, str) else str(v)
    return "MAP {" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in entries.items()) + "}"


# -- the catalog, as SQL text ------------------------------------------------------------
# {db} is the name of the user's database inside DuckDB; {c} the catalog's own database.
_SETUP = r"""
CREATE TABLE {c}.main.meansql_types (oid BIGINT, typname VARCHAR, fmt VARCHAR, typlen SMALLINT,
    typcategory VARCHAR, typelem BIGINT, typarray BIGINT);
INSERT INTO {c}.main.meansql_types VALUES {types};
CREATE TABLE {c}.main.meansql_duck_types (duck VARCHAR, oid BIGINT);
INSERT INTO {c}.main.meansql_duck_types VALUES {duck_types};
CREATE TABLE {c}.main.meansql_catalog_tables (oid BIGINT, relname VARCHAR);
INSERT INTO {c}.main.meansql_catalog_tables VALUES {catalog_tables};

CREATE MACRO {c}.main.meansql_nsp_oid(p_schema_name, p_schema_oid) AS
    CASE p_schema_name WHEN 'main' THEN {public} WHEN 'pg_catalog' THEN {pg_catalog}
         WHEN 'information_schema' THEN {information_schema} ELSE p_schema_oid END;
CREATE MACRO {c}.main.meansql_nsp_name(p_schema_name) AS
    CASE p_schema_name WHEN 'main' THEN 'public' ELSE p_schema_name END;
CREATE MACRO {c}.main.meansql_type_oid(p_duck) AS coalesce({duck_type_map}[p_duck],
    CASE WHEN p_duck LIKE 'DECIMAL%[]' THEN 1231 WHEN p_duck LIKE 'DECIMAL%' THEN 1700
         WHEN p_duck LIKE '%[]' THEN 1009 WHEN p_duck LIKE 'STRUCT%' OR p_duck LIKE 'MAP%' THEN 114 ELSE 25 END);
CREATE MACRO {c}.main.meansql_format_type(p_type_oid, p_typmod) AS CASE
    WHEN p_type_oid IS NULL THEN NULL
    WHEN p_type_oid = 1700 AND p_typmod > 4
        THEN 'numeric(' || ((p_typmod - 4) >> 16) || ',' || ((p_typmod - 4) & 65535) || ')'
    WHEN p_type_oid IN (1043, 1042) AND p_typmod > 4
        THEN {format_map}[p_type_oid] || '(' || (p_typmod - 4) || ')'
    ELSE coalesce({format_map}[p_type_oid], '???') END;
CREATE MACRO {c}.main.format_type(p_type_oid, p_typmod) AS {c}.main.meansql_format_type(p_type_oid, p_typmod);
CREATE MACRO {c}.main.pg_get_userbyid(p_role_oid) AS 'postgres';
CREATE MACRO {c}.main.pg_table_is_visible(p_rel_oid) AS true;
CREATE MACRO {c}.main.pg_type_is_visible(p_type_oid) AS true;
CREATE MACRO {c}.main.pg_function_is_visible(p_fn_oid) AS true;
CREATE MACRO {c}.main.pg_encoding_to_char(p_enc) AS 'UTF8';
CREATE MACRO {c}.main.pg_get_expr(p_expr, p_rel_oid) AS p_expr,
    (p_expr, p_rel_oid, p_pretty) AS p_expr;
CREATE MACRO {c}.main.shobj_description(p_obj_oid, p_catalog_name) AS NULL::VARCHAR;
CREATE MACRO {c}.main.pg_relation_size(p_rel_oid) AS 0::BIGINT;
CREATE MACRO {c}.main.pg_total_relation_size(p_rel_oid) AS 0::BIGINT;
CREATE MACRO {c}.main.pg_table_size(p_rel_oid) AS 0::BIGINT;
CREATE MACRO {c}.main.pg_relation_is_publishable(p_rel_oid) AS false;
CREATE MACRO {c}.main.pg_get_serial_sequence(p_tbl, p_col) AS NULL::VARCHAR;
CREATE MACRO {c}.main.pg_get_statisticsobjdef_columns(p_stat_oid) AS NULL::VARCHAR;
CREATE MACRO {c}.main.pg_get_partkeydef(p_rel_oid) AS NULL::VARCHAR;
-- No table is a partition: a relation's only ancestor is itself (psql's "Referenced by" query).
CREATE MACRO {c}.main.pg_partition_ancestors(p_rel) AS TRY_CAST(p_rel AS BIGINT);
CREATE MACRO {c}.main.pg_get_triggerdef(p_trigger_oid) AS NULL::VARCHAR,
    (p_trigger_oid, p_pretty) AS NULL::VARCHAR;
CREATE MACRO {c}.main.pg_backend_pid() AS 1;
CREATE MACRO {c}.main.pg_is_in_recovery() AS false;
CREATE MACRO {c}.main.txid_current() AS 1::BIGINT;
CREATE MACRO {c}.main.pg_postmaster_start_time() AS now();
CREATE MACRO {c}.main.has_table_privilege(p_a, p_b) AS true,
    (p_a, p_b, p_c) AS true;
CREATE MACRO {c}.main.has_schema_privilege(p_a, p_b) AS true,
    (p_a, p_b, p_c) AS true;
CREATE MACRO {c}.main.has_database_privilege(p_a, p_b) AS true,
    (p_a, p_b, p_c) AS true;
CREATE MACRO {c}.main.array_upper(p_arr, p_dim) AS len(p_arr);
CREATE MACRO {c}.main.array_lower(p_arr, p_dim) AS CASE WHEN len(p_arr) > 0 THEN 1 END;
-- information_schema._pg_expandarray: one row (x = element, n = its position) per element (pgjdbc's getPrimaryKeys).
CREATE MACRO {c}.main._pg_expandarray(p_arr) AS
    unnest(list_transform(range(1, len(p_arr) + 1), i -> {{'x': p_arr[i], 'n': i}}));
CREATE MACRO {c}.main.meansql_regtype(p_name) AS {regtype_map}[p_name];

CREATE VIEW {c}.main.meansql_relations AS
SELECT table_oid AS oid, table_name AS relname, {c}.main.meansql_nsp_oid(schema_name, schema_oid) AS relnamespace,
       'r' AS relkind, column_count AS relnatts, has_primary_key OR index_count > 0 AS relhasindex,
       CASE WHEN temporary THEN 't' ELSE 'p' END AS relpersistence, check_constraint_count AS relchecks,
       comment, sql
FROM duckdb_tables() WHERE database_name = '{db}' OR temporary
UNION ALL
SELECT view_oid, view_name, {c}.main.meansql_nsp_oid(schema_name, schema_oid), 'v', column_count, false,
       CASE WHEN temporary THEN 't' ELSE 'p' END, 0, comment, sql
FROM duckdb_views() WHERE (database_name = '{db}' OR temporary) AND NOT internal
UNION ALL
SELECT sequence_oid, sequence_name, {c}.main.meansql_nsp_oid(schema_name, schema_oid), 'S', 3, false,
       CASE WHEN temporary THEN 't' ELSE 'p' END, 0, comment, sql
FROM duckdb_sequences() WHERE database_name = '{db}' OR temporary;

CREATE VIEW {c}.main.meansql_keys AS
SELECT k.table_oid, k.table_name, k.schema_name, {c}.main.meansql_nsp_oid(k.schema_name, k.schema_oid) AS nsp, k.constraint_index,
       k.constraint_type,
       CASE k.constraint_type WHEN 'PRIMARY KEY' THEN 'p' WHEN 'UNIQUE' THEN 'u' WHEN 'FOREIGN KEY' THEN 'f'
            ELSE 'c' END AS contype,
       k.table_name || CASE k.constraint_type WHEN 'PRIMARY KEY' THEN '_pkey'
            WHEN 'UNIQUE' THEN '_' || array_to_string(k.constraint_column_names, '_') || '_key'
            WHEN 'FOREIGN KEY' THEN '_' || array_to_string(k.constraint_column_names, '_') || '_fkey'
            ELSE '_check' END AS conname,
       {index_base} + k.table_oid * 64 + k.constraint_index AS index_oid,
       {constraint_base} + k.table_oid * 64 + k.constraint_index AS oid,
       list_transform(k.constraint_column_indexes, x -> (x + 1)::SMALLINT) AS conkey,
       k.constraint_column_names AS colnames,
       k.referenced_table, k.referenced_column_names,
       k.constraint_text, k.expression
FROM duckdb_constraints() k
WHERE (k.database_name = '{db}' OR k.database_name = 'temp')
  AND k.constraint_type IN ('PRIMARY KEY', 'UNIQUE', 'FOREIGN KEY', 'CHECK');

CREATE VIEW {c}.main.pg_namespace AS
SELECT * FROM (VALUES ({pg_catalog}, 'pg_catalog', {owner}, NULL::VARCHAR[]),
                      ({information_schema}, 'information_schema', {owner}, NULL::VARCHAR[]))
              AS t(oid, nspname, nspowner, nspacl)
UNION ALL
SELECT {c}.main.meansql_nsp_oid(schema_name, oid), {c}.main.meansql_nsp_name(schema_name), {owner}, NULL::VARCHAR[]
FROM duckdb_schemas() WHERE database_name = '{db}' AND schema_name NOT IN ('pg_catalog', 'information_schema');

CREATE VIEW {c}.main.pg_type AS
SELECT oid, typname, {pg_catalog}::BIGINT AS typnamespace, {owner}::BIGINT AS typowner, typlen,
       typlen > 0 AND typlen <= 8 AS typbyval, CASE WHEN typname = 'record' THEN 'p' ELSE 'b' END AS typtype,
       typcategory, false AS typispreferred, true AS typisdefined, ',' AS typdelim, 0::BIGINT AS typrelid,
       CASE WHEN typelem <> 0 THEN 'array_subscript_handler' ELSE '-' END AS typsubscript,
       typelem, typarray, typname || 'in' AS typinput, typname || 'out' AS typoutput,
       typname || 'recv' AS typreceive, typname || 'send' AS typsend, '-' AS typmodin, '-' AS typmodout,
       '-' AS typanalyze, CASE WHEN typlen = 8 THEN 'd' WHEN typlen = 2 THEN 's' WHEN typlen = 1 THEN 'c'
       ELSE 'i' END AS typalign, CASE WHEN typlen = -1 THEN 'x' ELSE 'p' END AS typstorage,
       false AS typnotnull, 0::BIGINT AS typbasetype, -1 AS typtypmod, 0 AS typndims,
       CASE WHEN typname IN ('text', 'varchar', 'bpchar', 'name') THEN 100 ELSE 0 END::BIGINT AS typcollation,
       NULL::VARCHAR AS typdefaultbin, NULL::VARCHAR AS typdefault, NULL::VARCHAR[] AS typacl
FROM {c}.main.meansql_types;

CREATE VIEW {c}.main.pg_class AS
SELECT r.oid, r.relname, r.relnamespace, 0::BIGINT AS reltype, 0::BIGINT AS reloftype,
       {owner}::BIGINT AS relowner, CASE WHEN r.relkind = 'r' THEN 2 ELSE 0 END::BIGINT AS relam,
       r.oid AS relfilenode, 0::BIGINT AS reltablespace, 0 AS relpages, -1::FLOAT AS reltuples,
       0 AS relallvisible, 0::BIGINT AS reltoastrelid, r.relhasindex, false AS relisshared,
       r.relpersistence, r.relkind, r.relnatts::SMALLINT AS relnatts, r.relchecks::SMALLINT AS relchecks,
       false AS relhasrules,
       -- PostgreSQL keeps a foreign key with triggers on both tables; psql lists foreign keys only then.
       r.relkind = 'r' AND EXISTS (SELECT 1 FROM {c}.main.meansql_keys f WHERE f.contype = 'f'
           AND (f.table_oid = r.oid OR (f.referenced_table = r.relname AND f.nsp = r.relnamespace)))
           AS relhastriggers,
       false AS relhassubclass, false AS relrowsecurity,
       false AS relforcerowsecurity, true AS relispopulated, 'd' AS relreplident, false AS relispartition,
       0::BIGINT AS relrewrite, 0::BIGINT AS relfrozenxid, 0::BIGINT AS relminmxid, NULL::VARCHAR[] AS relacl,
       NULL::VARCHAR[] AS reloptions, NULL::VARCHAR AS relpartbound
FROM {c}.main.meansql_relations r
UNION ALL
SELECT k.index_oid, k.conname, k.nsp, 0, 0, {owner}, 403, k.index_oid, 0, 1, 0, 0, 0, false, false, 'p', 'i',
       len(k.conkey)::SMALLINT, 0::SMALLINT, false, false, false, false, false, true, 'n', false, 0, 0, 0,
       NULL, NULL, NULL
FROM {c}.main.meansql_keys k WHERE k.contype IN ('p', 'u')
UNION ALL
SELECT t.oid, t.relname, {pg_catalog}, 0, 0, {owner}, 2, t.oid, 0, 1, 0, 0, 0, false, false, 'p', 'r',
       0::SMALLINT, 0::SMALLINT, false, false, false, false, false, true, 'n', false, 0, 0, 0, NULL, NULL, NULL
FROM {c}.main.meansql_catalog_tables t;

CREATE VIEW {c}.main.pg_attribute AS
SELECT col.table_oid AS attrelid, col.column_name AS attname, {c}.main.meansql_type_oid(col.data_type) AS atttypid,
       -1 AS attstattarget, coalesce(t.typlen, -1)::SMALLINT AS attlen, col.column_index::SMALLINT AS attnum,
       CASE WHEN col.data_type LIKE '%[]' THEN 1 ELSE 0 END AS attndims, -1 AS attcacheoff,
       CASE WHEN col.data_type LIKE 'DECIMAL%' AND col.data_type NOT LIKE '%[]'
            THEN ((col.numeric_precision << 16) | col.numeric_scale) + 4 ELSE -1 END AS atttypmod,
       coalesce(t.typlen BETWEEN 1 AND 8, false) AS attbyval, 'i' AS attalign, 'p' AS attstorage,
       '' AS attcompression, NOT col.is_nullable AS attnotnull, col.column_default IS NOT NULL AS atthasdef,
       false AS atthasmissing, '' AS attidentity, '' AS attgenerated, false AS attisdropped,
       true AS attislocal, 0 AS attinhcount,
       CASE WHEN {c}.main.meansql_type_oid(col.data_type) IN (25, 1043) THEN 100 ELSE 0 END::BIGINT AS attcollation,
       NULL::VARCHAR[] AS attacl, NULL::VARCHAR[] AS attoptions, NULL::VARCHAR[] AS attfdwoptions,
       NULL::VARCHAR AS attmissingval
FROM duckdb_columns() col
LEFT JOIN {c}.main.meansql_types t ON t.oid = {c}.main.meansql_type_oid(col.data_type)
WHERE col.database_name = '{db}' OR col.database_name = 'temp'
UNION ALL
SELECT k.index_oid, k.colnames[r.pos], {c}.main.meansql_type_oid(col.data_type), -1, -1, r.pos::SMALLINT, 0,
       -1, -1, false, 'i', 'p', '', false, false, false, '', '', false, true, 0, 0, NULL, NULL, NULL, NULL
FROM {c}.main.meansql_keys k
CROSS JOIN LATERAL (SELECT unnest(range(1, len(k.colnames) + 1)) AS pos) r
JOIN duckdb_columns() col ON col.table_oid = k.table_oid AND col.column_name = k.colnames[r.pos]
WHERE k.contype IN ('p', 'u');

CREATE VIEW {c}.main.pg_attrdef AS
SELECT {constraint_base} + table_oid * 64 + 63 - column_index AS oid, table_oid AS adrelid,
       column_index::SMALLINT AS adnum, column_default AS adbin
FROM duckdb_columns()
WHERE (database_name = '{db}' OR database_name = 'temp') AND column_default IS NOT NULL;

CREATE VIEW {c}.main.pg_index AS
SELECT k.index_oid AS indexrelid, k.table_oid AS indrelid, len(k.conkey)::SMALLINT AS indnatts,
       len(k.conkey)::SMALLINT AS indnkeyatts, true AS indisunique, false AS indnullsnotdistinct,
       k.contype = 'p' AS indisprimary, false AS indisexclusion, true AS indimmediate, false AS indisclustered,
       true AS indisvalid, false AS indcheckxmin, true AS indisready, true AS indislive,
       false AS indisreplident, k.conkey AS indkey, NULL::BIGINT[] AS indcollation, NULL::BIGINT[] AS indclass,
       list_transform(k.conkey, x -> 0::SMALLINT) AS indoption, NULL::VARCHAR AS indexprs,
       NULL::VARCHAR AS indpred
FROM {c}.main.meansql_keys k WHERE k.contype IN ('p', 'u');

CREATE VIEW {c}.main.pg_constraint AS
SELECT k.oid, k.conname, k.nsp AS connamespace, k.contype, false AS condeferrable, false AS condeferred,
       true AS convalidated, k.table_oid AS conrelid, 0::BIGINT AS contypid,
       CASE WHEN k.contype IN ('p', 'u') THEN k.index_oid ELSE 0 END::BIGINT AS conindid,
       0::BIGINT AS conparentid, coalesce(ref.table_oid, 0)::BIGINT AS confrelid,
       CASE WHEN k.contype = 'f' THEN 'a' ELSE ' ' END AS confupdtype,
       CASE WHEN k.contype = 'f' THEN 'a' ELSE ' ' END AS confdeltype,
       CASE WHEN k.contype = 'f' THEN 's' ELSE ' ' END AS confmatchtype,
       true AS conislocal, 0 AS coninhcount, true AS connoinherit, k.conkey,
       CASE WHEN k.contype = 'f' THEN list_transform(k.referenced_column_names,
            n -> list_position(rc.names, n)::SMALLINT) END AS confkey,
       NULL::BIGINT[] AS conpfeqop, NULL::BIGINT[] AS conppeqop, NULL::BIGINT[] AS conffeqop,
       NULL::SMALLINT[] AS confdelsetcols, NULL::BIGINT[] AS conexclop, k.expression AS conbin
FROM {c}.main.meansql_keys k
LEFT JOIN duckdb_tables() ref ON ref.table_name = k.referenced_table AND ref.database_name = '{db}'
LEFT JOIN (SELECT table_oid, list(column_name ORDER BY column_index) AS names FROM duckdb_columns()
           GROUP BY table_oid) rc ON rc.table_oid = ref.table_oid;

CREATE VIEW {c}.main.pg_description AS
SELECT oid AS objoid, 1259::BIGINT AS classoid, 0 AS objsubid, comment AS description
FROM {c}.main.meansql_relations WHERE comment IS NOT NULL
UNION ALL
SELECT table_oid, 1259, column_index, comment FROM duckdb_columns()
WHERE (database_name = '{db}' OR database_name = 'temp') AND comment IS NOT NULL;

CREATE VIEW {c}.main.pg_database AS
SELECT {database}::BIGINT AS oid, '{db}' AS datname, {owner}::BIGINT AS datdba, 6 AS encoding, 'c' AS datlocprovider,
       false AS datistemplate, true AS datallowconn, -1 AS datconnlimit, 0::BIGINT AS datfrozenxid,
       0::BIGINT AS datminmxid, 1663::BIGINT AS dattablespace, 'C' AS datcollate, 'C' AS datctype,
       NULL::VARCHAR AS daticulocale, NULL::VARCHAR AS datcollversion, NULL::VARCHAR[] AS datacl;

CREATE VIEW {c}.main.pg_roles AS
SELECT 'postgres' AS rolname, true AS rolsuper, true AS rolinherit, true AS rolcreaterole, true AS rolcreatedb,
       true AS rolcanlogin, false AS rolreplication, -1 AS rolconnlimit, '********' AS rolpassword,
       NULL::TIMESTAMP AS rolvaliduntil, true AS rolbypassrls, NULL::VARCHAR[] AS rolconfig,
       {owner}::BIGINT AS oid;
CREATE VIEW {c}.main.pg_user AS
SELECT 'postgres' AS usename, {owner}::BIGINT AS usesysid, true AS usecreatedb, true AS usesuper,
       false AS userepl, true AS usebypassrls, '********' AS passwd, NULL::TIMESTAMP AS valuntil,
       NULL::VARCHAR[] AS useconfig;

CREATE VIEW {c}.main.pg_proc AS
SELECT f.function_oid AS oid, f.function_name AS proname, {c}.main.meansql_nsp_oid(f.schema_name, 0) AS pronamespace,
       {owner}::BIGINT AS proowner, 14::BIGINT AS prolang, 100.0 AS procost, 0.0 AS prorows,
       0::BIGINT AS provariadic, '-' AS prosupport, 'f' AS prokind, false AS prosecdef,
       false AS proleakproof, false AS proisstrict, false AS proretset, 'v' AS provolatile,
       'u' AS proparallel, len(f.parameters)::SMALLINT AS pronargs, 0::SMALLINT AS pronargdefaults,
       {c}.main.meansql_type_oid(coalesce(f.return_type, 'VARCHAR')) AS prorettype,
       list_transform(f.parameters, p -> 25::BIGINT) AS proargtypes,
       NULL::BIGINT[] AS proallargtypes, NULL::VARCHAR[] AS proargmodes, f.parameters AS proargnames,
       NULL::VARCHAR AS proargdefaults, NULL::BIGINT[] AS protrftypes, f.macro_definition AS prosrc,
       NULL::VARCHAR AS probin, NULL::VARCHAR AS prosqlbody, NULL::VARCHAR[] AS proconfig,
       NULL::VARCHAR[] AS proacl,
       array_to_string(list_transform(list_zip(f.parameters, f.parameter_types),
           p -> p[1] || coalesce(' ' || lower(p[2]), '')), ', ') AS meansql_arguments,
       CASE WHEN f.return_type IS NULL THEN 'unknown'
            ELSE {c}.main.meansql_format_type({c}.main.meansql_type_oid(f.return_type), -1) END AS meansql_result
FROM duckdb_functions() f
WHERE f.database_name = '{db}' AND NOT f.internal;

CREATE MACRO {c}.main.meansql_nsp_name_of(p_nsp_oid) AS
    (SELECT map_from_entries(list((n.oid, n.nspname))) FROM {c}.main.pg_namespace n)[p_nsp_oid];
CREATE MACRO {c}.main.meansql_regnamespace_name(p_nsp_oid) AS
    coalesce({c}.main.meansql_nsp_name_of(p_nsp_oid), p_nsp_oid::VARCHAR);
CREATE MACRO {c}.main.meansql_regnamespace(p_name) AS
    (SELECT map_from_entries(list((n.nspname, n.oid))) FROM {c}.main.pg_namespace n)[p_name];
CREATE MACRO {c}.main.pg_get_constraintdef(p_con_oid) AS
    (SELECT map_from_entries(list((k.oid, k.constraint_text))) FROM {c}.main.meansql_keys k)[p_con_oid],
    (p_con_oid, p_pretty) AS
    (SELECT map_from_entries(list((k.oid, replace(replace(k.constraint_text, 'KEY(', 'KEY ('), 'UNIQUE(',
     'UNIQUE (')))) FROM {c}.main.meansql_keys k)[p_con_oid];
CREATE MACRO {c}.main.meansql_indexdef(p_index_oid) AS
    (SELECT map_from_entries(list((k.index_oid, 'CREATE UNIQUE INDEX ' || k.conname || ' ON '
            || {c}.main.meansql_nsp_name(k.schema_name) || '.' || k.table_name
            || ' USING btree (' || array_to_string(k.colnames, ', ') || ')')))
     FROM {c}.main.meansql_keys k)[p_index_oid];
CREATE MACRO {c}.main.pg_get_indexdef(p_index_oid) AS {c}.main.meansql_indexdef(p_index_oid),
    (p_index_oid, p_col, p_pretty) AS CASE WHEN p_col = 0 THEN {c}.main.meansql_indexdef(p_index_oid)
    ELSE (SELECT map_from_entries(list((k.index_oid, k.colnames))) FROM {c}.main.meansql_keys k)[p_index_oid][p_col]
    END;
CREATE MACRO {c}.main.pg_get_function_result(p_fn_oid) AS
    (SELECT map_from_entries(list((f.oid, f.r))) FROM (SELECT oid, min(meansql_result) AS r
     FROM {c}.main.pg_proc GROUP BY oid) f)[p_fn_oid];
CREATE MACRO {c}.main.pg_get_function_arguments(p_fn_oid) AS
    (SELECT map_from_entries(list((f.oid, f.a))) FROM (SELECT oid, min(meansql_arguments) AS a
     FROM {c}.main.pg_proc GROUP BY oid) f)[p_fn_oid];
CREATE MACRO {c}.main.pg_get_function_identity_arguments(p_fn_oid) AS
    {c}.main.pg_get_function_arguments(p_fn_oid);
CREATE MACRO {c}.main.col_description(p_rel_oid, p_col) AS
    (SELECT map_from_entries(list(((d.objoid, d.objsubid), d.description))) FROM {c}.main.pg_description d)
    [(p_rel_oid, p_col)];
CREATE MACRO {c}.main.obj_description(p_obj_oid) AS {c}.main.col_description(p_obj_oid, 0),
    (p_obj_oid, p_catalog_name) AS {c}.main.col_description(p_obj_oid, 0);
CREATE MACRO {c}.main.meansql_viewdef(p_view_oid) AS
    (SELECT map_from_entries(list((r.oid, r.sql))) FROM {c}.main.meansql_relations r)[p_view_oid];
CREATE MACRO {c}.main.pg_get_viewdef(p_view_oid) AS {c}.main.meansql_viewdef(p_view_oid),
    (p_view_oid, p_pretty) AS {c}.main.meansql_viewdef(p_view_oid);
CREATE MACRO {c}.main.meansql_regclass(p_name) AS
    (SELECT map_from_entries(list((r.relname, r.oid))) FROM (SELECT relname, min(oid) AS oid
     FROM {c}.main.pg_class GROUP BY relname) r)[string_split(p_name, '.')[-1]];
CREATE MACRO {c}.main.meansql_regclass_name(p_rel_oid) AS
    coalesce((SELECT map_from_entries(list((r.oid, r.relname))) FROM (SELECT oid, min(relname) AS relname
     FROM {c}.main.pg_class GROUP BY oid) r)[p_rel_oid], p_rel_oid::VARCHAR);
CREATE MACRO {c}.main.to_regtype(p_name) AS {c}.main.meansql_regtype(lower(p_name));
CREATE MACRO {c}.main.to_regclass(p_name) AS {c}.main.meansql_regclass(p_name);
"""

# Tables with no rows in meansql; clients join or read them.
_EMPTY_TABLES: dict[str, str] = {
    "pg_inherits": "inhrelid BIGINT, inhparent BIGINT, inhseqno INTEGER, inhdetachpending BOOLEAN",
    "pg_policy": "oid BIGINT, polname VARCHAR, polrelid BIGINT, polcmd VARCHAR, polpermissive BOOLEAN, "
                 "polroles BIGINT[], polqual VARCHAR, polwithcheck VARCHAR",
    "pg_statistic_ext": "oid BIGINT, stxrelid BIGINT, stxname VARCHAR, stxnamespace BIGINT, stxowner BIGINT, "
                        "stxstattarget INTEGER, stxkeys SMALLINT[], stxkind VARCHAR[], stxexprs VARCHAR",
    "pg_publication": "oid BIGINT, pubname VARCHAR, pubowner BIGINT, puballtables BOOLEAN, pubinsert BOOLEAN, "
                      "pubupdate BOOLEAN, pubdelete BOOLEAN, pubtruncate BOOLEAN, pubviaroot BOOLEAN",
    "pg_publication_rel": "oid BIGINT, prpubid BIGINT, prrelid BIGINT, prqual VARCHAR, prattrs SMALLINT[]",
    "pg_publication_namespace": "oid BIGINT, pnpubid BIGINT, pnnspid BIGINT",
    "pg_trigger": "oid BIGINT, tgrelid BIGINT, tgparentid BIGINT, tgname VARCHAR, tgfoid BIGINT, "
                  "tgtype SMALLINT, tgenabled VARCHAR, tgisinternal BOOLEAN, tgconstrrelid BIGINT, "
                  "tgconstrindid BIGINT, tgconstraint BIGINT, tgdeferrable BOOLEAN, tginitdeferred BOOLEAN, "
                  "tgnargs SMALLINT, tgattr SMALLINT[], tgargs BLOB, tgqual VARCHAR",
    "pg_rewrite": "oid BIGINT, rulename VARCHAR, ev_class BIGINT, ev_type VARCHAR, ev_enabled VARCHAR, "
                  "is_instead BOOLEAN, ev_qual VARCHAR, ev_action VARCHAR",
    "pg_foreign_table": "ftrelid BIGINT, ftserver BIGINT, ftoptions VARCHAR[]",
    "pg_partitioned_table": "partrelid BIGINT, partstrat VARCHAR, partnatts SMALLINT, partdefid BIGINT, "
                            "partattrs SMALLINT[], partclass BIGINT[], partcollation BIGINT[], "
                            "partexprs VARCHAR",
    "pg_range": "rngtypid BIGINT, rngsubtype BIGINT, rngmultitypid BIGINT, rngcollation BIGINT, "
                "rngsubopc BIGINT, rngcanonical VARCHAR, rngsubdiff VARCHAR",
    "pg_enum": "oid BIGINT, enumtypid BIGINT, enumsortorder FLOAT, enumlabel VARCHAR",
    "pg_collation": "oid BIGINT, collname VARCHAR, collnamespace BIGINT, collowner BIGINT, "
                    "collprovider VARCHAR, collisdeterministic BOOLEAN, collencoding INTEGER, "
                    "collcollate VARCHAR, collctype VARCHAR, colliculocale VARCHAR, collversion VARCHAR",
    "pg_extension": "oid BIGINT, extname VARCHAR, extowner BIGINT, extnamespace BIGINT, "
                    "extrelocatable BOOLEAN, extversion VARCHAR, extconfig BIGINT[], extcondition VARCHAR[]",
    "pg_depend": "classid BIGINT, objid BIGINT, objsubid INTEGER, refclassid BIGINT, refobjid BIGINT, "
                 "refobjsubid INTEGER, deptype VARCHAR",
    "pg_sequence": "seqrelid BIGINT, seqtypid BIGINT, seqstart BIGINT, seqincrement BIGINT, seqmax BIGINT, "
                   "seqmin BIGINT, seqcache BIGINT, seqcycle BOOLEAN",
    "pg_opclass": "oid BIGINT, opcmethod BIGINT, opcname VARCHAR, opcnamespace BIGINT, opcowner BIGINT, "
                  "opcfamily BIGINT, opcintype BIGINT, opcdefault BOOLEAN, opckeytype BIGINT",
    "pg_event_trigger": "oid BIGINT, evtname VARCHAR, evtevent VARCHAR, evtowner BIGINT, evtfoid BIGINT, "
                        "evtenabled VARCHAR, evttags VARCHAR[]",
    "pg_tablespace": "oid BIGINT, spcname VARCHAR, spcowner BIGINT, spcacl VARCHAR[], spcoptions VARCHAR[]",
}

_OTHER_VIEWS = r"""
CREATE VIEW {c}.main.pg_am AS
SELECT * FROM (VALUES (2::BIGINT, 'heap', 'heap_tableam_handler', 't'),
                      (403::BIGINT, 'btree', 'bthandler', 'i')) AS t(oid, amname, amhandler, amtype);
CREATE VIEW {c}.main.pg_tables AS
SELECT n.nspname AS schemaname, c.relname AS tablename, 'postgres' AS tableowner, NULL::VARCHAR AS tablespace,
       c.relhasindex AS hasindexes, false AS hasrules, false AS hastriggers, false AS rowsecurity
FROM {c}.main.pg_class c JOIN {c}.main.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r';
CREATE VIEW {c}.main.pg_views AS
SELECT n.nspname AS schemaname, r.relname AS viewname, 'postgres' AS viewowner, r.sql AS definition
FROM {c}.main.meansql_relations r JOIN {c}.main.pg_namespace n ON n.oid = r.relnamespace WHERE r.relkind = 'v';
CREATE VIEW {c}.main.information_schema_schemata AS
SELECT '{db}' AS catalog_name, nspname AS schema_name, 'postgres' AS schema_owner,
       NULL::VARCHAR AS default_character_set_catalog, NULL::VARCHAR AS default_character_set_schema,
       NULL::VARCHAR AS default_character_set_name, NULL::VARCHAR AS sql_path
FROM {c}.main.pg_namespace;
CREATE VIEW {c}.main.information_schema_tables AS
SELECT '{db}' AS table_catalog, n.nspname AS table_schema, r.relname AS table_name,
       CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'r' THEN CASE WHEN r.relpersistence = 't'
            THEN 'LOCAL TEMPORARY' ELSE 'BASE TABLE' END END AS table_type,
       NULL::VARCHAR AS self_referencing_column_name, NULL::VARCHAR AS reference_generation,
       NULL::VARCHAR AS user_defined_type_catalog, NULL::VARCHAR AS user_defined_type_schema,
       NULL::VARCHAR AS user_defined_type_name, CASE WHEN r.relkind = 'r' THEN 'YES' ELSE 'NO' END
       AS is_insertable_into, 'NO' AS is_typed, NULL::VARCHAR AS commit_action
FROM {c}.main.meansql_relations r JOIN {c}.main.pg_namespace n ON n.oid = r.relnamespace
WHERE r.relkind IN ('r', 'v');
CREATE VIEW {c}.main.information_schema_columns AS
SELECT '{db}' AS table_catalog, {c}.main.meansql_nsp_name(col.schema_name) AS table_schema, col.table_name,
       col.column_name, col.column_index AS ordinal_position, col.column_default,
       CASE WHEN col.is_nullable THEN 'YES' ELSE 'NO' END AS is_nullable,
       CASE WHEN a.atttypid >= 1000 AND t.typcategory = 'A' THEN 'ARRAY'
            WHEN a.atttypid = 1700 THEN 'numeric' ELSE t.fmt END AS data_type,
       NULL::INTEGER AS character_maximum_length, NULL::INTEGER AS character_octet_length,
       CASE WHEN a.atttypid = 1700 THEN col.numeric_precision
            WHEN a.atttypid IN (20, 21, 23, 700, 701) THEN col.numeric_precision END AS numeric_precision,
       CASE WHEN a.atttypid IN (20, 21, 23, 700, 701) THEN 2 WHEN a.atttypid = 1700 THEN 10 END
       AS numeric_precision_radix,
       CASE WHEN a.atttypid = 1700 THEN col.numeric_scale WHEN a.atttypid IN (20, 21, 23) THEN 0 END
       AS numeric_scale, NULL::INTEGER AS datetime_precision, t.typname AS udt_name,
       'pg_catalog' AS udt_schema, '{db}' AS udt_catalog, 'NO' AS is_identity, 'NEVER' AS is_generated,
       'YES' AS is_updatable
FROM duckdb_columns() col
JOIN {c}.main.pg_attribute a ON a.attrelid = col.table_oid AND a.attnum = col.column_index
JOIN {c}.main.meansql_types t ON t.oid = a.atttypid
WHERE col.database_name = '{db}' OR col.database_name = 'temp';
"""

# The catalog's own tables, with PostgreSQL's OIDs (clients write 'pg_class'::regclass).
_CATALOG_OIDS = {"pg_type": 1247, "pg_attribute": 1249, "pg_proc": 1255, "pg_class": 1259, "pg_database": 1262,
                 "pg_attrdef": 2604, "pg_constraint": 2606, "pg_inherits": 2611, "pg_index": 2610,
                 "pg_description": 2609, "pg_namespace": 2615, "pg_trigger": 2620, "pg_rewrite": 2618,
                 "pg_am": 2601, "pg_depend": 2608, "pg_enum": 3501, "pg_range": 3541, "pg_collation": 3456,
                 "pg_policy": 3256, "pg_extension": 3079, "pg_roles": 11_999, "pg_tables": 12_000,
                 "pg_views": 12_001, "pg_user": 12_002, "pg_statistic_ext": 3381, "pg_publication": 6104,
                 "pg_publication_rel": 6106, "pg_publication_namespace": 6237, "pg_sequence": 2224,
                 "pg_opclass": 2616, "pg_tablespace": 1213, "pg_foreign_table": 3118,
                 "pg_partitioned_table": 3350, "pg_event_trigger": 3466}

TABLES = frozenset(_CATALOG_OIDS)
INFORMATION_SCHEMA = frozenset({"tables", "columns", "schemata"})


def install(con: duckdb.DuckDBPyConnection) -> None:
    """Attach the catalog database and fill it; once per process, before the first session."""
    row = con.execute("SELECT current_database()").fetchone()
    assert row is not None
    db = str(row[0])
    con.execute(f"ATTACH ':memory:' AS {CATALOG}")
    duck_types = [(name, types.oid_of(name)) for name in _DUCK_TYPES]
    duck_types += [(f"{name}[]", types.oid_of(f"{name}[]")) for name in _DUCK_TYPES]
    fmt = {"c": CATALOG, "db": db.replace("'", "''"), "public": PUBLIC_OID, "pg_catalog": PG_CATALOG_OID,
           "information_schema": INFORMATION_SCHEMA_OID, "owner": OWNER_OID, "database": DATABASE_OID,
           "index_base": _INDEX_BASE, "constraint_base": _CONSTRAINT_BASE,
           "types": _values(list(ALL_TYPES)), "duck_types": _values(list(duck_types)),
           "catalog_tables": _values([(oid, name) for name, oid in _CATALOG_OIDS.items()]),
           "duck_type_map": _map(dict(duck_types)),
           "format_map": _map({t[0]: t[2] for t in ALL_TYPES}),
           "regtype_map": _map({**{t[2]: t[0] for t in ALL_TYPES}, **{t[1]: t[0] for t in ALL_TYPES}})}
    cur = con.cursor()
    try:
        cur.execute("BEGIN")
        for name, columns in _EMPTY_TABLES.items():
            cur.execute(f"CREATE TABLE {CATALOG}.main.{name} ({columns})")
        for sql in (_SETUP, _OTHER_VIEWS):
            cur.execute(sql.format(**fmt))
        cur.execute("COMMIT")
    finally:
        cur.close()


# -- rewriting ----------------------------------------------------------------------------
_MACROS = frozenset({
    "format_type", "pg_get_userbyid", "pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible",
    "pg_encoding_to_char", "pg_get_expr", "pg_get_constraintdef", "pg_get_indexdef", "pg_get_function_result",
    "pg_get_function_arguments", "pg_get_function_identity_arguments", "obj_description", "col_description",
    "shobj_description", "pg_get_viewdef", "pg_relation_size", "pg_total_relation_size", "pg_table_size",
    "pg_relation_is_publishable", "pg_get_serial_sequence", "pg_get_statisticsobjdef_columns",
    "pg_get_partkeydef", "pg_partition_ancestors", "pg_get_triggerdef", "pg_backend_pid", "pg_is_in_recovery",
    "txid_current", "pg_postmaster_start_time",
    "has_table_privilege", "has_schema_privilege", "has_database_privilege", "array_upper", "array_lower",
    "to_regtype", "to_regclass", "_pg_expandarray",
})

# Words that make a statement worth parsing for the catalog.
_TRIGGER = re.compile(
    r"\bpg_\w+|\binformation_schema\b|\bversion\s*\(|\bcurrent_(?:database|schema|schemas|setting|user|catalog)\b"
    r"|\bsession_user\b|::\s*(?:reg\w+|oid\b)|\bformat_type\b|\b(?:obj|col|shobj)_description\b"
    r"|\barray_(?:upper|lower)\b|\bto_reg\w+|\btxid_current\b|\bhas_\w+_privilege\b",
    re.I,
)
_PRE = [
    (re.compile(r"OPERATOR\s*\(\s*pg_catalog\s*\.\s*([^\s)]+)\s*\)", re.I), r"\1"),
    (re.compile(r"\s+COLLATE\s+pg_catalog\s*\.\s*\"?default\"?", re.I), ""),
    (re.compile(r"::\s*pg_catalog\s*\.\s*", re.I), "::"),
    (re.compile(r"::\s*(?:oid|regproc|regprocedure|xid|cid|tid)\s*\[\s*\]", re.I), "::BIGINT[]"),
    (re.compile(r"::\s*(?:int2vector|oidvector)\b", re.I), "::BIGINT[]"),
    (re.compile(r"::\s*\"char\"", re.I), "::TEXT"),
]


def mentions_catalog(sql: str) -> bool:
    """Whether a statement may read the catalog or ask for a session value."""
    return _TRIGGER.search(sql) is not None


def _qualified(name: str) -> exp.Table:
    return exp.Table(this=exp.to_identifier(name), db=exp.to_identifier("main"),
                     catalog=exp.to_identifier(CATALOG))


def _call(name: str, *args: exp.Expr) -> exp.Expr:
    return exp.Dot.build([exp.to_identifier(CATALOG), exp.to_identifier("main"),
                          exp.Anonymous(this=name, expressions=list(args))])


def _type_name(node: exp.Expr) -> str:
    """The lower-case name of a cast's target type."""
    if isinstance(node, exp.ObjectIdentifier):
        return node.name.lower()
    if isinstance(node, exp.DataType):
        if node.this == exp.DType.USERDEFINED:
            kind = node.args.get("kind")
            return (kind.name if isinstance(kind, exp.Expr) else str(kind)).lower()
        return node.this.value.lower()
    return ""


def _string_arg(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this
    return None


def _relname(text: str) -> str:
    """'public."My Table"' → My Table; unquoted names fold to lower case."""
    last = text.split(".")[-1].strip()
    return last[1:-1] if last.startswith('"') and last.endswith('"') else last.lower()


# int2vector / oidvector columns: arrays inside a query, "1 2" on the wire.
_VECTORS = frozenset({"indkey", "indoption", "indclass", "indcollation", "proargtypes", "stxkeys", "partattrs"})


def _vector_text(projection: exp.Expr) -> exp.Expr:
    column = projection.this if isinstance(projection, exp.Alias) else projection
    if not isinstance(column, exp.Column) or column.name.lower() not in _VECTORS:
        return projection
    text = exp.Anonymous(this="array_to_string", expressions=[column.copy(), exp.Literal.string(" ")])
    return exp.alias_(text, projection.alias_or_name)


class Rewriter:
    """Rewrites one session's catalog statements; session values come from the callbacks."""

    def __init__(self, settings: Mapping[str, str], user: Callable[[], str], database: Callable[[], str]) -> None:
        self.settings = settings
        self.user = user
        self.database = database

    def rewrite(self, sql: str) -> str:
        if "typeinfo_tree" in sql:
            return _ASYNCPG_TYPES
        text = sql
        for pattern, repl in _PRE:
            text = pattern.sub(repl, text)
        tree = sqlglot.parse_one(text, read="postgres")
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        tree = self._walk(tree, ctes)
        if isinstance(tree, exp.Select):
            tree.set("expressions", [_vector_text(e) for e in tree.expressions])
        return tree.sql(dialect="duckdb")

    def _walk(self, node: exp.Expr, ctes: set[str]) -> exp.Expr:
        """Rewrite children first, so a rewritten node's arguments are rewritten too."""
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Anonymous) \
                and node.this.name.lower() == "pg_partition_ancestors" and node.this.expressions:
            # FROM pg_partition_ancestors(rel) [WITH ORDINALITY] AS a(relid, depth): no partitions, the rel itself.
            rel = exp.cast(self._walk(node.this.expressions[0], ctes), "BIGINT")
            select = exp.select(exp.alias_(rel, "relid"), exp.alias_(exp.Literal.number(1), "depth"))
            return exp.Subquery(this=select, alias=node.args.get("alias"))
        if isinstance(node, exp.Cast) and isinstance(node.this, exp.Cast) and _type_name(node.to) == "oid":
            # name::regclass::oid looks the name up; the OID itself is wanted, not its name.
            lookup = {"regclass": "meansql_regclass", "regtype": "meansql_regtype"}.get(_type_name(node.this.to))
            if lookup:
                return _call(lookup, exp.cast(self._walk(node.this.this, ctes), "VARCHAR"))
        for key, value in list(node.args.items()):
            if isinstance(value, exp.Expr):
                node.set(key, self._walk(value, ctes))
            elif isinstance(value, list):
                node.set(key, [self._walk(v, ctes) if isinstance(v, exp.Expr) else v for v in value])
        return self._node(node, ctes)

    def _node(self, node: exp.Expr, ctes: set[str]) -> exp.Expr:
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Func):
            alias = node.args.get("alias")
            if isinstance(alias, exp.TableAlias) and alias.this and not alias.columns:
                # FROM generate_series(...) s: in Postgres s is the value, in DuckDB the row.
                alias.set("columns", [exp.to_identifier(alias.name)])
            if node.db.lower() == "pg_catalog":
                node.set("db", None)
            return node
        if isinstance(node, exp.Table) and not node.args.get("catalog"):
            schema, name = node.db.lower(), node.name.lower()
            if schema == "pg_catalog" or (not schema and name in TABLES and name not in ctes):
                if name in TABLES or name in _EMPTY_TABLES:
                    return self._table(node, name)
            if schema == "pg_catalog":
                node.set("db", None)  # a function (generate_series) or DuckDB's own pg_catalog view
            if schema == "information_schema" and name in INFORMATION_SCHEMA:
                return self._table(node, f"information_schema_{name}")
            if schema == "public":
                node.set("db", exp.to_identifier("main"))
            return node
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) \
                and node.this.name.lower() in ("pg_catalog", "information_schema") \
                and not isinstance(node.expression, exp.Identifier):
            return node.expression
        if isinstance(node, exp.Column) and node.db.lower() in ("pg_catalog", "information_schema"):
            node.set("db", None)  # pg_catalog.pg_class.relname: the table keeps its name as alias
            return node
        if isinstance(node, exp.Collate):
            return node.this
        if isinstance(node, exp.Cast):
            return self._cast(node)
        if isinstance(node, exp.CurrentVersion):
            return exp.Literal.string(VERSION)
        if isinstance(node, exp.CurrentDatabase) or isinstance(node, exp.CurrentCatalog):
            return exp.Literal.string(self.database())
        if isinstance(node, exp.CurrentSchema):
            return exp.Literal.string("public")
        if isinstance(node, exp.CurrentUser | exp.SessionUser):
            return exp.Literal.string(self.user())
        if isinstance(node, exp.Anonymous):
            name = node.name.lower()
            if name == "current_setting" and node.expressions:
                key = _string_arg(node.expressions[0])
                if key is not None and key.lower() in self.settings:
                    return exp.Literal.string(self.settings[key.lower()])
                return node
            if name == "version" and not node.expressions:
                return exp.Literal.string(VERSION)
            if name in ("current_database", "current_catalog") and not node.expressions:
                return exp.Literal.string(self.database())
            if name == "current_schema" and not node.expressions:
                return exp.Literal.string("public")
            if name in ("current_user", "session_user") and not node.expressions:
                return exp.Literal.string(self.user())
            if name == "json_build_object":
                return exp.Anonymous(this="json_object", expressions=node.expressions)
            if name == "current_schemas":
                return exp.Array(expressions=[exp.Literal.string("pg_catalog"), exp.Literal.string("public")])
            if name in _MACROS:
                return _call(name, *node.expressions)
        if isinstance(node, exp.Func) and node.sql_name().lower() in _MACROS and not isinstance(node, exp.Anonymous):
            return _call(node.sql_name().lower(), *[a for a in node.args.values() if isinstance(a, exp.Expr)])
        return node

    def _table(self, node: exp.Table, name: str) -> exp.Expr:
        alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(node.name))
        table = _qualified(name)
        table.set("alias", alias)
        if name == "pg_database":
            # The database is known by the name the client connected with.
            select = exp.select(exp.Star(**{"replace": [exp.alias_(exp.Literal.string(self.database()),
                                                                   "datname")]})).from_(_qualified(name))
            return exp.Subquery(this=select, alias=alias)
        return table

    def _cast(self, node: exp.Cast) -> exp.Expr:
        to = _type_name(node.to)
        inner = node.this
        literal = _string_arg(inner)
        if to in ("regclass", "regtype", "regnamespace", "regproc", "regprocedure"):
            if literal is not None:
                if to == "regclass":
                    return _call("meansql_regclass", exp.Literal.string(_relname(literal)))
                if to == "regtype":
                    return _call("meansql_regtype", exp.Literal.string(literal.lower()))
                if to == "regnamespace":
                    return _call("meansql_regnamespace", exp.Literal.string(_relname(literal)))
                return exp.cast(inner, "BIGINT")
            if isinstance(inner, exp.Placeholder | exp.Parameter):
                # A bound parameter holds a name: $1::regclass looks it up.
                lookup = {"regclass": "meansql_regclass", "regtype": "meansql_regtype",
                          "regnamespace": "meansql_regnamespace"}.get(to)
                if lookup:
                    return _call(lookup, exp.cast(inner, "VARCHAR"))
            # An OID shown as a regclass/regtype prints as its name.
            if to == "regclass":
                return _call("meansql_regclass_name", inner)
            if to == "regtype":
                return _call("format_type", inner, exp.Literal.number(-1))
            if to == "regnamespace":
                return _call("meansql_regnamespace_name", inner)
            return exp.cast(inner, "VARCHAR")
        if to in ("oid", "xid", "cid", "tid", "regrole"):
            return exp.cast(inner, "BIGINT")
        if to in ("name", "text", "char", "bpchar"):
            return exp.cast(inner, "VARCHAR")
        return node


def column_oids(sql: str) -> dict[str, int]:
    """Result columns of a client's catalog query whose PostgreSQL type DuckDB cannot carry (oid, oid[]).

    asyncpg decodes only oid[] and text[] among arrays without asking the server about them, so its type
    introspection must describe attrtypoids as oid[]: as int8[] (what DuckDB's BIGINT[] is sent as) asyncpg
    asks about int8[] with the same query, again and again.
    """
    if "typeinfo_tree" in sql:
        return _ASYNCPG_COLUMN_OIDS
    return {}


_ASYNCPG_COLUMN_OIDS = {"oid": types.OID, "basetype": types.OID, "elemtype": types.OID, "range_subtype": types.OID,
                        "attrtypoids": types.ARRAY_OIDS[types.OID], "attrnames": types.ARRAY_OIDS[types.TEXT]}


# asyncpg's recursive type introspection (introspection.py), for the types meansql knows:
# the requested types and, for arrays, their element types.
_ASYNCPG_TYPES = f"""
WITH wanted AS (SELECT unnest($1::BIGINT[]) AS oid),
info AS (
    SELECT t.oid, 'pg_catalog' AS ns, t.typname AS name, CASE WHEN t.typname = 'record' THEN 'p' ELSE 'b' END
           AS kind, NULL::BIGINT AS basetype, CASE WHEN t.typelem <> 0 THEN t.typelem END AS elemtype,
           CASE WHEN t.typelem <> 0 THEN ',' END AS elemdelim, NULL::BIGINT AS range_subtype,
           NULL::BIGINT[] AS attrtypoids, NULL::VARCHAR[] AS attrnames
    FROM {CATALOG}.main.meansql_types t
),
tree AS (
    SELECT i.*, 0 AS depth FROM info i WHERE i.oid IN (SELECT oid FROM wanted)
    UNION ALL
    SELECT e.*, 1 AS depth FROM info i JOIN info e ON e.oid = i.elemtype WHERE i.oid IN (SELECT oid FROM wanted)
)
SELECT DISTINCT tree.*, NULL::VARCHAR AS basetype_name,
       (SELECT fmt FROM {CATALOG}.main.meansql_types t WHERE t.oid = tree.elemtype) AS elemtype_name,
       NULL::VARCHAR AS range_subtype_name
FROM tree ORDER BY depth DESC
"""
