-- Every change of a send's status or time writes an entry in this index, several times per
-- email, and no query reads it: dead letters are listed through sends_dead_idx, the
-- dashboard's recent sends and today's counts through sends_updated_idx.
DROP INDEX IF EXISTS sends_status_updated_idx;
