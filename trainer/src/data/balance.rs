//! Class balance of a split dataset: counts per class and split, imbalance ratio, warnings.

use serde::Serialize;

use super::split::DuplicateReport;
use super::{Dataset, Splits};

/// A class is flagged when the largest training class has more than this many times its
/// training images.
pub const IMBALANCE_WARN_RATIO: f64 = 3.0;

/// One class's image counts per split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassBalance {
    pub class: String,
    pub train: usize,
    pub val: usize,
    pub test: usize,
}

/// Counts per class and split, the training imbalance ratio and what deserves a look.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalanceReport {
    pub classes: Vec<ClassBalance>,
    /// Largest / smallest training class (infinite when a class has no training image).
    pub imbalance_ratio: f64,
    /// Exact pixel duplicates across splits (see [`Splits::duplicate_content`]).
    pub duplicates: DuplicateReport,
    /// Human-readable findings: strongly under-represented classes, classes missing from
    /// val/test, duplicates across splits.
    pub warnings: Vec<String>,
}

/// Counts the images of each class in each split and lists what is worth a warning.
pub fn balance_report(ds: &Dataset, s: &Splits) -> BalanceReport {
    let (train, val, test) = (
        ds.class_counts(&s.train),
        ds.class_counts(&s.val),
        ds.class_counts(&s.test),
    );
    let classes: Vec<ClassBalance> = (0..ds.num_classes())
        .map(|c| ClassBalance {
            class: ds.classes[c].clone(),
            train: train[c],
            val: val[c],
            test: test[c],
        })
        .collect();
    let max = classes.iter().max_by_key(|c| c.train);
    let min = classes.iter().min_by_key(|c| c.train);
    let imbalance_ratio = match (max, min) {
        (Some(max), Some(min)) if min.train > 0 => max.train as f64 / min.train as f64,
        (Some(_), Some(_)) => f64::INFINITY,
        _ => 1.0,
    };
    let mut warnings = Vec::new();
    if let Some(max) = max {
        for c in &classes {
            if c.train == 0 {
                warnings.push(format!("class {} has no training images", c.class));
            } else if max.train as f64 / c.train as f64 > IMBALANCE_WARN_RATIO {
                warnings.push(format!(
                    "class {} has {:.1}x fewer training images than class {} ({} vs {}); \
                     consider more data, class weights or oversampling",
                    c.class,
                    max.train as f64 / c.train as f64,
                    max.class,
                    c.train,
                    max.train
                ));
            }
        }
    }
    for (split, counts, total) in [("val", &val, s.val.len()), ("test", &test, s.test.len())] {
        if total == 0 {
            continue;
        }
        let missing: Vec<&str> = counts
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n == 0)
            .map(|(c, _)| ds.classes[c].as_str())
            .collect();
        if !missing.is_empty() {
            warnings.push(format!(
                "no {split} images for class(es) {}: their {split} metrics are undefined",
                missing.join(", ")
            ));
        }
    }
    let duplicates = s.duplicate_content(ds);
    if duplicates.cross_split > 0 {
        warnings.push(format!(
            "{} val/test image(s) have exactly the same pixels as an image in an earlier split \
             (e.g. images {:?}); their scores are slightly optimistic",
            duplicates.cross_split,
            duplicates.examples.first().copied().unwrap_or_default()
        ));
    }
    BalanceReport {
        classes,
        imbalance_ratio,
        duplicates,
        warnings,
    }
}

impl std::fmt::Display for BalanceReport {
    /// A table with one row per class and a total row, then the ratio and warnings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let width = self
            .classes
            .iter()
            .map(|c| c.class.chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        writeln!(
            f,
            "{:<width$}  {:>7}  {:>7}  {:>7}",
            "class", "train", "val", "test"
        )?;
        let (mut t, mut v, mut s) = (0, 0, 0);
        for c in &self.classes {
            writeln!(
                f,
                "{:<width$}  {:>7}  {:>7}  {:>7}",
                c.class, c.train, c.val, c.test
            )?;
            (t, v, s) = (t + c.train, v + c.val, s + c.test);
        }
        writeln!(f, "{:<width$}  {t:>7}  {v:>7}  {s:>7}", "total")?;
        writeln!(
            f,
            "imbalance ratio (largest / smallest training class): {:.2}",
            self.imbalance_ratio
        )?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Image;
    use super::*;

    fn ds(labels: &[usize], classes: usize) -> Dataset {
        Dataset {
            classes: (0..classes).map(|c| format!("class{c}")).collect(),
            images: labels
                .iter()
                .enumerate()
                .map(|(i, _)| Image {
                    width: 1,
                    height: 1,
                    channels: 1,
                    pixels: vec![i as u8],
                })
                .collect(),
            labels: labels.to_vec(),
            origins: (0..labels.len()).map(|i| i.to_string()).collect(),
            predefined_test: None,
            description: String::new(),
        }
    }

    #[test]
    fn ratio_and_warnings() {
        // class0: 10 train, class1: 2 train, class2: 4 train; val lacks class2.
        let mut labels = vec![0; 10];
        labels.extend([1, 1, 2, 2, 2, 2, 0, 1]);
        let d = ds(&labels, 3);
        let s = Splits {
            train: (0..16).collect(),
            val: vec![16, 17],
            test: vec![],
        };
        let r = balance_report(&d, &s);
        assert_eq!(r.imbalance_ratio, 5.0);
        assert_eq!(
            r.classes[1],
            ClassBalance {
                class: "class1".into(),
                train: 2,
                val: 1,
                test: 0
            }
        );
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].starts_with(
            "class class1 has 5.0x fewer training images than class class0 (2 vs 10)"
        ));
        assert!(r.warnings[1].contains("no val images for class(es) class2"));
        let table = r.to_string();
        assert!(
            table.contains("\nclass1        2        1        0\n"),
            "{table}"
        );
        assert!(
            table.contains("\ntotal        16        2        0\n"),
            "{table}"
        );
        assert!(table.contains("imbalance ratio (largest / smallest training class): 5.00"));
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["classes"][0]["train"], 10);
    }

    #[test]
    fn balanced_data_has_no_warnings() {
        let d = ds(&[0, 0, 1, 1, 0, 1], 2);
        let s = Splits {
            train: vec![0, 1, 2, 3],
            val: vec![4, 5],
            test: vec![],
        };
        let r = balance_report(&d, &s);
        assert_eq!(r.imbalance_ratio, 1.0);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }
}
