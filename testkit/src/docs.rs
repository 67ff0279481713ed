//! Reads the variable table of docs/configuration.md, so that each binary's tests can compare
//! it with the environment variables its clap definition declares: the table cannot drift
//! from the code.

/// One row: the variable and the binaries column (`ingest; dispatcher `run`, …; dashboard`).
#[derive(Debug, Clone)]
pub struct Documented {
    pub variable: String,
    pub binaries: String,
}

impl Documented {
    /// Whether the row says `binary` (`ingest`, `dispatcher`, `dashboard`) reads it.
    pub fn read_by(&self, binary: &str) -> bool {
        self.binaries
            .split(';')
            .any(|part| part.split_whitespace().next() == Some(binary))
    }
}

/// The rows of docs/configuration.md's table (the lines that start with a backticked name).
pub fn configuration_table() -> Vec<Documented> {
    let text = include_str!("../../docs/configuration.md");
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            Documented {
                variable: cells[0].trim_matches('`').to_owned(),
                binaries: cells.get(3).copied().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// Every environment variable a clap command and its subcommands declare.
pub fn env_names(cmd: &clap::Command) -> Vec<String> {
    let mut names: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for sub in cmd.get_subcommands() {
        names.extend(env_names(sub));
    }
    names.sort();
    names.dedup();
    names
}

/// Panics with every difference between what `binary`'s clap command declares and what the
/// table says it reads.
pub fn assert_table_matches(binary: &str, cmd: &clap::Command) {
    let declared = env_names(cmd);
    let table = configuration_table();
    let documented: Vec<String> = table
        .iter()
        .filter(|d| d.read_by(binary))
        .map(|d| d.variable.clone())
        .collect();
    let missing: Vec<&String> = declared
        .iter()
        .filter(|v| !documented.contains(v))
        .collect();
    let stale: Vec<&String> = documented
        .iter()
        .filter(|v| !declared.contains(v))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/configuration.md and {binary}'s options differ:\n  declared but not in the table \
         (or not marked as read by {binary}): {missing:?}\n  in the table for {binary} but not \
         declared: {stale:?}"
    );
}
