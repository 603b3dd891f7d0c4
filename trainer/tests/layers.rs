//! The trainer's modules are layers that import one way (ARCHITECTURE.md, "The trainer"): a
//! module names (`crate::x`) only modules of the layers before it, and no two files of one
//! folder name each other (`super::x`). Read from the sources, so a new import that breaks
//! the order fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Bottom-up; modules in one entry may not name each other.
const LAYERS: &[&[&str]] = &[
    &["batch_norm", "project"],
    &["onnx"],
    &["import"],
    &["data"],
    &["report"],
    &["model"],
    &["train"],
    &["optimize", "quantize"],
    &["retrain"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The identifiers that follow `prefix` in `text` (`crate::` → `onnx`, `data`, ...).
fn named_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .filter(|(i, _)| {
            // Not part of a longer path such as `vision_trainer::crate::` or `self::super::`.
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn modules_import_only_from_the_layers_before_them() -> Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src)?;
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs"))
            .context("a file under src/")?;
        let Some(own) = layer_of(top) else {
            continue; // lib.rs, main.rs: above every layer.
        };
        let text = std::fs::read_to_string(file)?;
        for named in named_after(&text, "crate::") {
            let Some(theirs) = layer_of(named) else {
                continue;
            };
            checked += 1;
            if named != top && theirs >= own {
                wrong.push(format!(
                    "{} names crate::{named} (layer {theirs} ≥ its own {own})",
                    relative.display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order:\n{}",
        wrong.join("\n")
    );
    assert!(
        checked > 50,
        "only {checked} crate:: paths found: is the parser right?"
    );
    Ok(())
}

#[test]
fn no_two_files_of_a_folder_import_each_other() -> Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    // (folder, module) → the sibling modules it names with `super::`.
    let mut edges: BTreeMap<(PathBuf, String), Vec<String>> = BTreeMap::new();
    for file in &files {
        let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if stem == "mod" {
            continue; // A folder's mod.rs is its parent, not a sibling.
        }
        let folder = file.parent().context("a file in a folder")?.to_path_buf();
        let text = std::fs::read_to_string(file)?;
        // Only the file's own code, not its `mod tests` (which may use anything).
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let mut named: Vec<String> = named_after(code, "super::")
            .into_iter()
            .filter(|n| *n != stem && folder.join(format!("{n}.rs")).is_file())
            .map(str::to_owned)
            .collect();
        named.sort();
        named.dedup();
        edges.insert((folder, stem.to_owned()), named);
    }
    let mut cycles = Vec::new();
    for ((folder, module), named) in &edges {
        for other in named {
            let back = edges
                .get(&(folder.clone(), other.clone()))
                .is_some_and(|n| n.contains(module));
            if back && module < other {
                cycles.push(format!("{}: {module} ↔ {other}", folder.display()));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules importing each other:\n{}",
        cycles.join("\n")
    );
    Ok(())
}

#[test]
fn the_parser_finds_paths() {
    let text = "use crate::onnx::graph;\nlet x = crate::data::load(); vision_trainer::crate::no;";
    assert_eq!(named_after(text, "crate::"), ["onnx", "data"]);
    assert_eq!(named_after("use super::run::{self};", "super::"), ["run"]);
}
