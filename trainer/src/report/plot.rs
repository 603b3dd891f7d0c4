//! PNG plots of a run: training curves and the confusion matrix.
//!
//! Drawn with plotters' bitmap backend into an RGB buffer and encoded with the `png` crate.
//! Text needs a TrueType font, read once at run time: `$VISION_TRAINER_FONT` when set,
//! otherwise DejaVu Sans where the distributions put it (Debian package `fonts-dejavu-core`,
//! installed by scripts/setup.sh).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ReportError;
use super::history::History;
use super::metrics::Metrics;

/// Environment variable naming a `.ttf` file to use instead of the system's DejaVu Sans.
pub const FONT_ENV: &str = "VISION_TRAINER_FONT";

/// Width and height in pixels of the image [`plot_curves`] writes.
pub const CURVES_SIZE: (u32, u32) = (1500, 480);

/// Where DejaVu Sans lives on Debian/Ubuntu, Arch, Fedora and Alpine.
const SYSTEM_FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// The font files the plots try, in order: only `$VISION_TRAINER_FONT` when it is set,
/// otherwise DejaVu Sans in the usual system places.
pub fn font_candidates() -> Vec<PathBuf> {
    match std::env::var_os(FONT_ENV) {
        Some(path) if !path.is_empty() => vec![PathBuf::from(path)],
        _ => SYSTEM_FONTS.iter().map(PathBuf::from).collect(),
    }
}

/// Why the font could not be registered (cloneable, so the outcome can be kept once).
#[derive(Debug, Clone)]
enum FontProblem {
    Missing(Vec<PathBuf>),
    Invalid(PathBuf),
}

/// Registers the first readable candidate as plotters' "sans-serif" family, once per process.
fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<Result<(), FontProblem>> = OnceLock::new();
    let outcome = REGISTERED.get_or_init(|| {
        let (path, bytes) = read_font(font_candidates())?;
        register(FONT, path, bytes)
    });
    outcome.clone().map_err(|p| match p {
        FontProblem::Missing(tried) => ReportError::FontMissing { tried },
        FontProblem::Invalid(path) => ReportError::FontInvalid { path },
    })
}

/// The first of `tried` that can be read.
fn read_font(tried: Vec<PathBuf>) -> Result<(PathBuf, Vec<u8>), FontProblem> {
    tried
        .iter()
        .find_map(|p| std::fs::read(p).ok().map(|b| (p.clone(), b)))
        .ok_or(FontProblem::Missing(tried))
}

/// Registers `bytes` as the normal style of font family `family`.
fn register(family: &str, path: PathBuf, bytes: Vec<u8>) -> Result<(), FontProblem> {
    // plotters keeps fonts for the life of the process; this happens once per family.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(family, FontStyle::Normal, bytes)
        .map_err(|_| FontProblem::Invalid(path))
}

/// The family the plots' text uses; [`ensure_font`] registers it.
const FONT: &str = "sans-serif";

/// Writes an RGB buffer as a PNG file, through a temporary file so that a reader never sees
/// half a picture.
fn write_png(path: &Path, rgb: &[u8], (width, height): (u32, u32)) -> Result<(), ReportError> {
    let tmp = tmp_path(path);
    let io = |source| ReportError::Io {
        path: tmp.clone(),
        source,
    };
    let png = |source| ReportError::Png {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(&tmp).map_err(io)?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(png)?;
    writer.write_image_data(rgb).map_err(png)?;
    writer.finish().map_err(png)?;
    std::fs::rename(&tmp, path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `dir/.name.tmp` next to `path`.
pub(super) fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Renders with `draw` into a white RGB canvas of `size` and writes it to `path` as PNG.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), ReportError> {
    ensure_font()?;
    let mut rgb = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(&root)
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|message| ReportError::Draw {
                path: path.to_path_buf(),
                message,
            })?;
    }
    write_png(path, &rgb, size)
}

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(214, 39, 40);
const LR: RGBColor = RGBColor(44, 160, 44);

/// One line of a panel: its legend name, colour and (epoch, value) points.
struct Line {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

impl Line {
    fn new(
        history: &History,
        name: &'static str,
        color: RGBColor,
        value: impl Fn(&super::EpochRecord) -> Option<f64>,
    ) -> Self {
        let points = history
            .epochs
            .iter()
            .filter_map(|r| {
                value(r)
                    .filter(|v| v.is_finite())
                    .map(|v| (r.epoch as f64, v))
            })
            .collect();
        Line {
            name,
            color,
            points,
        }
    }
}

/// `lo..hi` padded by 5 % (or ±0.5 / ±|v|·10 % for a single value), clamped to `limits`.
fn padded(values: impl Iterator<Item = f64>, limits: (f64, f64)) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else if lo != 0.0 {
        lo.abs() * 0.1
    } else {
        0.5
    };
    ((lo - pad).max(limits.0), (hi + pad).min(limits.1))
}

/// Compact tick label with 3 significant digits (so that close ticks stay distinct), in
/// exponent form for very small or large values.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e4).contains(&a) {
        let s = format!("{v:.2e}");
        // 1.50e-3 → 1.5e-3, 1.00e-3 → 1e-3
        match s.split_once('e') {
            Some((mantissa, exp)) => {
                let m = mantissa.trim_end_matches('0').trim_end_matches('.');
                format!("{m}e{exp}")
            }
            None => s,
        }
    } else {
        let decimals = if a == 0.0 {
            0
        } else {
            (2 - a.log10().floor() as i32).clamp(0, 4) as usize
        };
        let s = format!("{v:.decimals$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            &s
        };
        if s == "-0" { "0".into() } else { s.into() }
    }
}

/// What one panel of the curves shows.
struct Panel<'a> {
    title: &'a str,
    y_desc: &'a str,
    lines: &'a [Line],
    /// Bounds the padded y range may not cross (0 for losses, 0..1 for accuracies).
    y_limits: (f64, f64),
    /// Plot log10 of the values, with tick labels in the values themselves.
    log_y: bool,
    /// Where the legend sits, out of the way of the lines.
    legend: SeriesLabelPosition,
}

/// One panel with axes, ticks, labels and a legend.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    epochs: (f64, f64),
    p: Panel<'_>,
) -> Result<(), String> {
    let Panel {
        title,
        y_desc,
        lines,
        y_limits,
        log_y,
        legend,
    } = p;
    let transform = |v: f64| if log_y { v.log10() } else { v };
    let (y0, y1) = padded(
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|&(_, v)| transform(v))),
        if log_y {
            (f64::NEG_INFINITY, f64::INFINITY)
        } else {
            y_limits
        },
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(epochs.0..epochs.1, y0..y1)
        .map_err(|e| e.to_string())?;
    let whole = |x: &f64| {
        if (x - x.round()).abs() < 1e-9 {
            format!("{x:.0}")
        } else {
            String::new()
        }
    };
    let n_epochs = (epochs.1 - epochs.0).round() as usize + 1;
    let y_label = |v: &f64| {
        if log_y {
            tick(10f64.powf(*v))
        } else {
            tick(*v)
        }
    };
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(n_epochs.clamp(2, 11))
        .y_labels(6)
        .x_label_formatter(&whole)
        .y_label_formatter(&y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(|e| e.to_string())?;
    for line in lines.iter().filter(|l| !l.points.is_empty()) {
        let color = line.color;
        let points: Vec<(f64, f64)> = line
            .points
            .iter()
            .map(|&(x, v)| (x, transform(v)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(line.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        // Markers, so that a single epoch shows as well.
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(|e| e.to_string())
}

/// Draws the training curves of `history` into a PNG of [`CURVES_SIZE`] at `path`: three
/// panels over the epochs — loss (train and validation), accuracy (train and validation) and
/// the learning rate (log scale when it spans more than a factor of 20) — each with axes,
/// ticks, labels and a legend. Epochs without validation, and NaN values, are left out.
///
/// Errors when the history is empty, when no font is found (see [`font_candidates`]) or when
/// the file cannot be written.
pub fn plot_curves(history: &History, path: &Path) -> Result<(), ReportError> {
    if history.epochs.is_empty() {
        return Err(ReportError::NothingToPlot("the history has no epochs"));
    }
    let (first, last) = history.epochs.iter().fold((usize::MAX, 0), |(lo, hi), r| {
        (lo.min(r.epoch), hi.max(r.epoch))
    });
    let epochs = if first == last {
        (first as f64 - 0.5, last as f64 + 0.5)
    } else {
        (first as f64, last as f64)
    };
    let loss = [
        Line::new(history, "train", TRAIN, |r| Some(r.train_loss)),
        Line::new(history, "validation", VAL, |r| r.val_loss),
    ];
    let accuracy = [
        Line::new(history, "train", TRAIN, |r| Some(r.train_accuracy)),
        Line::new(history, "validation", VAL, |r| r.val_accuracy),
    ];
    let lr = [Line::new(history, "learning rate", LR, |r| {
        Some(r.learning_rate)
    })];
    let (lr_lo, lr_hi) = lr[0]
        .points
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let lr_log = lr_lo > 0.0 && lr_hi / lr_lo > 20.0;
    render(path, CURVES_SIZE, |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = root.split_evenly((1, 3));
        let lr_desc = if lr_log {
            "learning rate (log)"
        } else {
            "learning rate"
        };
        let panels_data = [
            Panel {
                title: "loss",
                y_desc: "loss",
                lines: &loss,
                y_limits: (0.0, f64::INFINITY),
                log_y: false,
                legend: SeriesLabelPosition::UpperRight,
            },
            Panel {
                title: "accuracy",
                y_desc: "accuracy",
                lines: &accuracy,
                y_limits: (0.0, 1.0),
                log_y: false,
                legend: SeriesLabelPosition::LowerRight,
            },
            Panel {
                title: "learning rate",
                y_desc: lr_desc,
                lines: &lr,
                y_limits: (f64::NEG_INFINITY, f64::INFINITY),
                log_y: lr_log,
                legend: SeriesLabelPosition::UpperRight,
            },
        ];
        for (area, p) in panels.iter().zip(panels_data) {
            panel(area, epochs, p)?;
        }
        Ok(())
    })
}

/// Layout of the confusion plot for `k` classes.
struct ConfusionLayout {
    cell: u32,
    labels: bool,
    counts: bool,
    left: u32,
    top: u32,
    bottom: u32,
    right: u32,
}

impl ConfusionLayout {
    /// Class-name area beside and below the matrix, when names are shown.
    const NAMES: u32 = 140;

    fn new(k: usize) -> Self {
        // About 720 px of matrix, cells no larger than 80 px and at least 1 px.
        let cell = (720 / k.max(1) as u32).clamp(1, 80);
        let labels = cell >= 12;
        let names = if labels { Self::NAMES } else { 10 };
        ConfusionLayout {
            cell,
            labels,
            counts: cell >= 28,
            left: 30 + names,
            top: 60,
            bottom: 30 + names,
            right: 110,
        }
    }

    fn size(&self, k: usize) -> (u32, u32) {
        let side = self.cell * k as u32;
        (self.left + side + self.right, self.top + side + self.bottom)
    }
}

/// Width and height in pixels of the image [`plot_confusion`] writes for `classes` classes:
/// the matrix is about 720 px (cells of 720/K px, 1 to 80), plus room for names and a colour
/// bar. Class names are written when cells are at least 12 px (K ≤ 60), counts when they are at
/// least 28 px (K ≤ 25).
pub fn confusion_size(classes: usize) -> (u32, u32) {
    ConfusionLayout::new(classes).size(classes)
}

/// White → dark blue ("Blues") for a share in 0..=1.
fn blues(share: f64) -> RGBColor {
    let s = share.clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * s).round() as u8;
    RGBColor(mix(247.0, 8.0), mix(251.0, 48.0), mix(255.0, 107.0))
}

/// `text` with its middle cut out ("…") until it fits in `width` pixels in `style`.
fn fit(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    text: &str,
    style: &TextStyle<'_>,
    width: u32,
) -> Result<String, String> {
    let fits = |t: &str| -> Result<bool, String> {
        let (w, _) = area
            .estimate_text_size(t, style)
            .map_err(|e| e.to_string())?;
        Ok(w <= width)
    };
    if fits(text)? {
        return Ok(text.to_string());
    }
    // Keep both ends: class names often differ only at the end ("... 12", "... 13").
    let chars: Vec<char> = text.chars().collect();
    for keep in (1..chars.len()).rev() {
        let tail = keep / 2;
        let cut: String = chars[..keep - tail]
            .iter()
            .chain(['…'].iter())
            .chain(chars[chars.len() - tail..].iter())
            .collect();
        if fits(&cut)? {
            return Ok(cut);
        }
    }
    Ok("…".into())
}

/// Draws the confusion matrix of `metrics` as a heat map into a PNG of
/// [`confusion_size`]`(classes)` at `path`: rows are true classes, columns predicted ones;
/// a cell's colour is its share of the row (rows without samples stay grey), with the count
/// written in it and the class names along both axes when there is room, and a colour bar.
///
/// Errors when there are no classes, when no font is found or when the file cannot be written.
pub fn plot_confusion(metrics: &Metrics, path: &Path) -> Result<(), ReportError> {
    let k = metrics.confusion.len();
    if k == 0 {
        return Err(ReportError::NothingToPlot(
            "the confusion matrix has no classes",
        ));
    }
    let layout = ConfusionLayout::new(k);
    let size = layout.size(k);
    let names: Vec<&str> = metrics.class_names().collect();
    render(path, size, |root| {
        let e = |e: plotters::drawing::DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (cell, side) = (layout.cell as i32, (layout.cell * k as u32) as i32);
        let (x0, y0) = (layout.left as i32, layout.top as i32);
        let title = format!(
            "confusion matrix: top-1 {:.3} on {} samples (colour: share of the true class)",
            metrics.top1, metrics.count
        );
        root.draw(&Text::new(
            title,
            (12, 18),
            (FONT, 18).into_font().color(&BLACK),
        ))
        .map_err(e)?;

        for (t, row) in metrics.confusion.iter().enumerate() {
            let total: u64 = row.iter().sum();
            for (p, &count) in row.iter().enumerate() {
                let share = if total > 0 {
                    count as f64 / total as f64
                } else {
                    f64::NAN
                };
                let color = if total > 0 {
                    blues(share)
                } else {
                    RGBColor(225, 225, 225)
                };
                let (x, y) = (x0 + p as i32 * cell, y0 + t as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    color.filled(),
                ))
                .map_err(e)?;
                if layout.counts {
                    let ink = if share > 0.5 { WHITE } else { BLACK };
                    let style = TextStyle::from((FONT, (cell as f64 * 0.4).min(16.0)).into_font())
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    root.draw(&Text::new(
                        count.to_string(),
                        (x + cell / 2, y + cell / 2),
                        style,
                    ))
                    .map_err(e)?;
                }
            }
        }
        root.draw(&Rectangle::new(
            [(x0, y0), (x0 + side, y0 + side)],
            RGBColor(120, 120, 120),
        ))
        .map_err(e)?;

        if layout.labels {
            let size = (cell as f64 * 0.6).clamp(10.0, 14.0);
            let room = ConfusionLayout::NAMES - 12;
            let row_style = TextStyle::from((FONT, size).into_font())
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center));
            let col_style =
                TextStyle::from((FONT, size).into_font().transform(FontTransform::Rotate270))
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Right, VPos::Center));
            for (i, name) in names.iter().enumerate() {
                let name = fit(root, name, &row_style, room)?;
                let c = i as i32 * cell + cell / 2;
                root.draw(&Text::new(
                    name.clone(),
                    (x0 - 6, y0 + c),
                    row_style.clone(),
                ))
                .map_err(e)?;
                root.draw(&Text::new(name, (x0 + c, y0 + side + 6), col_style.clone()))
                    .map_err(e)?;
            }
        }
        let axis = TextStyle::from((FONT, 15).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            "predicted class",
            (x0 + side / 2, size.1 as i32 - 14),
            axis.clone(),
        ))
        .map_err(e)?;
        let axis_rot = TextStyle::from((FONT, 15).into_font().transform(FontTransform::Rotate270))
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new("true class", (14, y0 + side / 2), axis_rot))
            .map_err(e)?;

        // Colour bar: share of the row, 0 at the bottom, 1 at the top.
        let (bx, bw) = (x0 + side + 24, 18);
        let bar_h = side.max(100);
        for y in 0..bar_h {
            let share = 1.0 - y as f64 / (bar_h - 1).max(1) as f64;
            root.draw(&Rectangle::new(
                [(bx, y0 + y), (bx + bw, y0 + y + 1)],
                blues(share).filled(),
            ))
            .map_err(e)?;
        }
        root.draw(&Rectangle::new(
            [(bx, y0), (bx + bw, y0 + bar_h)],
            RGBColor(120, 120, 120),
        ))
        .map_err(e)?;
        let tick_style = TextStyle::from((FONT, 13).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (share, label) in [(1.0, "1"), (0.5, "0.5"), (0.0, "0")] {
            let y = y0 + ((1.0 - share) * (bar_h - 1) as f64).round() as i32;
            root.draw(&PathElement::new([(bx + bw, y), (bx + bw + 4, y)], BLACK))
                .map_err(e)?;
            root.draw(&Text::new(label, (bx + bw + 7, y), tick_style.clone()))
                .map_err(e)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::history::tests::record;
    use super::*;
    use std::collections::HashSet;
    use std::io::BufReader;

    /// Decodes a PNG: (width, height, RGB bytes).
    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(BufReader::new(File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn pixels(rgb: &[u8]) -> impl Iterator<Item = [u8; 3]> + '_ {
        rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]])
    }

    /// Pixels in a rectangle (x0..x1, y0..y1) of an image `width` wide.
    fn region(rgb: &[u8], width: u32, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> Vec<[u8; 3]> {
        let mut out = vec![];
        for y in y0..y1 {
            for x in x0..x1 {
                let i = ((y * width + x) * 3) as usize;
                out.push([rgb[i], rgb[i + 1], rgb[i + 2]]);
            }
        }
        out
    }

    fn history(n: usize) -> History {
        History {
            epochs: (1..=n)
                .map(|e| {
                    let mut r = record(e, 2.0 / e as f64, (e > 1).then(|| 0.5 + e as f64 / 40.0));
                    r.learning_rate = 0.1 * 0.5f64.powi(e as i32);
                    r
                })
                .collect(),
        }
    }

    #[test]
    fn curves_png_has_the_size_and_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        plot_curves(&history(12), &path).unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), CURVES_SIZE);
        let all: Vec<[u8; 3]> = pixels(&rgb).collect();
        let non_white = all.iter().filter(|&&p| p != [255, 255, 255]).count();
        assert!(non_white > all.len() / 50, "{non_white} of {}", all.len());
        let distinct: HashSet<[u8; 3]> = all.iter().copied().collect();
        assert!(
            distinct.len() > 50,
            "anti-aliased text and lines: {}",
            distinct.len()
        );
        // Each panel holds its own line colours.
        let third = w / 3;
        let count = |panel: u32, c: RGBColor| {
            region(&rgb, w, (panel * third, 0, (panel + 1) * third, h))
                .iter()
                .filter(|&&p| p == [c.0, c.1, c.2])
                .count()
        };
        for panel in 0..2 {
            assert!(count(panel, TRAIN) > 100, "train line in panel {panel}");
            assert!(count(panel, VAL) > 100, "validation line in panel {panel}");
            assert_eq!(count(panel, LR), 0);
        }
        assert!(count(2, LR) > 100, "learning-rate line");
        assert_eq!(count(2, VAL), 0);
        // Text: dark anti-aliased pixels in the title strip of the first panel.
        let title = region(&rgb, w, (0, 0, third, 40));
        assert!(title.iter().any(|&[r, g, b]| r < 100 && g < 100 && b < 100));
    }

    #[test]
    fn curves_with_one_epoch_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.png");
        plot_curves(&history(1), &path).unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), CURVES_SIZE);
        assert!(pixels(&rgb).any(|p| p == [TRAIN.0, TRAIN.1, TRAIN.2]));

        let e = plot_curves(&History::default(), &path).unwrap_err();
        assert!(matches!(e, ReportError::NothingToPlot(_)), "{e}");
        let bad = dir.path().join("no/such/dir/curves.png");
        let e = plot_curves(&history(3), &bad).unwrap_err();
        assert!(e.to_string().contains("no/such/dir"), "{e}");
    }

    fn metrics(k: usize, per_class: usize) -> Metrics {
        let classes: Vec<String> = (0..k).map(|i| format!("class number {i}")).collect();
        let mut scores = vec![];
        let mut labels = vec![];
        for t in 0..k {
            for i in 0..per_class {
                // Mostly right; every third sample of a class goes to the next class.
                let p = if i % 3 == 2 { (t + 1) % k } else { t };
                scores.extend((0..k).map(|j| if j == p { 1.0 } else { 0.0 }));
                labels.push(t);
            }
        }
        Metrics::compute(&scores, &labels, &classes).unwrap()
    }

    #[test]
    fn confusion_png_colours_follow_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        let m = metrics(4, 6);
        plot_confusion(&m, &path).unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), confusion_size(4));
        let l = ConfusionLayout::new(4);
        assert!(l.labels && l.counts);
        // The centre of a cell is covered by its count text, so sample near a corner.
        let at = |t: u32, p: u32| {
            let (x, y) = (l.left + p * l.cell + 3, l.top + t * l.cell + 3);
            let i = ((y * w + x) * 3) as usize;
            RGBColor(rgb[i], rgb[i + 1], rgb[i + 2])
        };
        // Diagonal 4/6 of the row, next class 2/6, others 0.
        let [d, n, z] = [blues(4.0 / 6.0), blues(2.0 / 6.0), blues(0.0)];
        for t in 0..4 {
            assert_eq!(at(t, t), d, "diagonal cell {t}");
            assert_eq!(at(t, (t + 1) % 4), n, "off-diagonal cell {t}");
            assert_eq!(at(t, (t + 2) % 4), z, "empty cell {t}");
        }
        // Count text inside a cell: anti-aliased, so more colours than the fill alone.
        let cell = region(&rgb, w, (l.left, l.top, l.left + l.cell, l.top + l.cell));
        let colours: HashSet<[u8; 3]> = cell.into_iter().collect();
        assert!(colours.len() > 3, "count text in the cell: {colours:?}");
        // Class names left of the matrix.
        let names = region(&rgb, w, (30, l.top, l.left - 2, l.top + 4 * l.cell));
        assert!(names.iter().filter(|p| p[0] < 128).count() > 50);
    }

    #[test]
    fn confusion_sizes_scale_with_classes() {
        assert_eq!(
            confusion_size(2),
            (30 + 140 + 160 + 110, 60 + 160 + 30 + 140)
        );
        let (w, h) = confusion_size(1000);
        assert!(w < 1300 && h < 1300, "{w}×{h}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.png");
        let m = metrics(100, 3);
        plot_confusion(&m, &path).unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), confusion_size(100));
        assert!(!ConfusionLayout::new(100).labels);
        assert!(
            pixels(&rgb).any(|p| p == [blues(2.0 / 3.0).0, blues(2.0 / 3.0).1, blues(2.0 / 3.0).2])
        );
    }

    #[test]
    fn confusion_of_nothing_is_an_error() {
        let m = Metrics {
            top1: 0.0,
            top5: None,
            classes: vec![],
            macro_f1: 0.0,
            mean_class_accuracy: 0.0,
            confusion: vec![],
            count: 0,
            mean_loss: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let e = plot_confusion(&m, &dir.path().join("c.png")).unwrap_err();
        assert!(matches!(e, ReportError::NothingToPlot(_)), "{e}");
    }

    #[test]
    fn font_problems_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let missing = vec![dir.path().join("a.ttf"), dir.path().join("b.ttf")];
        let Err(FontProblem::Missing(tried)) = read_font(missing.clone()) else {
            panic!("missing fonts must be an error");
        };
        assert_eq!(tried, missing);
        let e = ReportError::FontMissing { tried };
        assert!(e.to_string().contains("a.ttf") && e.to_string().contains("fonts-dejavu-core"));
        assert!(e.to_string().contains(FONT_ENV), "{e}");

        let junk = dir.path().join("junk.ttf");
        std::fs::write(&junk, b"not a font").unwrap();
        let (path, bytes) = read_font(vec![missing[0].clone(), junk.clone()]).unwrap();
        assert_eq!(path, junk);
        assert!(matches!(
            register("vision-test-junk", path, bytes),
            Err(FontProblem::Invalid(p)) if p == junk
        ));
    }

    #[test]
    fn ticks_are_compact() {
        assert_eq!(tick(0.5), "0.5");
        assert_eq!(tick(1.0), "1");
        assert_eq!(tick(0.125), "0.125");
        assert_eq!(tick(0.001), "1e-3");
        assert_eq!(tick(0.00105), "1.05e-3");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(-0.0), "0");
        // Close ticks stay distinct.
        assert_eq!(tick(0.0105), "0.0105");
        assert_eq!(tick(0.011), "0.011");
        assert_eq!(tick(1.25), "1.25");
        assert_eq!(tick(1200.0), "1200");
        assert_eq!(tick(25000.0), "2.5e4");
    }
}
