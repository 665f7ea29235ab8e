-- Inventory gap (c): registered integrations without an owner, a purpose or an expiry date,
-- with the missing keys. Reads only the registry (`integrations`).
-- Parameters: none.
SELECT id,
       concat_ws(',',
                 CASE WHEN owner IS NULL THEN 'owner' END,
                 CASE WHEN purpose IS NULL THEN 'purpose' END,
                 CASE WHEN expires_at IS NULL THEN 'expires_at' END) AS missing
FROM (SELECT DISTINCT id, owner, purpose, expires_at FROM integrations)
WHERE owner IS NULL OR purpose IS NULL OR expires_at IS NULL
ORDER BY id
