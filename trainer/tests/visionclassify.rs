//! The imported model in `visionclassify` with no property but `model`: the element reads
//! labels and preprocessing from the model's metadata and finds the cat and the espresso.
//! Runs `gst-launch-1.0` with `GST_PLUGIN_PATH=target/debug`, so the plugin must be built
//! first (`cargo build -p gst-plugin-vision`, which scripts/test.sh does).

use anyhow::Result;
use vision_trainer::import::{self, ImportOptions};

mod common;

use common::{best_label, classify, repo_root};

#[test]
fn visionclassify_loads_the_imported_model_with_no_extra_properties() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vision-trainer-{}-e2e", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let opts = ImportOptions::project_defaults(&repo_root(), dir.join("lite0.onnx"));
    import::import(&opts)?;

    let cat = classify(&opts.out, &opts.photos_dir.join("chelsea.png"))?;
    assert!(
        ["Egyptian cat", "tabby", "tiger cat"].contains(&cat.as_str()),
        "chelsea.png: {cat}"
    );
    let coffee = classify(&opts.out, &opts.photos_dir.join("coffee.png"))?;
    assert_eq!(coffee, "espresso");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn best_label_reads_quoted_and_plain_values() {
    let line = "Got message #75 from element \"visionclassify0\" (element): visionclassify, \
                best-class-id=(uint)285, best-label=(string)\"Egyptian\\ cat\", x=1;";
    assert_eq!(best_label(line).as_deref(), Some("Egyptian cat"));
    let line = "Got message #7 from element \"v\" (element): visionclassify, \
                best-label=(string)espresso, best-confidence=(double)0.9;";
    assert_eq!(best_label(line).as_deref(), Some("espresso"));
    assert_eq!(best_label("nothing"), None);
}
