//! Printing listings as a table or as JSON, from one list of JSON rows.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

use super::Format;

/// Prints `rows` (JSON objects) as a table with `columns`, or as one JSON array.
pub fn print_rows(format: Format, columns: &[&str], rows: &[Value]) {
    match format {
        Format::Json => println!("{}", Value::Array(rows.to_vec())),
        Format::Table => println!("{}", table(columns, rows)),
    }
}

/// A table of `rows` with `columns` (header in upper case).
pub fn table(columns: &[&str], rows: &[Value]) -> String {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|c| c.to_uppercase().replace('_', " ")));
    for r in rows {
        t.add_row(columns.iter().map(|c| cell(r.get(*c))));
    }
    t.to_string()
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Standard base64 (for record bytes that are not UTF-8 in JSON output).
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn tables_show_missing_values_as_dashes() {
        let rows = vec![serde_json::json!({"a": 1, "b": null, "c": [1, 2]})];
        let t = table(&["a", "b", "c"], &rows);
        assert!(
            t.contains('A') && t.contains("1,2") && t.contains('-'),
            "{t}"
        );
    }
}
