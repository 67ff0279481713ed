-- pgbench's ceiling for one signup: a single-row insert of a user-sized row, one transaction.
INSERT INTO bench_users (id, name, email, created_at)
VALUES (gen_random_uuid(), 'bench', md5(random()::text) || '@bench.example', now());
