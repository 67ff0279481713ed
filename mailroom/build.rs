// `sqlx::migrate!` embeds ../migrations at compile time; without this, adding a migration file
// does not rebuild the crate and a stale binary runs without it (sqlx's documented fix).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
