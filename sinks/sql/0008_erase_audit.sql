-- One row per `cxsignals erase` run, with no personal data: the request id, when and by whom,
-- how many ids were erased, an HMAC of each id only when CX_ERASE_AUDIT_KEY is set (so that
-- whoever holds the key can later answer "was this id erased?"), and what was removed where
-- (places[i] had removed[i] records or rows removed).
CREATE TABLE IF NOT EXISTS {db}.erase_audit
(
    request_id String,
    requested_at DateTime('UTC'),
    finished_at DateTime('UTC'),
    requested_by String,
    ids UInt16,
    id_hmacs Array(String),
    places Array(String),
    removed Array(UInt64),
    status String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(requested_at)
ORDER BY (requested_at, request_id);
