-- Erasure of a person (`DELETE /v1/users/{id}`, issue 19). Their suppression entry stays, so an
-- erased address that bounced is still never mailed, but as a keyed hash instead of the
-- address: `erased:` and the hex SHA-256 of this key and the lower-cased address. The key is
-- 32 random bytes made here, once per database (gen_random_uuid is cryptographically random);
-- it keeps the list's export, the dashboard and logs from naming the address, though anyone
-- with the whole database can test guesses (docs/security.md says so).
CREATE TABLE erasure_key (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    key      BYTEA   NOT NULL
);
INSERT INTO erasure_key (key)
SELECT uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid());

-- What an erased address is stored as in `suppressions.email`. Every suppression check looks
-- for both the address and this (`lower(email) IN (lower($1), suppression_key($1))`, one index).
CREATE FUNCTION suppression_key(address TEXT) RETURNS TEXT
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT 'erased:' || encode(sha256((SELECT key FROM erasure_key)
                                            || convert_to(lower(address), 'UTF8')), 'hex') $$;
