-- Top identities by PHI volume: the $limit identities that touched the most distinct patients in
-- the period, with their records.
-- Parameters: $from, $to — RFC 3339 times, $to excluded; $limit (integer).
SELECT identity, count(DISTINCT patient) AS distinct_patients, count(*) AS patient_references
FROM (
    SELECT identity, unnest(patients) AS patient FROM events
    WHERE kind = 'data_access' AND outcome = 'success' AND time >= $from AND time < $to
)
GROUP BY identity
ORDER BY distinct_patients DESC, identity
LIMIT $limit
