-- Inventory gap (d): integrations expired or offboarded by $as_of (the earlier date counts) and
-- active after that date, with their latest activity. Activity is a successful data access or
-- token grant. Needs the registry (`integrations`). `access_after_offboarding.sql` lists the
-- same accesses with their first and last time and count.
-- Parameters: $as_of — RFC 3339 time; events up to it count.
WITH entries AS (
    SELECT DISTINCT id, owner,
           LEAST(COALESCE(offboarded_at, expires_at), COALESCE(expires_at, offboarded_at)) AS retired_at,
           CASE WHEN expires_at IS NOT NULL AND (offboarded_at IS NULL OR expires_at < offboarded_at)
                THEN 'expires_at' ELSE 'offboarded_at' END AS retired_by
    FROM integrations
    WHERE offboarded_at IS NOT NULL OR expires_at IS NOT NULL
)
SELECT r.id, r.owner, r.retired_at, r.retired_by, max(e.time) AS last_seen
FROM entries r
JOIN integrations i ON i.id = r.id
JOIN events e ON e.identity = i.seen_as
WHERE e.kind IN ('data_access', 'token_issued') AND e.outcome <> 'failure'
  AND e.time <= $as_of AND r.retired_at <= $as_of AND e.time > r.retired_at
GROUP BY r.id, r.owner, r.retired_at, r.retired_by
ORDER BY r.id
