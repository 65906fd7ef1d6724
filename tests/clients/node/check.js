// What node-postgres (pg) makes of meansql's results, printed as JSON for tests/clients/test_node.py.
//
// Usage: node check.js <postgresql://url> <table>
// Each value is reported as {type, value}: type is the JS type (a constructor's name for objects),
// value is JSON-safe (Dates as ISO strings; run with TZ=UTC so they do not depend on the machine).
"use strict";

const { Client } = require("pg");

function describe(v) {
  if (v === null) return { type: "null", value: null };
  if (v instanceof Date) return { type: "Date", value: v.toISOString() };
  if (Array.isArray(v)) return { type: "Array", value: v.map(describe) };
  if (typeof v === "object") return { type: v.constructor.name, value: v };
  return { type: typeof v, value: v };
}

function row(r) {
  const out = {};
  for (const [k, v] of Object.entries(r)) out[k] = describe(v);
  return out;
}

async function main() {
  const [url, table] = process.argv.slice(2);
  const client = new Client({ connectionString: url });
  await client.connect();
  const out = {};
  try {
    await client.query(`DROP TABLE IF EXISTS ${table}`);
    await client.query(
      `CREATE TABLE ${table} (i INTEGER, b BIGINT, f DOUBLE PRECISION, n NUMERIC(10,2), ok BOOLEAN, t TEXT,
       d DATE, ts TIMESTAMP, j JSON, a INTEGER[])`);
    // Extended protocol: every value arrives as a text parameter.
    const insert = await client.query(
      `INSERT INTO ${table} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [42, "9007199254740993", 2.5, "12.3", true, "héllo 'quoted'", "2024-02-29", "2024-02-29 13:14:15.25",
       '{"k": [1, "two", null]}', [1, 2, 3]]);  // json keeps its text as written
    out.insert = { command: insert.command, rowCount: insert.rowCount };
    const param = await client.query(
      "SELECT $1::int + 1 AS next, $2::text || '!' AS shout, $3::int IS NULL AS missing", [41, "hi", null]);
    out.param = row(param.rows[0]);
    // The same row through the simple protocol (no parameters) and the extended one.
    const simple = await client.query(`SELECT * FROM ${table}`);
    out.simple = row(simple.rows[0]);
    out.fields = simple.fields.map((f) => [f.name, f.dataTypeID]);
    const extended = await client.query(`SELECT * FROM ${table} WHERE i = $1 AND t = $2`, [42, "héllo 'quoted'"]);
    out.extended = row(extended.rows[0]);
    out.extendedCount = extended.rowCount;
    // The server's text for each value, before pg parses it.
    const raw = { getTypeParser: () => (text) => text };
    const all = `SELECT *, f + 0.1 AS f2, f / 25000000 AS f3 FROM ${table}`;
    out.rawSimple = (await client.query({ text: all, types: raw })).rows[0];
    out.rawExtended = (await client.query({ text: `${all} WHERE i = $1`, values: [42], types: raw })).rows[0];
  } catch (e) {
    out.error = { code: e.code, message: e.message };
  } finally {
    await client.end();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack) + "\n");
  process.exit(1);
});
