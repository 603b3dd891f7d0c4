//! Fashion-MNIST in the IDX format (gzip-compressed or not), as the Debian package
//! `dataset-fashion-mnist` installs it.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Image};

/// Where Debian's `dataset-fashion-mnist` puts the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, index = label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// IDX magic numbers: two zero bytes, element type 0x08 (unsigned byte), dimension count.
const MAGIC_IMAGES: u32 = 0x0000_0803;
const MAGIC_LABELS: u32 = 0x0000_0801;

/// The four files, without the optional `.gz`.
const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// One IDX file's contents after the header.
struct Idx {
    path: PathBuf,
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// Finds `name` or `name.gz` in `dir`.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::NotFound { path: gz })
}

/// Reads a whole file, inflating it when it starts with the gzip magic number.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(DataError::io(path))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 2);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::Idx {
                path: path.to_path_buf(),
                reason: format!("gzip data is corrupt: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file of unsigned bytes, checking the magic number and that the data holds
/// exactly the product of the dimensions.
fn parse(path: &Path, bytes: Vec<u8>, magic: u32) -> Result<Idx, DataError> {
    let bad = |reason: String| DataError::Idx {
        path: path.to_path_buf(),
        reason,
    };
    let word = |i: usize| -> Option<u32> {
        let b = bytes.get(4 * i..4 * i + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).ok_or_else(|| bad(format!("only {} bytes long", bytes.len())))?;
    if found != magic {
        return Err(bad(format!(
            "magic number 0x{found:08x}, expected 0x{magic:08x} (unsigned bytes, {} dimensions)",
            magic & 0xff
        )));
    }
    let ndims = (magic & 0xff) as usize;
    let mut dims = Vec::with_capacity(ndims);
    for i in 0..ndims {
        let d = word(1 + i).ok_or_else(|| bad("the header is truncated".into()))?;
        dims.push(d as usize);
    }
    let header = 4 * (1 + ndims);
    let expected = dims.iter().product::<usize>();
    let actual = bytes.len() - header;
    if actual != expected {
        return Err(bad(format!(
            "dimensions {dims:?} need {expected} data bytes but the file holds {actual}"
        )));
    }
    let mut data = bytes;
    data.drain(..header);
    Ok(Idx {
        path: path.to_path_buf(),
        dims,
        data,
    })
}

fn read_idx(dir: &Path, name: &str, magic: u32) -> Result<Idx, DataError> {
    let path = find(dir, name)?;
    let bytes = read_maybe_gz(&path)?;
    parse(&path, bytes, magic)
}

/// One half (train or test): images and labels, checked against each other.
fn read_part(
    dir: &Path,
    images: &str,
    labels: &str,
    classes: usize,
) -> Result<(Idx, Idx), DataError> {
    let img = read_idx(dir, images, MAGIC_IMAGES)?;
    let lab = read_idx(dir, labels, MAGIC_LABELS)?;
    if img.dims[0] != lab.dims[0] {
        return Err(DataError::Idx {
            path: lab.path,
            reason: format!(
                "{} labels for {} images in {}",
                lab.dims[0],
                img.dims[0],
                img.path.display()
            ),
        });
    }
    if img.dims[1] == 0 || img.dims[2] == 0 {
        return Err(DataError::Idx {
            path: img.path,
            reason: format!("images of {}x{} pixels", img.dims[2], img.dims[1]),
        });
    }
    if let Some(pos) = lab.data.iter().position(|&l| usize::from(l) >= classes) {
        return Err(DataError::Idx {
            path: lab.path,
            reason: format!(
                "label {} of item {pos} is not one of the {classes} classes",
                lab.data[pos]
            ),
        });
    }
    Ok((img, lab))
}

/// Loads the 60 000 training and 10 000 test images of Fashion-MNIST from `dir`; the test
/// images come last and are the dataset's `predefined_test`.
pub(crate) fn load_fashion_mnist(dir: &Path) -> Result<Dataset, DataError> {
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
    let classes = FASHION_MNIST_CLASSES.len();
    // The two halves inflate in parallel: most of the load time is gzip.
    let (train, test) = std::thread::scope(|s| {
        let test = s.spawn(|| read_part(dir, TEST_IMAGES, TEST_LABELS, classes));
        let train = read_part(dir, TRAIN_IMAGES, TRAIN_LABELS, classes);
        let test = test.join().unwrap_or_else(|_| {
            Err(DataError::Idx {
                path: dir.join(TEST_IMAGES),
                reason: "the reader thread panicked".into(),
            })
        });
        (train, test)
    });
    let (train, test) = (train?, test?);
    if train.0.dims[1..] != test.0.dims[1..] {
        return Err(DataError::Idx {
            path: test.0.path,
            reason: format!(
                "test images are {:?} but training images are {:?}",
                &test.0.dims[1..],
                &train.0.dims[1..]
            ),
        });
    }
    let n_train = train.0.dims[0];
    let n = n_train + test.0.dims[0];
    let mut ds = Dataset {
        classes: FASHION_MNIST_CLASSES.map(str::to_owned).to_vec(),
        images: Vec::with_capacity(n),
        labels: Vec::with_capacity(n),
        origins: Vec::with_capacity(n),
        predefined_test: Some((n_train..n).collect()),
        description: format!(
            "Fashion-MNIST ({} train + {} test, {}x{} grey, {})",
            n_train,
            n - n_train,
            train.0.dims[2],
            train.0.dims[1],
            dir.display()
        ),
    };
    for (img, lab) in [train, test] {
        let (h, w) = (img.dims[1], img.dims[2]);
        let name = img
            .path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        for (i, (pixels, &label)) in img.data.chunks_exact(w * h).zip(&lab.data).enumerate() {
            ds.images.push(Image {
                width: w,
                height: h,
                channels: 1,
                pixels: pixels.to_vec(),
            });
            ds.labels.push(usize::from(label));
            ds.origins.push(format!("{name}#{i}"));
        }
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(data);
        v
    }

    #[test]
    fn parses_a_small_file() {
        let bytes = idx_bytes(MAGIC_IMAGES, &[2, 2, 3], &[7; 12]);
        let idx = parse(Path::new("x"), bytes, MAGIC_IMAGES).expect("parse");
        assert_eq!(idx.dims, vec![2, 2, 3]);
        assert_eq!(idx.data, vec![7; 12]);
    }

    #[test]
    fn wrong_magic_and_size_are_named() {
        let bytes = idx_bytes(MAGIC_LABELS, &[2], &[1, 2]);
        let err = parse(Path::new("f.idx"), bytes, MAGIC_IMAGES)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("f.idx") && err.contains("magic number 0x00000801"),
            "{err}"
        );
        let bytes = idx_bytes(MAGIC_IMAGES, &[2, 2, 3], &[7; 11]);
        let err = parse(Path::new("f.idx"), bytes, MAGIC_IMAGES)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("need 12 data bytes but the file holds 11"),
            "{err}"
        );
        let err = parse(Path::new("f.idx"), vec![0, 0], MAGIC_IMAGES)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("only 2 bytes long"), "{err}");
    }

    #[test]
    fn gzip_and_plain_files_load_alike() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let images: Vec<u8> = (0..3 * 4).map(|v| v as u8).collect();
        let write = |name: &str, bytes: Vec<u8>, gz: bool| {
            let path = dir.path().join(if gz {
                format!("{name}.gz")
            } else {
                name.to_owned()
            });
            let mut f = std::fs::File::create(path).expect("create");
            if gz {
                let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
                enc.write_all(&bytes).expect("write");
                enc.finish().expect("finish");
            } else {
                f.write_all(&bytes).expect("write");
            }
        };
        write(
            TRAIN_IMAGES,
            idx_bytes(MAGIC_IMAGES, &[3, 2, 2], &images),
            true,
        );
        write(
            TRAIN_LABELS,
            idx_bytes(MAGIC_LABELS, &[3], &[9, 0, 3]),
            false,
        );
        write(
            TEST_IMAGES,
            idx_bytes(MAGIC_IMAGES, &[1, 2, 2], &[5; 4]),
            false,
        );
        write(TEST_LABELS, idx_bytes(MAGIC_LABELS, &[1], &[1]), true);
        let ds = load_fashion_mnist(dir.path()).expect("load");
        assert_eq!(ds.labels, vec![9, 0, 3, 1]);
        assert_eq!(ds.images[1].pixels, vec![4, 5, 6, 7]);
        assert_eq!(ds.predefined_test, Some(vec![3]));
        assert_eq!(ds.origins[3], "t10k-images-idx3-ubyte#0");

        // A label beyond the 10 classes is reported with its position.
        write(TEST_LABELS, idx_bytes(MAGIC_LABELS, &[1], &[10]), true);
        let err = load_fashion_mnist(dir.path()).unwrap_err().to_string();
        assert!(err.contains("label 10 of item 0"), "{err}");
        // Label and image counts must agree.
        write(TEST_LABELS, idx_bytes(MAGIC_LABELS, &[2], &[1, 1]), true);
        let err = load_fashion_mnist(dir.path()).unwrap_err().to_string();
        assert!(err.contains("2 labels for 1 images"), "{err}");
    }
}
