//! Where calibration and test images come from: a labelled data set (`--data`, or the one the
//! model's `vision.model.training_data` names), split as the trainer splits it (calibration
//! from the training split, evaluation on the test split); or, for models with no labelled
//! set here (the ImageNet EfficientNet-Lite0), random crops of unlabelled photos, scored by
//! agreement with the float model.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use opencv::{core, imgcodecs, imgproc, prelude::*};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::data::{self, DataSpec, Image, InputSpec, SplitFractions, Splits};
use crate::onnx::ModelProto;

use super::{EvalSet, Images, QuantizeError, input_dims};

/// Seed of the split when the model does not name one (the trainer's default).
pub const DEFAULT_SEED: u64 = 42;

/// The model's input as `vision.preprocess` and its input shape describe it, read with the
/// element's contract parser ([`InputSpec::from_contract`]).
pub fn input_spec(model: &ModelProto) -> Result<InputSpec, QuantizeError> {
    let contract = model.contract()?;
    let (_, dims) = input_dims(model)?;
    Ok(InputSpec::from_contract(&contract.preprocess, &dims)?)
}

/// The data set and split seed the model's `vision.model` names, if any: a `data` or
/// `training_data` field that is a data spec, or a Fashion-MNIST description.
pub fn training_data(model: &ModelProto) -> Option<(DataSpec, u64)> {
    let info = model.contract().ok()?.model.extra;
    let field = |key: &str| info.get(key);
    let seed = field("seed")
        .and_then(|v| v.as_u64())
        .or_else(|| field("split_seed").and_then(|v| v.as_u64()))
        .unwrap_or(DEFAULT_SEED);
    for key in ["data_spec", "data", "training_data"] {
        let Some(text) = field(key).and_then(|v| v.as_str()) else {
            continue;
        };
        if let Ok(spec) = DataSpec::from_str(text) {
            return Some((spec, seed));
        }
        // "Fashion-MNIST (60000 train + 10000 test, 28x28 grey, /usr/share/datasets/fashion-mnist)"
        if text.starts_with("Fashion-MNIST") {
            let dir = text
                .rsplit_once(", ")
                .map(|(_, d)| d.trim_end_matches(')'))
                .filter(|d| Path::new(d).is_dir())
                .map_or_else(|| PathBuf::from(data::FASHION_MNIST_DIR), PathBuf::from);
            return Some((DataSpec::FashionMnist(dir), seed));
        }
        // "image folder DIR (...)" / "CSV list FILE (...)"
        for (prefix, folder) in [("image folder ", true), ("CSV list ", false)] {
            if let Some(rest) = text.strip_prefix(prefix)
                && let Some((path, _)) = rest.split_once(" (")
            {
                let p = PathBuf::from(path);
                return Some((
                    if folder {
                        DataSpec::Folder(p)
                    } else {
                        DataSpec::Csv(p)
                    },
                    seed,
                ));
            }
        }
    }
    None
}

fn tensors(
    ds: &data::Dataset,
    indices: &[usize],
    input: &InputSpec,
) -> Result<Images, QuantizeError> {
    let mut out = Images {
        data: Vec::with_capacity(indices.len() * input.len()),
        dims: vec![input.channels, input.size[0], input.size[1]],
    };
    let mut one = Vec::new();
    for &i in indices {
        let img = &ds.images[i];
        // Grey data for an RGB model (or the reverse) is converted as the element would.
        let img = match (img.channels, input.channels) {
            (1, 3) => img.to_rgb(),
            _ => img.clone(),
        };
        data::tensor_of(&img, input, &mut one).map_err(|e| QuantizeError::Data(e.to_string()))?;
        out.data.extend_from_slice(&one);
    }
    Ok(out)
}

/// Calibration images (`calibration` drawn at random from the training split) and the test
/// split (at most `test_limit` images, stratified order kept) of `spec`, as the model's input.
pub fn labelled(
    spec: &DataSpec,
    seed: u64,
    model: &ModelProto,
    calibration: usize,
    test_limit: Option<usize>,
) -> Result<(Images, EvalSet), QuantizeError> {
    let input = input_spec(model)?;
    let ds = data::load(spec).map_err(|e| QuantizeError::Data(e.to_string()))?;
    let splits = Splits::stratified(&ds, SplitFractions::default(), seed)
        .map_err(|e| QuantizeError::Data(e.to_string()))?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
    let mut train = splits.train.clone();
    train.shuffle(&mut rng);
    train.truncate(calibration);
    let mut test = splits.test.clone();
    if let Some(n) = test_limit.filter(|&n| n < test.len()) {
        test.shuffle(&mut rng);
        test.truncate(n);
        test.sort_unstable();
    }
    let calib = tensors(&ds, &train, &input)?;
    let images = tensors(&ds, &test, &input)?;
    let labels = test.iter().map(|&i| ds.labels[i]).collect();
    Ok((
        calib,
        EvalSet {
            images,
            labels: Some(labels),
            description: format!("test split of {} (seed {seed})", ds.description),
        },
    ))
}

/// Decodes a PNG/JPEG file into RGB.
pub fn read_photo(path: &Path) -> Result<Image, QuantizeError> {
    let err = |reason: String| QuantizeError::Data(format!("{}: {reason}", path.display()));
    let name = path
        .to_str()
        .ok_or_else(|| err("path is not UTF-8".into()))?;
    let bgr = imgcodecs::imread(name, imgcodecs::IMREAD_COLOR).map_err(|e| err(e.message))?;
    if bgr.empty() {
        return Err(err("not a readable image".into()));
    }
    let mut rgb = core::Mat::default();
    imgproc::cvt_color_def(&bgr, &mut rgb, imgproc::COLOR_BGR2RGB).map_err(|e| err(e.message))?;
    let (w, h) = (rgb.cols() as usize, rgb.rows() as usize);
    let pixels = rgb.data_bytes().map_err(|e| err(e.message))?.to_vec();
    Ok(Image {
        width: w,
        height: h,
        channels: 3,
        pixels,
    })
}

/// A random crop covering 40–100 % of each side, mirrored half the time.
fn random_crop(img: &Image, rng: &mut StdRng) -> Image {
    let cw = ((img.width as f64) * rng.random_range(0.4..=1.0)).max(1.0) as usize;
    let ch = ((img.height as f64) * rng.random_range(0.4..=1.0)).max(1.0) as usize;
    let x0 = rng.random_range(0..=img.width - cw);
    let y0 = rng.random_range(0..=img.height - ch);
    let flip = rng.random_bool(0.5);
    let c = img.channels;
    let mut pixels = Vec::with_capacity(cw * ch * c);
    for y in y0..y0 + ch {
        for x in 0..cw {
            let sx = if flip { x0 + cw - 1 - x } else { x0 + x };
            pixels.extend_from_slice(img.pixel(sx, y));
        }
    }
    Image {
        width: cw,
        height: ch,
        channels: c,
        pixels,
    }
}

/// Unlabelled photos (every PNG/JPEG in `dir`): `calibration` random crops for calibration
/// and `test` other random crops (a different random stream) for the agreement test.
pub fn photos(
    dir: &Path,
    model: &ModelProto,
    calibration: usize,
    test: usize,
) -> Result<(Images, EvalSet), QuantizeError> {
    let input = input_spec(model)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| QuantizeError::Data(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(QuantizeError::Data(format!(
            "{} holds no PNG or JPEG photos",
            dir.display()
        )));
    }
    let photos: Vec<Image> = files
        .iter()
        .map(|p| read_photo(p))
        .collect::<Result<_, _>>()?;
    let make = |count: usize, seed: u64| -> Result<Images, QuantizeError> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Images {
            data: Vec::with_capacity(count * input.len()),
            dims: vec![input.channels, input.size[0], input.size[1]],
        };
        let mut one = Vec::new();
        for i in 0..count {
            let photo = &photos[i % photos.len()];
            // The first view of each photo is the whole photo.
            let img = if i < photos.len() {
                photo.clone()
            } else {
                random_crop(photo, &mut rng)
            };
            data::tensor_of(&img, &input, &mut one)
                .map_err(|e| QuantizeError::Data(e.to_string()))?;
            out.data.extend_from_slice(&one);
        }
        Ok(out)
    };
    let calib = make(calibration, 1)?;
    let images = make(test, 2)?;
    Ok((
        calib,
        EvalSet {
            images,
            labels: None,
            description: format!(
                "{test} random crops of {} unlabelled photos in {}",
                photos.len(),
                dir.display()
            ),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::StringStringEntryProto;

    fn with_model_info(json: &str) -> ModelProto {
        ModelProto {
            metadata_props: vec![StringStringEntryProto {
                key: Some(gstvision::contract::KEY_MODEL.into()),
                value: Some(json.into()),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn training_data_is_read_from_the_description() {
        let m = with_model_info(
            r#"{"training_data":"Fashion-MNIST (60000 train + 10000 test, 28x28 grey, /nonexistent)","seed":7}"#,
        );
        assert_eq!(
            training_data(&m),
            Some((
                DataSpec::FashionMnist(PathBuf::from(data::FASHION_MNIST_DIR)),
                7
            ))
        );
        let m =
            with_model_info(r#"{"training_data":"image folder /d/x (10 images, 2 classes, s)"}"#);
        assert_eq!(
            training_data(&m),
            Some((DataSpec::Folder(PathBuf::from("/d/x")), DEFAULT_SEED))
        );
        let m = with_model_info(r#"{"training_data":"ImageNet-1k (not shipped)"}"#);
        assert_eq!(training_data(&m), None);
    }
}
