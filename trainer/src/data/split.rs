//! Stratified train/val/test splits, their disjointness check, and per-class subsets.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::{DataError, Dataset, Splits};

/// Fractions of each class that go to train, validation and test; they must sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitFractions {
    pub train: f32,
    pub val: f32,
    pub test: f32,
}

impl Default for SplitFractions {
    /// 0.8 / 0.1 / 0.1.
    fn default() -> Self {
        Self {
            train: 0.8,
            val: 0.1,
            test: 0.1,
        }
    }
}

impl SplitFractions {
    /// Checks that each fraction is in 0..=1, train is above 0 and the sum is 1 (±1e-3).
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |reason: &str| DataError::Fractions {
            train: self.train,
            val: self.val,
            test: self.test,
            reason: reason.to_owned(),
        };
        for v in [self.train, self.val, self.test] {
            if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                return Err(bad("each must be between 0 and 1"));
            }
        }
        if self.train <= 0.0 {
            return Err(bad("the training fraction must be above 0"));
        }
        if (self.train + self.val + self.test - 1.0).abs() > 1e-3 {
            return Err(bad("they must sum to 1"));
        }
        Ok(())
    }
}

/// How many of `n` images go to a split of fraction `f`: rounded, but at least 1 when the
/// fraction is above 0 and the class has 3 or more images, so that every class is represented
/// in validation and test even in a small dataset.
fn share(n: usize, f: f32) -> usize {
    let k = (n as f64 * f64::from(f)).round() as usize;
    if k == 0 && f > 0.0 && n >= 3 { 1 } else { k }
}

/// Pixel content shared across splits (the same picture under two names or indices), found by
/// hashing: reported, not an error (Fashion-MNIST itself has a few such duplicates).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DuplicateReport {
    /// Images of val/test whose exact pixels also occur in an earlier split (train, or train
    /// and val for test).
    pub cross_split: usize,
    /// Up to 10 `(earlier split's index, later split's index)` pairs.
    pub examples: Vec<(usize, usize)>,
}

const SPLIT_NAMES: [&str; 3] = ["train", "val", "test"];

fn content_hash(img: &super::Image) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (img.width, img.height, img.channels).hash(&mut h);
    img.pixels.hash(&mut h);
    h.finish()
}

impl Splits {
    /// Splits every class on its own with the given fractions, shuffled with `seed` (the same
    /// seed gives the same splits). When the dataset defines its own test set
    /// (`predefined_test`), that is the test split exactly and the other images are split
    /// train:val in the ratio `f.train : f.val` (`f.test` is then ignored).
    ///
    /// Each split's indices are sorted. Fails when a class would get no training image.
    pub fn stratified(ds: &Dataset, f: SplitFractions, seed: u64) -> Result<Splits, DataError> {
        f.validate()?;
        let mut test = Vec::new();
        let mut in_test = vec![false; ds.len()];
        if let Some(pre) = &ds.predefined_test {
            for &i in pre {
                if i >= ds.len() {
                    return Err(DataError::IndexOutOfRange {
                        index: i,
                        len: ds.len(),
                    });
                }
                in_test[i] = true;
            }
            test = pre.clone();
        }
        let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); ds.num_classes()];
        for (i, &label) in ds.labels.iter().enumerate() {
            if in_test[i] {
                continue;
            }
            per_class
                .get_mut(label)
                .ok_or(DataError::LabelOutOfRange {
                    index: i,
                    label,
                    classes: ds.num_classes(),
                })?
                .push(i);
        }
        let (val_f, test_f) = if ds.predefined_test.is_some() {
            (f.val / (f.train + f.val), 0.0)
        } else {
            (f.val, f.test)
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (class, mut items) in per_class.into_iter().enumerate() {
            let n = items.len();
            let n_val = share(n, val_f);
            let n_test = share(n, test_f);
            if n_val + n_test >= n {
                return Err(DataError::NoTrainingImages {
                    class: ds.classes[class].clone(),
                    available: n,
                });
            }
            items.shuffle(&mut rng);
            val.extend_from_slice(&items[..n_val]);
            test.extend_from_slice(&items[n_val..n_val + n_test]);
            train.extend_from_slice(&items[n_val + n_test..]);
        }
        for s in [&mut train, &mut val, &mut test] {
            s.sort_unstable();
        }
        Ok(Splits { train, val, test })
    }

    /// The three splits with their names, in train, val, test order.
    pub fn named(&self) -> [(&'static str, &[usize]); 3] {
        [
            (SPLIT_NAMES[0], &self.train),
            (SPLIT_NAMES[1], &self.val),
            (SPLIT_NAMES[2], &self.test),
        ]
    }

    /// Checks that every index is in range and in at most one split, once, and that no file
    /// (`origins`) is in two splits. Identical pixel content under different files is not an
    /// error; see [`Splits::duplicate_content`].
    pub fn check_disjoint(&self, ds: &Dataset) -> Result<(), DataError> {
        const NONE: u8 = u8::MAX;
        let mut owner = vec![NONE; ds.len()];
        let mut by_origin: HashMap<&str, (u8, usize)> = HashMap::new();
        for (s, (_, indices)) in self.named().iter().enumerate() {
            let s = s as u8;
            for &i in *indices {
                let slot = owner.get_mut(i).ok_or(DataError::IndexOutOfRange {
                    index: i,
                    len: ds.len(),
                })?;
                if *slot != NONE {
                    return Err(DataError::SplitOverlap {
                        index: i,
                        origin: ds.origins[i].clone(),
                        first: SPLIT_NAMES[*slot as usize],
                        second: SPLIT_NAMES[s as usize],
                    });
                }
                *slot = s;
                let origin = ds.origins[i].as_str();
                match by_origin.get(origin) {
                    Some(&(other, j)) if other != s => {
                        return Err(DataError::OriginOverlap {
                            origin: origin.to_owned(),
                            first: SPLIT_NAMES[other as usize],
                            first_index: j,
                            second: SPLIT_NAMES[s as usize],
                            second_index: i,
                        });
                    }
                    Some(_) => {}
                    None => {
                        by_origin.insert(origin, (s, i));
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts val/test images whose exact pixels also occur in an earlier split (hash, then
    /// byte comparison). Out-of-range indices are ignored (see [`Splits::check_disjoint`]).
    pub fn duplicate_content(&self, ds: &Dataset) -> DuplicateReport {
        let mut seen: HashMap<u64, Vec<(u8, usize)>> = HashMap::new();
        let mut report = DuplicateReport::default();
        for (s, (_, indices)) in self.named().iter().enumerate() {
            let s = s as u8;
            for &i in *indices {
                let Some(img) = ds.images.get(i) else {
                    continue;
                };
                let bucket = seen.entry(content_hash(img)).or_default();
                let earlier = bucket
                    .iter()
                    .find(|&&(other, j)| other != s && ds.images[j] == *img);
                if let Some(&(_, j)) = earlier {
                    report.cross_split += 1;
                    if report.examples.len() < 10 {
                        report.examples.push((j, i));
                    }
                }
                if !bucket.iter().any(|&(other, _)| other == s) {
                    bucket.push((s, i));
                }
            }
        }
        report
    }
}

/// Splits `indices` of `ds` per class like [`Splits::stratified`] (`f.test` always applies),
/// but a class too small for its val/test shares keeps at least one training image instead of
/// failing: for extra data (captured frames), where a class may have only a few images.
/// Each split's indices are sorted.
pub fn split_per_class(ds: &Dataset, indices: &[usize], f: SplitFractions, seed: u64) -> Splits {
    let mut per: Vec<Vec<usize>> = vec![Vec::new(); ds.num_classes()];
    for &i in indices {
        if let Some(list) = ds.labels.get(i).and_then(|&l| per.get_mut(l)) {
            list.push(i);
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for mut items in per {
        let n = items.len();
        let (mut n_val, mut n_test) = (share(n, f.val), share(n, f.test));
        while n > 0 && n_val + n_test >= n {
            if n_test >= n_val {
                n_test -= 1;
            } else {
                n_val -= 1;
            }
        }
        items.sort_unstable();
        items.shuffle(&mut rng);
        val.extend_from_slice(&items[..n_val]);
        test.extend_from_slice(&items[n_val..n_val + n_test]);
        train.extend_from_slice(&items[n_val + n_test..]);
    }
    for s in [&mut train, &mut val, &mut test] {
        s.sort_unstable();
    }
    Splits { train, val, test }
}

/// At most `per_class` images of each class from `indices`, picked at random with `seed`;
/// the result is sorted. Classes with fewer images keep all of theirs.
pub fn subset_per_class(
    ds: &Dataset,
    indices: &[usize],
    per_class: usize,
    seed: u64,
) -> Vec<usize> {
    let mut per: Vec<Vec<usize>> = vec![Vec::new(); ds.num_classes()];
    for &i in indices {
        if let Some(list) = ds.labels.get(i).and_then(|&l| per.get_mut(l)) {
            list.push(i);
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for mut list in per {
        list.shuffle(&mut rng);
        list.truncate(per_class);
        out.extend(list);
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::super::Image;
    use super::*;

    /// `per_class[c]` images of class c, each a 1×1 grey image whose value is its index.
    fn toy(per_class: &[usize]) -> Dataset {
        let mut ds = Dataset {
            classes: (0..per_class.len()).map(|c| format!("c{c}")).collect(),
            images: Vec::new(),
            labels: Vec::new(),
            origins: Vec::new(),
            predefined_test: None,
            description: "toy".into(),
        };
        for (c, &n) in per_class.iter().enumerate() {
            for _ in 0..n {
                let i = ds.images.len();
                ds.images.push(Image {
                    width: 1,
                    height: 1,
                    channels: 1,
                    pixels: vec![i as u8],
                });
                ds.labels.push(c);
                ds.origins.push(format!("f{i}"));
            }
        }
        ds
    }

    #[test]
    fn split_per_class_keeps_a_training_image_of_small_classes() {
        let ds = toy(&[20, 2, 1, 0]);
        let f = SplitFractions {
            train: 0.6,
            val: 0.2,
            test: 0.2,
        };
        let s = split_per_class(&ds, &ds.all_indices(), f, 7);
        assert_eq!(ds.class_counts(&s.val), [4, 0, 0, 0]);
        assert_eq!(ds.class_counts(&s.test), [4, 0, 0, 0]);
        assert_eq!(ds.class_counts(&s.train), [12, 2, 1, 0]);
        assert!(s.check_disjoint(&ds).is_ok());
        assert_eq!(s, split_per_class(&ds, &ds.all_indices(), f, 7));
        assert_ne!(s.test, split_per_class(&ds, &ds.all_indices(), f, 8).test);
    }

    #[test]
    fn fractions_are_validated() {
        assert!(SplitFractions::default().validate().is_ok());
        for (t, v, s) in [
            (0.5, 0.5, 0.5),
            (0.0, 0.5, 0.5),
            (1.2, -0.1, -0.1),
            (f32::NAN, 0., 0.),
        ] {
            let f = SplitFractions {
                train: t,
                val: v,
                test: s,
            };
            assert!(f.validate().is_err(), "{f:?}");
        }
    }

    #[test]
    fn stratified_counts_per_class() {
        let ds = toy(&[100, 20, 3]);
        let s = Splits::stratified(&ds, SplitFractions::default(), 1).expect("split");
        assert_eq!(ds.class_counts(&s.train), vec![80, 16, 1]);
        assert_eq!(ds.class_counts(&s.val), vec![10, 2, 1]);
        assert_eq!(ds.class_counts(&s.test), vec![10, 2, 1]);
        s.check_disjoint(&ds).expect("disjoint");
        assert_eq!(s.train.len() + s.val.len() + s.test.len(), ds.len());
        // Same seed, same split; another seed, another one.
        assert_eq!(
            Splits::stratified(&ds, SplitFractions::default(), 1).ok(),
            Some(s.clone())
        );
        assert_ne!(
            Splits::stratified(&ds, SplitFractions::default(), 2).ok(),
            Some(s)
        );
    }

    #[test]
    fn a_class_without_training_images_is_an_error() {
        let ds = toy(&[10, 2]);
        let f = SplitFractions {
            train: 0.5,
            val: 0.25,
            test: 0.25,
        };
        // 2 images: 1 val (0.5 rounds to 1)... and 1 test: none left for training.
        let err = Splits::stratified(&ds, f, 0).unwrap_err().to_string();
        assert!(err.contains("class `c1` has only 2 image(s)"), "{err}");
    }

    #[test]
    fn predefined_test_is_kept_and_rest_split_train_val() {
        let mut ds = toy(&[50, 50]);
        ds.predefined_test = Some(vec![0, 1, 2, 50, 51]);
        let f = SplitFractions {
            train: 0.72,
            val: 0.18,
            test: 0.1,
        };
        let s = Splits::stratified(&ds, f, 3).expect("split");
        assert_eq!(s.test, vec![0, 1, 2, 50, 51]);
        // 47 and 48 left: val = 0.2 of them.
        assert_eq!(ds.class_counts(&s.val), vec![9, 10]);
        assert_eq!(ds.class_counts(&s.train), vec![38, 38]);
        s.check_disjoint(&ds).expect("disjoint");
    }

    #[test]
    fn overlaps_are_reported() {
        let ds = toy(&[5, 5]);
        let s = Splits {
            train: vec![0, 1, 5],
            val: vec![2, 6],
            test: vec![1],
        };
        let err = s.check_disjoint(&ds).unwrap_err().to_string();
        assert_eq!(err, "image 1 (f1) is in both the train and the test split");

        let mut same_file = ds.clone();
        same_file.origins[6] = "f0".into();
        let s = Splits {
            train: vec![0],
            val: vec![6],
            test: vec![],
        };
        let err = s.check_disjoint(&same_file).unwrap_err().to_string();
        assert!(
            err.contains("the same file f0 is in both the train split (image 0)"),
            "{err}"
        );

        let s = Splits {
            train: vec![10],
            val: vec![],
            test: vec![],
        };
        assert!(matches!(
            s.check_disjoint(&ds),
            Err(DataError::IndexOutOfRange { index: 10, len: 10 })
        ));
    }

    #[test]
    fn duplicate_content_is_counted_not_failed() {
        let mut ds = toy(&[4, 4]);
        ds.images[5] = ds.images[1].clone();
        ds.images[6] = ds.images[1].clone();
        let s = Splits {
            train: vec![0, 1, 2],
            val: vec![3, 5],
            test: vec![4, 6],
        };
        s.check_disjoint(&ds).expect("different files are disjoint");
        let d = s.duplicate_content(&ds);
        assert_eq!(d.cross_split, 2);
        assert_eq!(d.examples, vec![(1, 5), (1, 6)]);
    }

    #[test]
    fn subset_takes_at_most_n_per_class() {
        let ds = toy(&[10, 3]);
        let all = ds.all_indices();
        let sub = subset_per_class(&ds, &all, 4, 9);
        assert_eq!(ds.class_counts(&sub), vec![4, 3]);
        assert_eq!(sub, subset_per_class(&ds, &all, 4, 9));
        assert!(sub.windows(2).all(|w| w[0] < w[1]));
    }
}
