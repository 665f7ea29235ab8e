-- PHI access by integration: per identity over the period, the distinct (pseudonymised) patients
-- whose data it touched, the records and calls, and the resource types.
-- Parameters: $from, $to — RFC 3339 times, $to excluded.
WITH access AS (
    SELECT * FROM events
    WHERE kind = 'data_access' AND outcome = 'success' AND time >= $from AND time < $to
),
patients AS (
    SELECT identity, count(DISTINCT patient) AS distinct_patients
    FROM (SELECT identity, unnest(patients) AS patient FROM access)
    GROUP BY identity
)
SELECT a.identity,
       COALESCE(max(p.distinct_patients), 0) AS distinct_patients,
       count(*) AS calls,
       COALESCE(sum(a.records), 0) AS records,
       array_to_string(array_sort(array_distinct(array_agg(a.resource_type) FILTER (WHERE a.resource_type IS NOT NULL))), ',') AS resource_types
FROM access a LEFT JOIN patients p ON p.identity = a.identity
GROUP BY a.identity
ORDER BY distinct_patients DESC, a.identity
