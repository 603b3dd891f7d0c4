//! `vision-trainer quantize`: arguments and the command (main.rs only dispatches here).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};

use crate::data::DataSpec;
use crate::onnx::ModelProto;

use super::{
    Activations, CpuInt8, EvalSet, Images, Method, QuantizeOptions, describe, evaluate, quantize,
    sets, write_outcome,
};

/// Quantize a float model (int8 QDQ with calibration, dynamic int8, or fp16) and keep it only
/// if its top-1 on the test split stays within --max-accuracy-drop of the float model's.
///
/// Static int8 (entropy, minmax, percentile) calibrates on --calibration-size images drawn from
/// the training split and writes ONNX Runtime's QDQ format (int8 per-channel weights, int32
/// biases). The report (printed, and as OUT.report.json) gives size, top-1 and throughput at
/// batch 1 and 8 of both models. A rejected candidate is kept as OUT.rejected.onnx and the
/// command fails.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct QuantizeArgs {
    /// The float model: an .onnx file with vision.* metadata written by vision-trainer.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Calibration and test data: fashion-mnist[:DIR], folder:PATH, csv:PATH. Default: the
    /// data set the model's vision.model metadata names.
    #[arg(long, value_name = "SPEC", conflicts_with = "photos")]
    pub data: Option<String>,
    /// Unlabelled photos (PNG/JPEG) instead of a labelled data set, for models trained on data
    /// not available here (the ImageNet EfficientNet-Lite0): random crops for calibration and
    /// for the test, where top-1 is agreement with the float model.
    #[arg(long, value_name = "DIR")]
    pub photos: Option<PathBuf>,
    /// How to quantize.
    #[arg(long, value_enum, default_value_t = Method::Entropy)]
    pub method: Method,
    /// Percentile of each tensor's values kept by --method percentile.
    #[arg(long, default_value_t = 99.999)]
    pub percentile: f64,
    /// Calibration images, drawn at random from the training split.
    #[arg(long, default_value_t = 256)]
    pub calibration_size: usize,
    /// Test images to evaluate on (default: the whole test split; 200 crops with --photos).
    #[arg(long, value_name = "N")]
    pub test_size: Option<usize>,
    /// Where to write the quantized model. Default: MODEL with .int8/.int8-dynamic/.fp16
    /// before .onnx.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Op types to quantize, comma-separated (static default: Conv,MatMul,Gemm,Add,
    /// GlobalAveragePool; dynamic default: MatMul,Gemm; Conv is also accepted).
    #[arg(long, value_name = "OPS", value_delimiter = ',')]
    pub op_types: Vec<String>,
    /// Node names to keep in float (repeat, or comma-separated).
    #[arg(long, value_name = "NODE", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// One weight scale per output channel (default).
    #[arg(long, overrides_with = "per_tensor")]
    pub per_channel: bool,
    /// One weight scale per tensor.
    #[arg(long, overrides_with = "per_channel")]
    pub per_tensor: bool,
    /// 7-bit weights, for x86 CPUs without VNNI (default there; off with VNNI).
    #[arg(long, overrides_with = "full_range")]
    pub reduce_range: bool,
    /// 8-bit weights even without VNNI.
    #[arg(long, overrides_with = "reduce_range")]
    pub full_range: bool,
    /// Signedness of quantized activations (default u8: ORT fuses every int8 node with it on
    /// x86; s8 leaves the residual Adds in float).
    #[arg(long, value_enum)]
    pub activations: Option<Activations>,
    /// Largest accepted top-1 drop against the float model, in points. With --photos the
    /// top-1 is agreement with the float model, which is stricter than an accuracy drop (every
    /// changed answer counts, right or wrong): EfficientNet-Lite0 int8 agrees on 95-97 % of
    /// photo crops, so such a check needs a budget of about 5.
    #[arg(long, default_value_t = 1.0)]
    pub max_accuracy_drop: f64,
    /// ONNX Runtime intra-op threads for calibration and measurement (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Split seed (default: the model's vision.model seed, else 42).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the calibration and test tensors here as .npy (calibration.npy,
    /// test.npy, test_labels.npy) for other quantizers to use the same images.
    #[arg(long, value_name = "DIR")]
    pub save_tensors: Option<PathBuf>,
    /// ONNX Runtime shared library (default: .deps/onnxruntime/lib/libonnxruntime.so).
    #[arg(long, value_name = "PATH", env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,
}

fn default_out(model: &Path, method: Method) -> PathBuf {
    let stem = model
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let tag = match method {
        Method::Dynamic => "int8-dynamic",
        Method::Fp16 => "fp16",
        _ => "int8",
    };
    model.with_file_name(format!("{stem}.{tag}.onnx"))
}

/// Writes `data` (shape `dims`) as a NumPy .npy file.
pub fn write_npy(path: &Path, descr: &str, dims: &[usize], data: &[u8]) -> std::io::Result<()> {
    let shape = match dims {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            dims.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes)
}

fn save_tensors(dir: &Path, calib: &Images, test: &EvalSet) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for (name, images) in [("calibration.npy", calib), ("test.npy", &test.images)] {
        let mut dims = vec![images.len()];
        dims.extend_from_slice(&images.dims);
        let path = dir.join(name);
        write_npy(&path, "<f4", &dims, &f32s(&images.data))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(labels) = &test.labels {
        let bytes: Vec<u8> = labels
            .iter()
            .flat_map(|&l| (l as i64).to_le_bytes())
            .collect();
        let path = dir.join("test_labels.npy");
        write_npy(&path, "<i8", &[labels.len()], &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs the command; fails when the gate rejects the candidate. Every error names the model.
pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let model = args.model.clone();
    quantize_file(args).with_context(|| format!("quantizing {}", model.display()))
}

fn quantize_file(args: QuantizeArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let model = ModelProto::from_bytes(&bytes)
        .with_context(|| format!("{} is not an ONNX model", args.model.display()))?;
    super::check_contract(&model)?;

    let library = crate::project::ort_library(args.ort_library.clone());
    let env = crate::onnx::runtime::load_runtime(&library)?;

    let calibration = if args.method.is_static() {
        args.calibration_size
    } else {
        0
    };
    let (calib, test) = if let Some(dir) = &args.photos {
        sets::photos(dir, &model, calibration, args.test_size.unwrap_or(200))?
    } else {
        let (spec, seed) = match &args.data {
            Some(s) => (
                DataSpec::from_str(s).with_context(|| format!("--data {s}"))?,
                sets::training_data(&model).map_or(sets::DEFAULT_SEED, |(_, seed)| seed),
            ),
            None => sets::training_data(&model).context(
                "the model's vision.model names no data set available here: give --data \
                 (fashion-mnist, folder:PATH, csv:PATH) or --photos DIR",
            )?,
        };
        let seed = args.seed.unwrap_or(seed);
        sets::labelled(&spec, seed, &model, calibration, args.test_size)?
    };
    if let Some(dir) = &args.save_tensors {
        save_tensors(dir, &calib, &test)?;
    }

    let mut opts = QuantizeOptions::new(args.method);
    let cpu = CpuInt8::detect();
    opts.percentile = args.percentile;
    opts.op_types = (!args.op_types.is_empty()).then(|| args.op_types.clone());
    opts.exclude = args.exclude.clone();
    opts.per_channel = !args.per_tensor;
    if args.reduce_range {
        opts.reduce_range = true;
    } else if args.full_range {
        opts.reduce_range = false;
    }
    if let Some(a) = args.activations {
        opts.activations = a;
    }
    opts.max_accuracy_drop = args.max_accuracy_drop;
    if args.threads > 0 {
        opts.session.threads = args.threads;
    }
    if !(0.0..=100.0).contains(&args.percentile) {
        bail!("--percentile {} is not in 0..=100", args.percentile);
    }

    println!(
        "{}: {} (CPU {} VNNI), calibration {} images, test {} images",
        args.model.display(),
        opts.description(),
        if cpu.vnni { "with" } else { "without" },
        calib.len(),
        test.images.len()
    );
    let (mut candidate, summary) = quantize(env, &model, &calib, &opts)?;
    if !summary.skipped.is_empty() {
        for (node, why) in &summary.skipped {
            println!("  left in float: {node}: {why}");
        }
    }
    let report = evaluate(env, &model, &candidate, summary, &test, &opts)?;
    let parent_name = args
        .model
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    describe(&mut candidate, &report, &parent_name)?;
    print!("{}", report.text());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.model, args.method));
    let json = write_outcome(&candidate, &report, &out)?;
    println!("wrote {} and {}", out.display(), json.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.npy");
        write_npy(&path, "<f4", &[2, 3], &[0u8; 24])?;
        let b = std::fs::read(&path)?;
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = String::from_utf8_lossy(&b[10..10 + header_len]);
        assert!(header.contains("'shape': (2, 3)"), "{header}");
        assert_eq!(b.len(), 10 + header_len + 24);
        Ok(())
    }

    #[test]
    fn default_names() {
        assert_eq!(
            default_out(Path::new("m/a.onnx"), Method::Entropy),
            Path::new("m/a.int8.onnx")
        );
        assert_eq!(
            default_out(Path::new("a.onnx"), Method::Fp16),
            Path::new("a.fp16.onnx")
        );
    }
}
