//! The data layer on real data: Fashion-MNIST from the Debian package, real photos from
//! scikit-image (both installed by scripts/setup.sh).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use vision_trainer::data::{
    self, AugmentConfig, DataSpec, Dataset, InputSpec, Loader, SplitFractions, Splits,
    balance_report, subset_per_class, tensor_of, write_image_folder,
};
use vision_trainer::onnx::metadata::Resize;

/// `.deps/<relative>` of the source tree, which scripts/setup.sh fills.
fn deps(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.deps")
        .join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh first",
        path.display()
    );
    path
}

/// Fashion-MNIST, loaded once for all tests of this file.
fn fashion() -> Arc<Dataset> {
    static DS: OnceLock<Arc<Dataset>> = OnceLock::new();
    DS.get_or_init(|| {
        let dir = Path::new(data::FASHION_MNIST_DIR);
        assert!(
            dir.is_dir(),
            "{} is missing: run scripts/setup.sh (Debian package dataset-fashion-mnist)",
            dir.display()
        );
        let start = Instant::now();
        let ds = data::load(&"fashion-mnist".parse().expect("spec")).expect("load Fashion-MNIST");
        let took = start.elapsed();
        eprintln!("Fashion-MNIST: {} images loaded in {took:.2?}", ds.len());
        // Release builds load in a fraction of a second; debug test builds are slower.
        assert!(took.as_secs_f64() < 10.0, "loading took {took:?}");
        Arc::new(ds)
    })
    .clone()
}

fn err_text<T: std::fmt::Debug>(r: Result<T, data::DataError>) -> String {
    r.expect_err("an error was expected").to_string()
}

#[test]
fn fashion_mnist_has_its_known_shape() {
    let ds = fashion();
    assert_eq!(ds.len(), 70_000);
    assert_eq!(ds.classes.len(), 10);
    assert_eq!(ds.classes[0], "T-shirt/top");
    assert_eq!(ds.classes[9], "Ankle boot");
    assert_eq!(ds.channels(), 1);
    let test = ds.predefined_test.clone().expect("predefined test set");
    assert_eq!(test, (60_000..70_000).collect::<Vec<_>>());
    let train: Vec<usize> = (0..60_000).collect();
    assert_eq!(ds.class_counts(&train), vec![6000; 10]);
    assert_eq!(ds.class_counts(&test), vec![1000; 10]);
    // The first training image is an ankle boot (label 9), as in Zalando's own README plot;
    // its pixels are 28x28, mostly black background with a bright object.
    assert_eq!(ds.labels[0], 9);
    let img = &ds.images[0];
    assert_eq!((img.width, img.height, img.channels), (28, 28, 1));
    assert_eq!(img.pixel(0, 0), &[0]);
    assert!(img.pixels.iter().any(|&v| v > 200));
    assert_eq!(ds.origins[0], "train-images-idx3-ubyte.gz#0");
    ds.validate().expect("valid");
}

#[test]
fn stratified_splits_are_disjoint_and_reproducible() {
    let ds = fashion();
    let f = SplitFractions {
        train: 0.9,
        val: 0.1,
        test: 0.0,
    };
    let s = Splits::stratified(&ds, f, 7).expect("split");
    s.check_disjoint(&ds).expect("disjoint");
    assert_eq!(s.test, ds.predefined_test.clone().expect("test"));
    assert_eq!(ds.class_counts(&s.val), vec![600; 10]);
    assert_eq!(ds.class_counts(&s.train), vec![5400; 10]);
    assert_eq!(Splits::stratified(&ds, f, 7).expect("split"), s);
    let other = Splits::stratified(&ds, f, 8).expect("split");
    assert_ne!(other.val, s.val);

    // Fashion-MNIST has a few images whose pixels occur twice: reported, not fatal.
    let report = balance_report(&ds, &s);
    assert_eq!(report.imbalance_ratio, 1.0);
    eprintln!("{report}");
    let dups = report.duplicates.cross_split;
    assert!(dups < 100, "{dups} cross-split duplicates");
    for (a, b) in &report.duplicates.examples {
        assert_eq!(ds.images[*a], ds.images[*b]);
    }
    // A split made by hand that repeats an image is refused with the image named.
    let bad = Splits {
        train: vec![0, 1],
        val: vec![1],
        test: vec![],
    };
    assert_eq!(
        err_text(bad.check_disjoint(&ds)),
        "image 1 (train-images-idx3-ubyte.gz#1) is in both the train and the val split"
    );
}

/// A temporary image folder made of the real photos: cat (2 files), coffee, rocket (JPEG).
fn photo_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let photos = deps("data/photos");
    for (class, files) in [
        ("cat", &["chelsea.png", "astronaut.png"][..]),
        ("coffee", &["coffee.png"][..]),
        ("rocket", &["rocket.jpg"][..]),
    ] {
        let class_dir = dir.path().join(class);
        std::fs::create_dir(&class_dir).expect("mkdir");
        for f in files {
            std::fs::copy(photos.join(f), class_dir.join(f)).expect("copy");
        }
    }
    std::fs::write(dir.path().join("cat/notes.txt"), "not an image").expect("write");
    dir
}

#[test]
fn image_folder_of_real_photos() {
    let dir = photo_folder();
    let spec: DataSpec = dir.path().to_str().expect("utf-8").parse().expect("spec");
    assert_eq!(spec, DataSpec::Folder(dir.path().to_path_buf()));
    let ds = data::load(&spec).expect("load");
    assert_eq!(ds.classes, vec!["cat", "coffee", "rocket"]);
    assert_eq!(ds.labels, vec![0, 0, 1, 2]);
    assert_eq!(ds.channels(), 3);
    assert!(ds.origins[0].ends_with("cat/astronaut.png"));
    assert_eq!((ds.images[2].width, ds.images[2].height), (600, 400));
    ds.validate().expect("valid");

    // The same through a CSV with a header, a quoted path and a comment.
    let csv = dir.path().join("list.csv");
    std::fs::write(
        &csv,
        "path,label\n# photos\ncat/chelsea.png,cat\n\"coffee/coffee.png\",drink\nrocket/rocket.jpg,rocket\n",
    )
    .expect("write");
    let ds = data::load(&format!("csv:{}", csv.display()).parse().expect("spec")).expect("load");
    assert_eq!(ds.classes, vec!["cat", "drink", "rocket"]);
    assert_eq!(ds.labels, vec![0, 1, 2]);
}

#[test]
fn user_mistakes_get_clear_errors() {
    let dir = photo_folder();
    let folder = |p: &Path| data::load(&DataSpec::Folder(p.to_path_buf()));

    // A truncated PNG: named, and called corrupt.
    let bytes = std::fs::read(deps("data/photos/chelsea.png")).expect("read");
    let broken = dir.path().join("cat/broken.png");
    std::fs::write(&broken, &bytes[..bytes.len() / 3]).expect("write");
    let err = err_text(folder(dir.path()));
    assert!(
        err.contains("broken.png") && err.contains("corrupt or unsupported image"),
        "{err}"
    );
    std::fs::remove_file(&broken).expect("rm");

    // An empty class folder is named.
    std::fs::create_dir(dir.path().join("dog")).expect("mkdir");
    let err = err_text(folder(dir.path()));
    assert!(
        err.starts_with("class folder ") && err.contains("dog is empty"),
        "{err}"
    );
    std::fs::remove_dir(dir.path().join("dog")).expect("rm");

    // A wrong path, a file instead of a folder, a folder with one class.
    let err = err_text(folder(&dir.path().join("nope")));
    assert!(err.ends_with("nope does not exist"), "{err}");
    let err = err_text(folder(&dir.path().join("cat/chelsea.png")));
    assert!(err.contains("is not a directory"), "{err}");
    let one = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(one.path().join("only")).expect("mkdir");
    std::fs::copy(
        deps("data/photos/coffee.png"),
        one.path().join("only/c.png"),
    )
    .expect("copy");
    let err = err_text(folder(one.path()));
    assert!(
        err.contains("has 1 class(es) (only); a classifier needs at least 2"),
        "{err}"
    );

    // A CSV with a malformed third line, and one naming a missing image.
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "cat/chelsea.png,cat\ncoffee/coffee.png,drink\njust-a-path.png\n",
    )
    .expect("write");
    let err = err_text(data::load(&DataSpec::Csv(csv.clone())));
    assert!(
        err.contains("bad.csv line 3: expected 2 fields `path,label`, found 1"),
        "{err}"
    );
    std::fs::write(&csv, "cat/chelsea.png,cat\nmissing.png,dog\n").expect("write");
    let err = err_text(data::load(&DataSpec::Csv(csv)));
    assert!(
        err.contains("line 2: image") && err.contains("missing.png does not exist"),
        "{err}"
    );

    // Unknown sources and a wrong Fashion-MNIST folder.
    let err = err_text("mnist".parse::<DataSpec>());
    assert!(err.contains("unknown data source `mnist`"), "{err}");
    let err = err_text(data::load(&DataSpec::FashionMnist(
        dir.path().to_path_buf(),
    )));
    assert!(
        err.contains("train-images-idx3-ubyte.gz does not exist"),
        "{err}"
    );
}

#[test]
fn fashion_subset_round_trips_through_an_image_folder() {
    let ds = fashion();
    let subset = subset_per_class(&ds, &(0..60_000).collect::<Vec<_>>(), 20, 1);
    assert_eq!(subset.len(), 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("fashion-200");
    assert_eq!(write_image_folder(&ds, &subset, &out).expect("write"), 200);
    // Writing again into the same folder is refused rather than mixing two subsets.
    let err = err_text(write_image_folder(&ds, &subset, &out));
    assert!(err.contains("already holds files"), "{err}");

    let back = data::load(&DataSpec::Folder(out.clone())).expect("load");
    assert_eq!(back.len(), 200);
    assert_eq!(back.channels(), 1, "all-grey PNGs stay 1-channel");
    assert_eq!(back.classes[0], "Ankle_boot");
    assert!(back.classes.contains(&"T-shirt_top".to_owned()));
    assert_eq!(back.class_counts(&back.all_indices()), vec![20; 10]);
    // Pixels survive exactly: every loaded image is the original of its file name.
    for (img, origin) in back.images.iter().zip(&back.origins) {
        let index: usize = Path::new(origin)
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("index file name");
        assert_eq!(img, &ds.images[index], "{origin}");
    }
}

#[test]
fn augmentations_on_real_images() {
    use rand::SeedableRng;
    let ds = fashion();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let strong = AugmentConfig::default().scaled(2.0);
    let mut changed = 0;
    for i in 0..50 {
        let mut img = ds.images[i].clone();
        strong.augment_image(&mut img, &mut rng).expect("augment");
        assert_eq!((img.width, img.height, img.channels), (28, 28, 1));
        changed += usize::from(img != ds.images[i]);
    }
    assert!(changed >= 45, "only {changed} of 50 images changed");

    // A flip alone is an exact mirror.
    let mut flip_only = AugmentConfig::none();
    flip_only.hflip = 1.0;
    let mut img = ds.images[3].clone();
    flip_only
        .augment_image(&mut img, &mut rng)
        .expect("augment");
    for y in 0..28 {
        for x in 0..28 {
            assert_eq!(img.pixel(x, y), ds.images[3].pixel(27 - x, y));
        }
    }

    // Colour photo: every per-image operation at full probability keeps the shape.
    let photo = data::load(&DataSpec::Folder(photo_folder().path().to_path_buf()))
        .expect("load")
        .images[2]
        .clone();
    let mut all = AugmentConfig::default();
    all.crop.p = 1.0;
    all.rotate.p = 1.0;
    all.color.p = 1.0;
    all.blur.p = 1.0;
    all.erase.p = 1.0;
    let mut img = photo.clone();
    all.augment_image(&mut img, &mut rng).expect("augment");
    assert_eq!((img.width, img.height, img.channels), (600, 400, 3));
    assert_ne!(img.pixels, photo.pixels);
}

fn fashion_input() -> InputSpec {
    InputSpec {
        size: [28, 28],
        channels: 1,
        resize: Resize::Stretch,
        scale: 1.0 / 255.0,
        mean: [0.2860, 0.0, 0.0],
        std: [0.3530, 1.0, 1.0],
    }
}

#[test]
fn loader_yields_normalised_batches() {
    let ds = fashion();
    let input = fashion_input();
    let indices: Vec<usize> = (0..100).collect();
    let loader = Loader::new(
        ds.clone(),
        indices.clone(),
        32,
        input.clone(),
        None,
        false,
        0,
        0,
    )
    .expect("loader");
    assert_eq!(loader.len_batches(), 4);
    let batches: Vec<_> = loader.collect();
    assert_eq!(batches.len(), 4);
    let b = &batches[0];
    assert_eq!(b.shape, [32, 1, 28, 28]);
    assert_eq!(b.classes, 10);
    assert_eq!(b.labels[0], 9);
    assert_eq!(b.targets[..10], [0., 0., 0., 0., 0., 0., 0., 0., 0., 1.]);
    // Pixel (x 14, y 10) of image 0, by hand: (p / 255 - 0.2860) / 0.3530.
    let p = f32::from(ds.images[0].pixel(14, 10)[0]);
    let by_hand = (p / 255.0 - 0.2860) / 0.3530;
    assert!(p > 0.0);
    assert!((b.images[10 * 28 + 14] - by_hand).abs() < 1e-5);
    assert_eq!(batches[3].shape[0], 4);

    // The same through tensor_of, and for an RGB model (grey replicated in 3 planes).
    let mut t = Vec::new();
    tensor_of(&ds.images[0], &input, &mut t).expect("tensor");
    assert_eq!(t[..], b.images[..784]);
    let rgb = InputSpec {
        channels: 3,
        mean: [0.5; 3],
        std: [0.25; 3],
        ..input.clone()
    };
    tensor_of(&ds.images[0], &rgb, &mut t).expect("tensor");
    for c in 0..3 {
        assert!((t[c * 784 + 10 * 28 + 14] - (p / 255.0 - 0.5) / 0.25).abs() < 1e-5);
    }
}

#[test]
fn loader_augments_reproducibly_and_mixes_targets() {
    let ds = fashion();
    let mut aug = AugmentConfig::default();
    aug.mixup.p = 1.0;
    aug.mixup.alpha = 0.4;
    let indices: Vec<usize> = (0..256).collect();
    let run = |seed, epoch| {
        Loader::new(
            ds.clone(),
            indices.clone(),
            64,
            fashion_input(),
            Some(aug),
            true,
            seed,
            epoch,
        )
        .expect("loader")
        .collect::<Vec<_>>()
    };
    let (a, b, c) = (run(5, 0), run(5, 0), run(5, 1));
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.images, y.images);
        assert_eq!(x.targets, y.targets);
    }
    assert_ne!(a[0].images, c[0].images);
    for batch in &a {
        for (t, &label) in batch.targets.chunks(10).zip(&batch.labels) {
            assert!((t.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{t:?}");
            // The hard label is the dominant one: it carries at least half the weight.
            assert!(t[label] >= 0.5 - 1e-6, "{t:?} {label}");
        }
    }
    // MixUp makes soft targets somewhere.
    assert!(
        a.iter()
            .any(|b| b.targets.iter().any(|&v| v > 0.0 && v < 1.0))
    );
}

#[test]
fn photo_fits_the_model_like_the_element() {
    // A 600x400 photo into a 224x224 RGB model with each resize mode: the letterbox bars are
    // black, centre-crop and stretch fill the whole input, values are normalised.
    let dir = photo_folder();
    let ds = data::load(&DataSpec::Folder(dir.path().to_path_buf())).expect("load");
    let coffee = &ds.images[2];
    let mut input = InputSpec {
        size: [224, 224],
        channels: 3,
        resize: Resize::Letterbox,
        scale: 1.0,
        mean: [127.0; 3],
        std: [128.0; 3],
    };
    let mut t = Vec::new();
    tensor_of(coffee, &input, &mut t).expect("tensor");
    assert_eq!(t.len(), 3 * 224 * 224);
    // 600x400 → 224x149, centred: rows 0..37 and 186..224 are black.
    let black = input.normalise(0, 0);
    for c in 0..3 {
        assert_eq!(t[c * 224 * 224 + 10 * 224 + 100], black);
        assert_eq!(t[c * 224 * 224 + 220 * 224 + 100], black);
        assert_ne!(t[c * 224 * 224 + 112 * 224 + 100], black);
    }
    for resize in [Resize::CenterCrop, Resize::Stretch] {
        input.resize = resize;
        tensor_of(coffee, &input, &mut t).expect("tensor");
        assert!(t.iter().all(|v| (-1.0..=1.0).contains(v)));
        let row10 = &t[10 * 224..11 * 224];
        assert!(row10.iter().any(|&v| v != black), "{resize:?}");
    }
    // Fitting the dataset once gives the loader the same pixels as fitting per batch.
    let fitted = Arc::new(ds.fitted(&input).expect("fit"));
    let direct = Loader::new(Arc::new(ds), vec![2], 1, input.clone(), None, false, 0, 0)
        .expect("loader")
        .next()
        .expect("batch");
    let pre = Loader::new(fitted, vec![2], 1, input, None, false, 0, 0)
        .expect("loader")
        .next()
        .expect("batch");
    assert_eq!(direct.images, pre.images);
}
