//! Image folders: one sub-folder per class, PNG/JPEG files inside; and writing a subset of a
//! dataset back out in that form.

use std::path::{Path, PathBuf};

use super::decode::{dataset_from_files, is_image_file, write_png};
use super::{DataError, Dataset};

/// Sorted entries of `dir` (hidden ones skipped).
fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(DataError::io(dir))? {
        let entry = entry.map_err(DataError::io(dir))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Loads `dir/<class>/<image>`: class ids follow the sorted folder names; files that are not
/// PNG/JPEG (by extension) and hidden entries are skipped; an empty class folder is an error.
pub(crate) fn load(dir: &Path) -> Result<Dataset, DataError> {
    if !dir.exists() {
        return Err(DataError::NotFound {
            path: dir.to_path_buf(),
        });
    }
    if !dir.is_dir() {
        return Err(DataError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut classes = Vec::new();
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for class_dir in entries(dir)?.into_iter().filter(|p| p.is_dir()) {
        let files: Vec<PathBuf> = entries(&class_dir)?
            .into_iter()
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        if files.is_empty() {
            return Err(DataError::EmptyClassFolder { folder: class_dir });
        }
        let name = class_dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        labels.extend(std::iter::repeat_n(classes.len(), files.len()));
        paths.extend(files);
        classes.push(name);
    }
    if classes.is_empty() {
        return Err(DataError::NoClassFolders {
            path: dir.to_path_buf(),
        });
    }
    dataset_from_files("image folder", dir, classes, labels, &paths)
}

/// The image files of `dir/<class>/` with the id of their class in `known`, for extra data
/// (frames `visionclassify` captured into `<predicted-label>/`, relabelled by moving them).
/// A folder matches a class by its name or its sanitised name ([`sanitise`]); a folder that
/// names no known class is an error naming it; a class without a folder, an empty folder and
/// files that are not PNG/JPEG (the captures' `.json` sidecars) are skipped.
pub(crate) fn labelled_files(
    dir: &Path,
    known: &[String],
) -> Result<(Vec<PathBuf>, Vec<usize>), DataError> {
    if !dir.is_dir() {
        return Err(if dir.exists() {
            DataError::NotADirectory {
                path: dir.to_path_buf(),
            }
        } else {
            DataError::NotFound {
                path: dir.to_path_buf(),
            }
        });
    }
    let (mut paths, mut labels) = (Vec::new(), Vec::new());
    for class_dir in entries(dir)?.into_iter().filter(|p| p.is_dir()) {
        let name = class_dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let id = known
            .iter()
            .position(|c| *c == name)
            .or_else(|| known.iter().position(|c| sanitise(c) == name))
            .ok_or_else(|| DataError::UnknownExtraClass {
                folder: dir.to_path_buf(),
                class: name.clone(),
                known: known.to_vec(),
            })?;
        for file in entries(&class_dir)?
            .into_iter()
            .filter(|p| p.is_file() && is_image_file(p))
        {
            paths.push(file);
            labels.push(id);
        }
    }
    if paths.is_empty() {
        return Err(DataError::NoExtraImages {
            path: dir.to_path_buf(),
        });
    }
    Ok((paths, labels))
}

/// A class name as a folder name: letters, digits, `-`, `_` and `.` are kept, anything else
/// (`/`, spaces, ...) becomes `_`; a name that would be empty or hidden gets a `class` prefix.
pub(crate) fn sanitise(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("class{s}")
    } else {
        s
    }
}

/// Writes the images at `indices` as PNGs into `<dir>/<class name sanitised>/<index>.png`
/// (index = position in `ds`), creating `dir` if needed, and returns how many were written
/// (an index listed twice is written once).
///
/// `dir` must be new or empty, so that the folder holds exactly these images when it is
/// loaded back. Only classes that have images among `indices` get a folder. Two class names
/// that sanitise to the same folder name get their class id appended.
pub fn write_image_folder(ds: &Dataset, indices: &[usize], dir: &Path) -> Result<usize, DataError> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(DataError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        if std::fs::read_dir(dir)
            .map_err(DataError::io(dir))?
            .next()
            .is_some()
        {
            return Err(DataError::DirNotEmpty {
                path: dir.to_path_buf(),
            });
        }
    }
    let mut unique = indices.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let indices = unique.as_slice();
    for &i in indices {
        if i >= ds.len() {
            return Err(DataError::IndexOutOfRange {
                index: i,
                len: ds.len(),
            });
        }
    }
    let mut names: Vec<String> = ds.classes.iter().map(|c| sanitise(c)).collect();
    for id in 0..names.len() {
        if names[..id].contains(&names[id]) || names[id + 1..].contains(&names[id]) {
            names[id] = format!("{}_{id}", names[id]);
        }
    }
    let counts = ds.class_counts(indices);
    for (id, name) in names.iter().enumerate() {
        if counts[id] > 0 {
            let path = dir.join(name);
            std::fs::create_dir_all(&path).map_err(|e| DataError::Write {
                path,
                reason: e.to_string(),
            })?;
        }
    }
    for &i in indices {
        let path = dir.join(&names[ds.labels[i]]).join(format!("{i}.png"));
        write_png(&ds.images[i], &path)?;
    }
    Ok(indices.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitised_names_are_folder_safe() {
        assert_eq!(sanitise("T-shirt/top"), "T-shirt_top");
        assert_eq!(sanitise("Ankle boot"), "Ankle_boot");
        assert_eq!(sanitise(""), "class");
        assert_eq!(sanitise(".."), "class..");
        assert_eq!(sanitise("é-ok"), "é-ok");
    }

    #[test]
    fn extra_folders_map_to_known_classes_and_skip_sidecars()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let known = vec![
            "T-shirt/top".to_owned(),
            "Bag".to_owned(),
            "Coat".to_owned(),
        ];
        std::fs::create_dir_all(dir.path().join("T-shirt_top"))?;
        std::fs::create_dir_all(dir.path().join("Bag"))?;
        std::fs::write(dir.path().join("Bag/cam0-100.png"), b"not decoded here")?;
        std::fs::write(dir.path().join("Bag/cam0-100.json"), b"{}")?;
        std::fs::write(dir.path().join("T-shirt_top/cam1-7.jpg"), b"x")?;
        std::fs::write(dir.path().join("T-shirt_top/cam1-7.json"), b"{}")?;
        let (paths, labels) = labelled_files(dir.path(), &known)?;
        assert_eq!(labels, [1, 0]);
        assert!(
            paths
                .iter()
                .all(|p| p.extension().is_some_and(|e| e != "json"))
        );

        std::fs::create_dir_all(dir.path().join("Sandal"))?;
        let message = labelled_files(dir.path(), &known)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("`Sandal`"), "{message}");
        assert!(message.contains("T-shirt/top, Bag, Coat"), "{message}");
        Ok(())
    }
}
