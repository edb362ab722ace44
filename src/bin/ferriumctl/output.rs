//! What ferriumctl prints: a table for people or JSON for scripts.

use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

impl Output {
    /// Prints `v` with `-o json`, or runs `table` otherwise.
    pub fn print(self, v: &Value, table: impl FnOnce()) {
        match self {
            Output::Json => print_json(v),
            Output::Table => table(),
        }
    }
}

/// `v` as pretty JSON on stdout.
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A JSON value as a table cell: `-` for null, strings without quotes.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `{"a":{"b":1}}` as rows `a.b  1`; arrays of scalars stay on one row.
pub fn flatten(prefix: &str, v: &Value, rows: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, rows);
            }
        }
        Value::Null => rows.push(vec![prefix.to_string(), "-".to_string()]),
        Value::String(s) => rows.push(vec![prefix.to_string(), s.clone()]),
        other => rows.push(vec![prefix.to_string(), other.to_string()]),
    }
}

/// Left-aligned columns two spaces apart, no trailing blanks.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
