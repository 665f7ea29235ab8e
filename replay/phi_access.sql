-- PHI access by integration: per identity over the period, the distinct (pseudonymised) patients
-- whose data it touched, the records and calls, and the resource types.
-- Parameters: $from, $to — RFC 3339 times, $to excluded.
WITH access AS (
    SELECT identity, patients, records, resource_type FROM events
    WHERE kind = 'data_access' AND outcome = 'success' AND time >= $from AND time < $to
),
totals AS (
    SELECT identity, count(*) AS calls, COALESCE(sum(records), 0) AS records
    FROM access
    GROUP BY identity
),
patients AS (
    SELECT identity, count(DISTINCT patient) AS distinct_patients
    FROM (SELECT identity, unnest(patients) AS patient FROM access)
    GROUP BY identity
),
types AS (
    SELECT identity, array_to_string(array_sort(array_agg(resource_type)), ',') AS resource_types
    FROM (SELECT DISTINCT identity, resource_type FROM access WHERE resource_type IS NOT NULL)
    GROUP BY identity
)
SELECT t.identity,
       COALESCE(p.distinct_patients, 0) AS distinct_patients,
       t.calls,
       t.records,
       COALESCE(y.resource_types, '') AS resource_types
FROM totals t
LEFT JOIN patients p ON p.identity = t.identity
LEFT JOIN types y ON y.identity = t.identity
ORDER BY distinct_patients DESC, t.identity
