//! ImageNet-1k class names from timm's `_info` files (PyPI `timm`, Apache-2.0):
//! `imagenet_synsets.txt` lists the 1000 WordNet synsets in the standard class order and
//! `imagenet_synset_to_lemma.txt` maps each synset to its names (`n02123045<TAB>tabby, tabby
//! cat`). The label of a class is its first name ("tabby"), short enough for overlays and
//! messages; two names repeat in ImageNet ("crane" the bird and the machine, "maillot"), as
//! in every common label list, and the class index tells them apart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const SYNSETS_FILE: &str = "imagenet_synsets.txt";
pub const LEMMAS_FILE: &str = "imagenet_synset_to_lemma.txt";
pub const IMAGENET_CLASSES: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("cannot read {path}: {source} (scripts/setup.sh fetches it from the PyPI timm wheel)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Format {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path} lists {found} synsets, ImageNet-1k has {IMAGENET_CLASSES}")]
    Count { path: PathBuf, found: usize },
}

/// The 1000 ImageNet-1k class names, index = class id, from the two timm files in `dir`.
pub fn imagenet(dir: &Path) -> Result<Vec<String>, LabelsError> {
    let synsets_path = dir.join(SYNSETS_FILE);
    let lemmas_path = dir.join(LEMMAS_FILE);
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| LabelsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let synsets_text = read(&synsets_path)?;
    let lemmas_text = read(&lemmas_path)?;
    imagenet_from_text(&synsets_text, &lemmas_text, &synsets_path, &lemmas_path)
}

/// [`imagenet`] on the two files' texts; the paths name them in errors.
pub fn imagenet_from_text(
    synsets_text: &str,
    lemmas_text: &str,
    synsets_path: &Path,
    lemmas_path: &Path,
) -> Result<Vec<String>, LabelsError> {
    let mut lemmas = HashMap::new();
    for (i, line) in lemmas_text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (synset, names) = line.split_once('\t').ok_or_else(|| LabelsError::Format {
            path: lemmas_path.to_path_buf(),
            line: i + 1,
            reason: "expected `synset<TAB>names`".into(),
        })?;
        lemmas.insert(synset.trim(), names);
    }

    let mut labels = Vec::with_capacity(IMAGENET_CLASSES);
    for (i, synset) in synsets_text.lines().map(str::trim).enumerate() {
        if synset.is_empty() {
            continue;
        }
        let names = lemmas.get(synset).ok_or_else(|| LabelsError::Format {
            path: synsets_path.to_path_buf(),
            line: i + 1,
            reason: format!("synset {synset} has no names in {LEMMAS_FILE}"),
        })?;
        let first = names.split(',').next().unwrap_or(names).trim();
        if first.is_empty() {
            return Err(LabelsError::Format {
                path: lemmas_path.to_path_buf(),
                line: 0,
                reason: format!("synset {synset} has an empty name"),
            });
        }
        labels.push(first.to_owned());
    }
    if labels.len() != IMAGENET_CLASSES {
        return Err(LabelsError::Count {
            path: synsets_path.to_path_buf(),
            found: labels.len(),
        });
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_timm_files_give_the_standard_order() -> Result<(), LabelsError> {
        let dir = crate::test_deps("data/imagenet");
        let labels = imagenet(&dir)?;
        assert_eq!(labels[0], "tench");
        assert_eq!(labels[281], "tabby");
        assert_eq!(labels[282], "tiger cat");
        assert_eq!(labels[285], "Egyptian cat");
        assert_eq!(labels[967], "espresso");
        assert_eq!(labels[999], "toilet tissue");
        Ok(())
    }

    #[test]
    fn a_missing_folder_names_the_file() {
        let err = imagenet(Path::new("/nonexistent")).expect_err("read");
        assert!(
            err.to_string()
                .contains("/nonexistent/imagenet_synsets.txt")
        );
    }
}
