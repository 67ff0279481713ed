//! The fixed-width tables the operator commands print (`dead list`, `suppressions list`,
//! `identities list`, `status`): a header line, one line per row, each column padded to its
//! width and two spaces apart, the last column unpadded; and, when asked, a count line.

use std::fmt;

/// How a column's cells are padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One column: its header and the width its cells (and header) are padded to.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub header: &'static str,
    pub width: usize,
    pub align: Align,
}

impl Column {
    /// A column padded on the right (text).
    pub const fn left(header: &'static str, width: usize) -> Self {
        Self {
            header,
            width,
            align: Align::Left,
        }
    }

    /// A column padded on the left (numbers).
    pub const fn right(header: &'static str, width: usize) -> Self {
        Self {
            header,
            width,
            align: Align::Right,
        }
    }

    /// The last column: never padded, so lines carry no trailing spaces of ours.
    pub const fn last(header: &'static str) -> Self {
        Self::left(header, 0)
    }

    fn pad(&self, f: &mut fmt::Formatter<'_>, cell: &str) -> fmt::Result {
        let width = self.width;
        match self.align {
            Align::Left => write!(f, "{cell:<width$}"),
            Align::Right => write!(f, "{cell:>width$}"),
        }
    }
}

/// Rows of cells under headers. `Display` renders every line, each ending in a newline, so a
/// command prints it with `print!("{table}")` (or `write!` to its writer).
#[derive(Debug)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
    count: Option<&'static str>,
}

impl Table {
    pub fn new(columns: impl Into<Vec<Column>>) -> Self {
        Self {
            columns: columns.into(),
            rows: Vec::new(),
            count: None,
        }
    }

    /// Ends the table with a line `<rows> <noun>`, e.g. `3 dead letters`.
    pub fn counted(mut self, noun: &'static str) -> Self {
        self.count = Some(noun);
        self
    }

    /// Adds a row, one cell per column.
    pub fn row<I>(&mut self, cells: I)
    where
        I: IntoIterator,
        I::Item: fmt::Display,
    {
        let cells: Vec<String> = cells.into_iter().map(|c| c.to_string()).collect();
        debug_assert_eq!(cells.len(), self.columns.len(), "one cell per column");
        self.rows.push(cells);
    }

    fn line<'a>(
        &self,
        f: &mut fmt::Formatter<'_>,
        cells: impl Iterator<Item = &'a str>,
    ) -> fmt::Result {
        for (i, (column, cell)) in self.columns.iter().zip(cells).enumerate() {
            if i > 0 {
                f.write_str("  ")?;
            }
            column.pad(f, cell)?;
        }
        f.write_str("\n")
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.line(f, self.columns.iter().map(|c| c.header))?;
        for row in &self.rows {
            self.line(f, row.iter().map(String::as_str))?;
        }
        if let Some(noun) = self.count {
            writeln!(f, "{} {noun}", self.rows.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_every_column_but_the_last() {
        let mut t = Table::new([
            Column::left("NAME", 6),
            Column::right("N", 3),
            Column::last("NOTE"),
        ])
        .counted("rows");
        t.row(["ada", "7", "first"]);
        t.row(["grace", "42", ""]);
        assert_eq!(
            t.to_string(),
            "NAME      N  NOTE\nada       7  first\ngrace    42  \n2 rows\n"
        );
    }

    #[test]
    fn matches_the_format_strings_it_replaces() {
        let mut t = Table::new([
            Column::left("JOB", 36),
            Column::right("ATT", 3),
            Column::last("LAST ERROR"),
        ]);
        t.row(["j1".to_string(), 12.to_string(), "boom".to_string()]);
        let header = format!("{:<36}  {:>3}  LAST ERROR\n", "JOB", "ATT");
        let row = format!("{:<36}  {:>3}  {}\n", "j1", 12, "boom");
        assert_eq!(t.to_string(), header + &row);
    }
}
