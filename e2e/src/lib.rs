//! Mailroom's end-to-end suite lives in `tests/e2e/`; this crate has no code of its own. Run it
//! with `scripts/test -p mailroom-e2e` (docs/testing.md says what each module covers).
