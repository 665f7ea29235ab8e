-- Inventory gap (a): non-human identities seen in the audit stream that the registry does not
-- list, most active first. Activity is a successful data access or token grant. Needs the
-- registry (`integrations`).
-- Parameters: $as_of — RFC 3339 time; events up to it count.
SELECT e.identity,
       max(e.time) FILTER (WHERE e.kind IN ('data_access', 'token_issued') AND e.outcome <> 'failure') AS last_seen,
       count(*) FILTER (WHERE e.kind IN ('data_access', 'token_issued') AND e.outcome <> 'failure') AS events
FROM events e LEFT JOIN integrations i ON i.seen_as = e.identity
WHERE e.time <= $as_of AND e.identity_type <> 'user' AND e.kind <> 'sign_in' AND i.id IS NULL
GROUP BY e.identity
ORDER BY events DESC, e.identity
