//! A CSV list of `path,label` rows: paths relative to the CSV file's folder (or absolute),
//! label names; an optional header row; fields may be double-quoted (`"a, b.png",cat`).

use std::path::{Path, PathBuf};

use super::decode::dataset_from_files;
use super::{DataError, Dataset, sorted_classes};

/// Splits one CSV line into fields; `None` when a quote is not closed.
fn fields(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                out.push(finish(&mut field, was_quoted));
                was_quoted = false;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    out.push(finish(&mut field, was_quoted));
    Some(out)
}

fn finish(field: &mut String, quoted: bool) -> String {
    let f = std::mem::take(field);
    if quoted { f } else { f.trim().to_owned() }
}

/// A first row such as `path,label` / `file,class` / `filename,category`.
fn is_header(f: &[String]) -> bool {
    let first = [
        "path",
        "file",
        "filename",
        "file_name",
        "image",
        "image_path",
    ];
    let second = ["label", "class", "category", "class_name", "target"];
    f.len() == 2
        && first.contains(&f[0].to_ascii_lowercase().as_str())
        && second.contains(&f[1].to_ascii_lowercase().as_str())
}

/// Loads the images a CSV lists; class ids follow the sorted label names.
pub(crate) fn load(file: &Path) -> Result<Dataset, DataError> {
    if file.is_dir() {
        return Err(DataError::CsvLine {
            path: file.to_path_buf(),
            line: 0,
            reason: "this is a directory, not a CSV file (use folder:PATH for image folders)"
                .into(),
        });
    }
    let text = std::fs::read_to_string(file).map_err(DataError::io(file))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut rows: Vec<(PathBuf, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let bad = |reason: String| DataError::CsvLine {
            path: file.to_path_buf(),
            line: line_no,
            reason,
        };
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let f = fields(line).ok_or_else(|| bad("a quoted field is not closed".into()))?;
        if rows.is_empty() && is_header(&f) {
            continue;
        }
        if f.len() != 2 {
            return Err(bad(format!(
                "expected 2 fields `path,label`, found {}: `{trimmed}`",
                f.len()
            )));
        }
        if f[0].is_empty() || f[1].is_empty() {
            return Err(bad(format!(
                "empty {} in `{trimmed}`",
                if f[0].is_empty() { "path" } else { "label" }
            )));
        }
        let path = base.join(&f[0]);
        if !path.is_file() {
            return Err(bad(format!("image {} does not exist", path.display())));
        }
        rows.push((path, f[1].clone()));
    }
    if rows.is_empty() {
        return Err(DataError::CsvEmpty {
            path: file.to_path_buf(),
        });
    }
    let classes = sorted_classes(rows.iter().map(|(_, l)| l.as_str()));
    let labels: Vec<usize> = rows
        .iter()
        .map(|(_, l)| classes.binary_search(l).unwrap_or_default())
        .collect();
    let paths: Vec<PathBuf> = rows.into_iter().map(|(p, _)| p).collect();
    dataset_from_files("CSV list", file, classes, labels, &paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_handle_quotes_and_spaces() {
        assert_eq!(
            fields("a.png, cat"),
            Some(vec!["a.png".into(), "cat".into()])
        );
        assert_eq!(
            fields("\"x, y.png\",\"big \"\"dog\"\"\""),
            Some(vec!["x, y.png".into(), "big \"dog\"".into()])
        );
        assert_eq!(fields("\"open,cat"), None);
        assert_eq!(fields("a,b,c").map(|f| f.len()), Some(3));
    }

    #[test]
    fn header_is_recognised() {
        let h = |a: &str, b: &str| is_header(&[a.to_owned(), b.to_owned()]);
        assert!(h("path", "label"));
        assert!(h("Filename", "Class"));
        assert!(!h("img1.png", "cat"));
    }
}
