-- Dormant inventory: identities whose last activity is at least $days days before $as_of, with
-- the owner the registry names (when the registry is loaded as `integrations`).
-- Parameters: $as_of (RFC 3339 time), $days (integer).
SELECT e.identity,
       max(i.owner) AS owner,
       max(e.time) AS last_seen,
       (to_unixtime($as_of) - to_unixtime(max(e.time))) / 86400 AS days_silent
FROM events e LEFT JOIN integrations i ON i.seen_as = e.identity
WHERE e.time < $as_of
GROUP BY e.identity
HAVING to_unixtime($as_of) - to_unixtime(max(e.time)) >= $days * 86400
ORDER BY last_seen, e.identity
