-- Access after offboarding: successful activity by an integration after the registry's
-- offboarding or expiry date (whichever is first), one row per integration with the ids the
-- sources wrote for it (`seen_as`, comma-separated), the first and last such event and how many
-- there were. Needs the registry (`integrations`).
-- Parameters: none.
SELECT i.id,
       array_to_string(array_sort(array_agg(DISTINCT COALESCE(e.source_identity, e.identity))), ',') AS seen_as,
       max(i.owner) AS owner,
       min(LEAST(COALESCE(i.offboarded_at, i.expires_at), COALESCE(i.expires_at, i.offboarded_at))) AS retired_at,
       min(e.time) AS first_after,
       max(e.time) AS last_after,
       count(*) AS events
FROM events e JOIN integrations i ON i.seen_as = e.identity
WHERE e.outcome = 'success'
  AND (i.offboarded_at IS NOT NULL OR i.expires_at IS NOT NULL)
  AND e.time > LEAST(COALESCE(i.offboarded_at, i.expires_at), COALESCE(i.expires_at, i.offboarded_at))
GROUP BY i.id
ORDER BY first_after, i.id
