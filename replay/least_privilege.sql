-- Least privilege: for each identity, every scope it was granted in the period and how many of
-- its data accesses that scope was needed for. A scope with `uses = 0` is an unused permission:
-- a candidate for removal at the next review.
-- Parameters: $from, $to — the period, RFC 3339 times ('2026-01-01T00:00:00Z'), $to excluded.
WITH granted AS (
    SELECT DISTINCT identity, scope
    FROM (SELECT identity, unnest(scopes) AS scope FROM events WHERE time >= $from AND time < $to)
),
used AS (
    SELECT identity, resource_type,
           CASE WHEN interaction IN ('read', 'vread', 'history') THEN 'r'
                WHEN interaction = 'search' THEN 's'
                WHEN interaction = 'create' THEN 'c'
                WHEN interaction IN ('update', 'patch') THEN 'u'
                WHEN interaction = 'delete' THEN 'd' END AS perm,
           count(*) AS n
    FROM events
    WHERE kind = 'data_access' AND outcome = 'success' AND time >= $from AND time < $to
      AND resource_type IS NOT NULL AND interaction IS NOT NULL
    GROUP BY 1, 2, 3
)
SELECT g.identity,
       g.scope,
       COALESCE(sum(u.n) FILTER (
           WHERE u.perm IS NOT NULL
             AND scope_contains(g.scope, split_part(g.scope, '/', 1) || '/' || u.resource_type || '.' || u.perm)
       ), 0) AS uses
FROM granted g LEFT JOIN used u ON u.identity = g.identity
GROUP BY g.identity, g.scope
ORDER BY uses, g.identity, g.scope
