#!/usr/bin/env python3
"""Saved compliance queries: nhiwatch (DataFusion) against DuckDB on the same Parquet files.

Usage: benches/duckdb_compare.py ARCHIVE REGISTRY [--repeat N] [--json OUT]

Runs every replay/*.sql with nhiwatch (`nhiwatch query --repeat N`: the archive opened once,
as the server does, then the fastest and median of N runs) and with DuckDB (`pip install
duckdb numpy pytz`; views over the same files with hive partitioning, the registry loaded as a table, the
same SQL where the dialects agree: `to_unixtime` is DuckDB's `epoch`, and `scope_contains` is a
Python UDF implementing the same SMART containment). Prints per-query times, row counts (which
must agree) and the geometric mean of the ratios, and writes them as JSON.
"""
import argparse, json, math, os, re, statistics, subprocess, sys, time, tomllib

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NHIWATCH = os.environ.get("NHIWATCH", os.path.join(ROOT, "target", "release", "nhiwatch"))


def smart(scope):
    # (context, resource, perms) of a SMART v1/v2 scope, or None.
    m = re.fullmatch(r"(patient|user|system)/([A-Za-z*]+)\.([a-z*]+)", scope or "")
    if not m:
        return None
    ctx, res, p = m.groups()
    perms = {"read": "rs", "write": "cud", "*": "cruds"}.get(p, p)
    if not set(perms) <= set("cruds"):
        return None
    return ctx, res, set(perms)


def scope_contains(granted, used):
    g, u = smart(granted), smart(used)
    if g is None or u is None:
        return granted == used
    return g[0] == u[0] and g[1] in ("*", u[1]) and u[2] <= g[2]


def params_for(name, first, last):
    mid_from, mid_to = first, last
    p = {"from": mid_from, "to": mid_to}
    if name in ("dormant_inventory", "inventory_stale"):
        return {"as_of": last, "days": 7}
    if name in ("inventory_unregistered", "inventory_retired_active"):
        return {"as_of": last}
    if name in ("access_after_offboarding", "inventory_incomplete"):
        return {}
    if name == "top_phi_identities":
        p["limit"] = 20
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("archive")
    ap.add_argument("registry")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    con = duckdb.connect()
    # The same two threads and memory ceiling as nhiwatch's default query limit.
    con.execute("SET threads TO 2")
    con.execute("SET memory_limit = '4GiB'")
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{a.archive}/events/*/*.parquet', hive_partitioning = true, hive_types = {{'date': VARCHAR}})")
    con.execute(f"CREATE VIEW findings AS SELECT * FROM read_parquet('{a.archive}/findings/*/*.parquet', hive_partitioning = true, hive_types = {{'date': VARCHAR}})")
    reg = tomllib.load(open(a.registry, "rb"))
    con.execute("CREATE TABLE integrations (id VARCHAR, seen_as VARCHAR, name VARCHAR, owner VARCHAR, purpose VARCHAR, approved_scopes VARCHAR[], onboarded_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, offboarded_at TIMESTAMPTZ)")
    for i in reg.get("integration", []):
        for seen in [i["id"], *i.get("aliases", [])]:
            con.execute("INSERT INTO integrations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                i["id"], seen, i.get("name"), i.get("owner"), i.get("purpose"), i.get("approved_scopes", []),
                i.get("onboarded_at"), i.get("expires_at"), i.get("offboarded_at")])
    con.create_function("scope_contains", scope_contains, ["VARCHAR", "VARCHAR"], "BOOLEAN")
    first, last = con.execute("SELECT strftime(min(time), '%Y-%m-%dT%H:%M:%SZ'), strftime(max(time) + INTERVAL 1 SECOND, '%Y-%m-%dT%H:%M:%SZ') FROM events").fetchone()
    n_events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    one_id, one_day = con.execute("SELECT identity, date FROM events LIMIT 1").fetchone()

    queries = []
    for f in sorted(os.listdir(os.path.join(ROOT, "replay"))):
        if f.endswith(".sql"):
            name = f[:-4]
            queries.append((name, open(os.path.join(ROOT, "replay", f)).read(), params_for(name, first, last)))
    queries.append(("one_identity_one_day", "-- Parameters: $who, $day\nSELECT count(*) AS n, count(DISTINCT resource_type) AS types FROM events WHERE identity = $who AND date = $day",
                    {"who": one_id, "day": str(one_day)}))

    rows = []
    for name, sql, params in queries:
        cmd = [NHIWATCH, "query", "--archive", a.archive, "--registry", a.registry, "--format", "csv", "--repeat", str(a.repeat)]
        for k, v in params.items():
            cmd += ["-p", f"{k}={v}"]
        cmd += ["--", sql]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{name}: nhiwatch failed: {out.stderr}")
        m = re.search(r"fastest ([0-9.]+) ms, median ([0-9.]+) ms", out.stderr)
        nh_fast, nh_med = float(m.group(1)), float(m.group(2))
        nh_rows = max(0, len(out.stdout.strip().splitlines()) - 1)
        dsql = re.sub(r"to_unixtime\(([^()]*(?:\([^()]*\))?[^()]*)\)", r"epoch(CAST(\1 AS TIMESTAMPTZ))", sql)
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            res = con.execute(dsql, params).fetchall()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        rows.append({"query": name, "nhiwatch_ms": nh_fast, "nhiwatch_median_ms": nh_med, "duckdb_ms": times[0],
                     "duckdb_median_ms": times[len(times) // 2], "nhiwatch_rows": nh_rows, "duckdb_rows": len(res),
                     "ratio": nh_fast / times[0]})
    gm = math.exp(statistics.mean(math.log(r["ratio"]) for r in rows))
    print(f"{n_events} events in {a.archive}; fastest of {a.repeat} runs each, 2 threads each")
    print(f"{'query':<26}{'nhiwatch ms':>12}{'duckdb ms':>11}{'ratio':>8}{'rows nh/dd':>14}")
    for r in rows:
        print(f"{r['query']:<26}{r['nhiwatch_ms']:>12.1f}{r['duckdb_ms']:>11.1f}{r['ratio']:>8.2f}{r['nhiwatch_rows']:>7}/{r['duckdb_rows']:<6}")
    print(f"geometric mean of nhiwatch/duckdb: {gm:.2f} (below 1: nhiwatch faster)")
    if a.json:
        json.dump({"events": n_events, "queries": rows, "geomean_ratio": gm}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
