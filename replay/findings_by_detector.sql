-- Findings by detector and status raised in the period, each finding counted once in its latest
-- archived state (a finding is archived each time it changes).
-- Parameters: $from, $to — RFC 3339 times on the finding's first event, $to excluded.
WITH latest AS (
    SELECT *, row_number() OVER (PARTITION BY id ORDER BY count DESC, last_event_time DESC, detected_at DESC) AS rn
    FROM findings
    WHERE event_time >= $from AND event_time < $to
)
SELECT detector, status, severity, count(*) AS findings, sum(count) AS hits
FROM latest WHERE rn = 1
GROUP BY detector, status, severity
ORDER BY detector, status, severity
