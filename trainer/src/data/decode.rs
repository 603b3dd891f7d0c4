//! Decoding image files (PNG, JPEG, anything OpenCV's imgcodecs reads) into [`Image`]s, on
//! all cores.

use std::path::{Path, PathBuf};

use opencv::{core, imgcodecs, imgproc, prelude::*};

use super::{DataError, Image};
use crate::data::error::cv_err;

/// File extensions taken as images in a class folder (case-insensitive); other files
/// (`.txt`, `.DS_Store`, ...) are skipped.
pub(crate) const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

pub(crate) fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Decodes one file: grey images stay 1-channel, colour ones become RGB (alpha dropped),
/// 16-bit ones are scaled to 8 bits.
pub(crate) fn decode_file(path: &Path) -> Result<Image, DataError> {
    let bytes = std::fs::read(path).map_err(DataError::io(path))?;
    decode_bytes(&bytes).map_err(|reason| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    })
}

/// Decodes encoded image bytes; the error is a reason for [`DataError::Decode`].
pub(crate) fn decode_bytes(bytes: &[u8]) -> Result<Image, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let buf = core::Vector::<u8>::from_slice(bytes);
    // ANYCOLOR keeps grey images grey; without ANYDEPTH everything comes out 8-bit.
    let mat = imgcodecs::imdecode(&buf, imgcodecs::IMREAD_ANYCOLOR)
        .map_err(|e| format!("OpenCV: {}", e.message))?;
    if mat.empty() {
        return Err("OpenCV could not decode it (truncated file or unknown format)".into());
    }
    let channels = usize::try_from(mat.channels()).unwrap_or(0);
    let (width, height) = (mat.cols() as usize, mat.rows() as usize);
    let rgb = match channels {
        1 => mat,
        3 | 4 => {
            let code = if channels == 3 {
                imgproc::COLOR_BGR2RGB
            } else {
                imgproc::COLOR_BGRA2RGB
            };
            let mut out = core::Mat::default();
            imgproc::cvt_color_def(&mat, &mut out, code)
                .map_err(|e| format!("OpenCV colour conversion: {}", e.message))?;
            out
        }
        n => return Err(format!("it has {n} channels")),
    };
    let channels = channels.min(3);
    let pixels = rgb
        .data_bytes()
        .map_err(|e| format!("OpenCV: {}", e.message))?
        .to_vec();
    if pixels.len() != width * height * channels {
        return Err(format!(
            "decoded {} bytes for {width}x{height}x{channels}",
            pixels.len()
        ));
    }
    Ok(Image {
        width,
        height,
        channels,
        pixels,
    })
}

/// Decodes `paths` on all cores, in order. The first failure (in path order) is returned.
pub(crate) fn decode_all(paths: &[PathBuf]) -> Result<Vec<Image>, DataError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(paths.len().max(1));
    let chunk = paths.len().div_ceil(threads).max(1);
    let results: Vec<Result<Vec<Image>, DataError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|p| decode_file(p)).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(_) => Err(DataError::Decode {
                    path: PathBuf::from("(decoder thread)"),
                    reason: "the decoder thread panicked".into(),
                }),
            })
            .collect()
    });
    let mut images = Vec::with_capacity(paths.len());
    for part in results {
        images.extend(part?);
    }
    Ok(images)
}

/// Makes all images share one channel count: grey stays grey only if every image is grey,
/// otherwise grey images are replicated to RGB. Returns the channel count.
pub(crate) fn unify_channels(images: &mut [Image]) -> usize {
    if images.iter().all(|i| i.channels == 1) {
        return 1;
    }
    for img in images.iter_mut() {
        if img.channels == 1 {
            *img = img.to_rgb();
        }
    }
    3
}

/// Encodes `img` as PNG into `path` (grey or RGB, 8-bit).
pub(crate) fn write_png(img: &Image, path: &Path) -> Result<(), DataError> {
    let werr = |reason: String| DataError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::create(path).map_err(|e| werr(e.to_string()))?;
    let (w, h) = (
        u32::try_from(img.width).map_err(|e| werr(e.to_string()))?,
        u32::try_from(img.height).map_err(|e| werr(e.to_string()))?,
    );
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(if img.channels == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| werr(e.to_string()))?;
    writer
        .write_image_data(&img.pixels)
        .map_err(|e| werr(e.to_string()))?;
    writer.finish().map_err(|e| werr(e.to_string()))
}

/// Wraps an image as an OpenCV `Mat` (a copy; OpenCV owns the result).
pub(crate) fn to_mat(img: &Image) -> Result<core::Mat, DataError> {
    let typ = if img.channels == 1 {
        core::CV_8UC1
    } else {
        core::CV_8UC3
    };
    let mut mat = core::Mat::new_rows_cols_with_default(
        img.height as i32,
        img.width as i32,
        typ,
        core::Scalar::all(0.0),
    )
    .map_err(cv_err("allocating an image"))?;
    mat.data_bytes_mut()
        .map_err(cv_err("allocating an image"))?
        .copy_from_slice(&img.pixels);
    Ok(mat)
}

/// Decodes `paths` (labels already assigned) into a dataset described as `kind source`;
/// shared end of the image-folder and CSV loaders.
pub(crate) fn dataset_from_files(
    kind: &str,
    source: &std::path::Path,
    classes: Vec<String>,
    labels: Vec<usize>,
    paths: &[PathBuf],
) -> Result<super::Dataset, DataError> {
    let mut images = decode_all(paths)?;
    let channels = unify_channels(&mut images);
    Ok(super::Dataset {
        description: format!(
            "{kind} {} ({} images, {} classes, {})",
            source.display(),
            images.len(),
            classes.len(),
            if channels == 1 { "grey" } else { "RGB" }
        ),
        classes,
        images,
        labels,
        origins: paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        predefined_test: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_grey_and_rgb() {
        let dir = tempfile::tempdir().expect("temporary directory");
        for channels in [1, 3] {
            let img = Image {
                width: 5,
                height: 3,
                channels,
                pixels: (0..15 * channels).map(|v| (v * 7 % 256) as u8).collect(),
            };
            let path = dir.path().join(format!("{channels}.png"));
            write_png(&img, &path).expect("write png");
            assert_eq!(
                decode_file(&path).expect("decode"),
                img,
                "{channels} channels"
            );
        }
    }

    #[test]
    fn real_photo_decodes_as_rgb() {
        let img = decode_file(&crate::test_deps("data/photos/coffee.png")).expect("decode");
        assert_eq!((img.width, img.height, img.channels), (600, 400, 3));
        // The coffee photo is warm: on average red exceeds blue, which would be the other way
        // round if BGR had not been converted.
        let (mut r, mut b) = (0u64, 0u64);
        for px in img.pixels.chunks(3) {
            r += u64::from(px[0]);
            b += u64::from(px[2]);
        }
        assert!(r > b, "red {r} blue {b}");
    }

    #[test]
    fn garbage_and_empty_bytes_are_refused() {
        assert!(decode_bytes(b"").is_err());
        assert!(decode_bytes(b"this is not an image at all").is_err());
    }

    #[test]
    fn grey_is_expanded_only_when_mixed() {
        let grey = Image {
            width: 1,
            height: 1,
            channels: 1,
            pixels: vec![9],
        };
        let mut all_grey = vec![grey.clone(), grey.clone()];
        assert_eq!(unify_channels(&mut all_grey), 1);
        let mut mixed = vec![grey.to_rgb(), grey];
        assert_eq!(unify_channels(&mut mixed), 3);
        assert_eq!(mixed[1].pixels, vec![9, 9, 9]);
    }
}
