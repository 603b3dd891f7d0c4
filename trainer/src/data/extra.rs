//! Extra data merged into a base data set: a second labelled folder, typically the frames
//! `visionclassify` captured (`CAPTURE/<predicted-label>/<sensor>-<pts>.png` + `.json`) after a
//! person fixed their labels by moving files between class folders.

use std::path::{Path, PathBuf};

use super::decode::decode_all;
use super::folder::labelled_files;
use super::split::split_per_class;
use super::{DataError, Dataset, Image, SplitFractions, Splits};

/// What [`merge_extra`] added: the extra images' share of each split (indices into the merged
/// data set, sorted).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraPart {
    pub folder: PathBuf,
    pub splits: Splits,
}

impl ExtraPart {
    /// One line for the balance report: how many extra images went to each split.
    pub fn summary(&self) -> String {
        format!(
            "extra data {}: {} image(s): train {}, val {}, test {}",
            self.folder.display(),
            self.splits.train.len() + self.splits.val.len() + self.splits.test.len(),
            self.splits.train.len(),
            self.splits.val.len(),
            self.splits.test.len()
        )
    }
}

/// Grey as the element's grey models see it (ITU-R BT.601 luma).
fn to_grey(img: &Image) -> Image {
    if img.channels == 1 {
        return img.clone();
    }
    let pixels = img
        .pixels
        .chunks_exact(3)
        .map(|p| {
            let y = 299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2]);
            ((y + 500) / 1000) as u8
        })
        .collect();
    Image {
        width: img.width,
        height: img.height,
        channels: 1,
        pixels,
    }
}

/// Loads the class folders of `dir` (each must name a class of `base`; see
/// `folder::labelled_files`), converts the images to `base`'s channel count, appends them to
/// `base`, splits them per class with `fractions` and `seed` (every class keeps at least one
/// training image) and adds each part to the matching split of `splits`.
///
/// The extra images always get a test share (`fractions.test`), also when `base` has a test
/// set of its own, so that the captured frames are held out too.
pub fn merge_extra(
    base: &mut Dataset,
    splits: &mut Splits,
    dir: &Path,
    fractions: SplitFractions,
    seed: u64,
) -> Result<ExtraPart, DataError> {
    fractions.validate()?;
    let (paths, labels) = labelled_files(dir, &base.classes)?;
    let channels = base.channels();
    let images = decode_all(&paths)?
        .into_iter()
        .map(|img| match (channels, img.channels) {
            (1, 3) => to_grey(&img),
            (3, 1) => img.to_rgb(),
            _ => img,
        })
        .collect::<Vec<_>>();
    let start = base.len();
    base.images.extend(images);
    base.labels.extend(labels);
    base.origins
        .extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
    base.description = format!(
        "{} + {} extra image(s) from {}",
        base.description,
        paths.len(),
        dir.display()
    );
    base.validate()?;
    let added: Vec<usize> = (start..base.len()).collect();
    // Another stream than the base split's, so adding extra data leaves the base split as is.
    let part = split_per_class(base, &added, fractions, seed ^ 0xe7_7a_da_7a);
    for (all, extra) in [
        (&mut splits.train, &part.train),
        (&mut splits.val, &part.val),
        (&mut splits.test, &part.test),
    ] {
        all.extend_from_slice(extra);
    }
    splits.check_disjoint(base)?;
    Ok(ExtraPart {
        folder: dir.to_path_buf(),
        splits: part,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(v: u8) -> Image {
        Image {
            width: 2,
            height: 2,
            channels: 1,
            pixels: vec![v; 4],
        }
    }

    #[test]
    fn extra_images_are_split_and_appended() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut base = Dataset {
            classes: vec!["a".into(), "b".into()],
            images: (0..4).map(|i| grey(i as u8)).collect(),
            labels: vec![0, 0, 1, 1],
            origins: (0..4).map(|i| format!("base{i}")).collect(),
            predefined_test: None,
            description: "toy".into(),
        };
        let mut splits = Splits {
            train: vec![0, 2],
            val: vec![1],
            test: vec![3],
        };
        std::fs::create_dir_all(dir.path().join("b"))?;
        for i in 0..10 {
            // Colour captures into a grey data set become grey.
            let img = Image {
                width: 3,
                height: 2,
                channels: 3,
                pixels: [200, 100, 50].repeat(6),
            };
            super::super::decode::write_png(&img, &dir.path().join(format!("b/cam-{i}.png")))?;
            std::fs::write(dir.path().join(format!("b/cam-{i}.json")), "{}")?;
        }
        let fractions = SplitFractions {
            train: 0.6,
            val: 0.2,
            test: 0.2,
        };
        let part = merge_extra(&mut base, &mut splits, dir.path(), fractions, 3)?;
        assert_eq!(base.len(), 14);
        assert_eq!(base.channels(), 1);
        assert_eq!(base.images[13].pixels[0], 124);
        assert_eq!(
            (
                part.splits.train.len(),
                part.splits.val.len(),
                part.splits.test.len()
            ),
            (6, 2, 2)
        );
        assert!(
            part.splits
                .test
                .iter()
                .all(|&i| i >= 4 && splits.test.contains(&i))
        );
        assert_eq!(
            splits.train.len() + splits.val.len() + splits.test.len(),
            14
        );
        assert!(part.summary().contains("train 6, val 2, test 2"));
        Ok(())
    }
}
