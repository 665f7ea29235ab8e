-- Inventory gap (b), stale inventory: registered integrations, not expired or offboarded by
-- $as_of and onboarded at least $days days before it (or undated), with no activity in the $days
-- days up to $as_of, or none ever (last_seen empty). Activity is a successful data access or
-- token grant. Needs the registry (`integrations`).
-- Parameters: $as_of — RFC 3339 time; $days — integer.
WITH entries AS (
    SELECT DISTINCT id, owner, onboarded_at,
           LEAST(COALESCE(offboarded_at, expires_at), COALESCE(expires_at, offboarded_at)) AS retired_at
    FROM integrations
),
activity AS (
    SELECT i.id, max(e.time) AS last_seen
    FROM events e JOIN integrations i ON i.seen_as = e.identity
    WHERE e.kind IN ('data_access', 'token_issued') AND e.outcome <> 'failure' AND e.time <= $as_of
    GROUP BY i.id
)
SELECT r.id,
       r.owner,
       a.last_seen,
       CAST(floor((to_unixtime($as_of) - to_unixtime(a.last_seen)) / 86400) AS BIGINT) AS silent_days
FROM entries r LEFT JOIN activity a ON a.id = r.id
WHERE (r.retired_at IS NULL OR r.retired_at > $as_of)
  AND (r.onboarded_at IS NULL OR to_unixtime(r.onboarded_at) <= to_unixtime($as_of) - $days * 86400)
  AND (a.last_seen IS NULL OR to_unixtime(a.last_seen) <= to_unixtime($as_of) - $days * 86400)
ORDER BY a.last_seen NULLS FIRST, r.id
