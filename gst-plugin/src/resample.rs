//! Separable resampling of 8-bit planes into rows of `f32`, the engine behind
//! [`crate::preprocess`].
//!
//! A resize is two passes per output row: a vertical pass sums the source rows that the output
//! row covers (weighted) into one row of `f32` at the source width, and a horizontal pass
//! reduces that row to the output width. Both passes are straight loops over contiguous memory
//! that the compiler vectorises; on x86-64 with AVX2 (checked at run time) the same loops are
//! compiled a second time for AVX2. Each source byte is read about once and no full-size
//! intermediate image is written; `preprocess` rounds the resampled rows to 8 bits, as an
//! 8-bit resize in a training pipeline would.
//!
//! The weights of each axis ([`Axis`]) are computed once per geometry and reused from frame to
//! frame.

/// The resampling kernel used to bring a frame (or a region of it) to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeFilter {
    /// Each output pixel is the mean of the source area it covers, with exact fractional
    /// coverage at the edges (OpenCV's `INTER_AREA`): no aliasing on large downscales. An axis
    /// that is enlarged is interpolated bilinearly.
    #[default]
    Area,
    /// Two taps per axis at half-pixel centres (OpenCV's `INTER_LINEAR`, PyTorch's
    /// `interpolate(mode="bilinear", align_corners=False, antialias=False)`). Fine detail
    /// aliases when shrinking by more than 2×.
    Bilinear,
    /// The source pixel at `floor(x · scale)` (OpenCV's `INTER_NEAREST`).
    Nearest,
}

impl ResizeFilter {
    /// The name used by the element property and the documentation.
    pub fn name(self) -> &'static str {
        match self {
            Self::Area => "area",
            Self::Bilinear => "bilinear",
            Self::Nearest => "nearest",
        }
    }
}

/// The taps of one axis: output `i` is `Σ_k weight(i, k) · source[start[i] + k]` for
/// `k < len[i]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    start: Vec<usize>,
    len: Vec<usize>,
    /// `stride` weights per output, the first `len[i]` of them used.
    stride: usize,
    weights: Vec<f32>,
    /// Area shrinks only (else empty): per output, the first tap that covers a whole source
    /// sample and how many such taps follow; each has the weight `unit` = dst / src.
    full: Vec<(usize, usize)>,
    unit: f32,
}

/// Whole source rows summed as 16-bit integers before any weight is applied (255 · 257 fits).
const MAX_SUMMED: usize = 257;

impl Axis {
    /// Taps that bring `src` samples to `dst` samples (both at least 1).
    pub(crate) fn new(filter: ResizeFilter, src: usize, dst: usize) -> Self {
        let (src, dst) = (src.max(1), dst.max(1));
        let scale = src as f64 / dst as f64;
        let last = src - 1;
        let mut taps: Vec<(usize, Vec<f64>)> = Vec::with_capacity(dst);
        let mut full = Vec::new();
        for i in 0..dst {
            let x = i as f64;
            taps.push(match filter {
                ResizeFilter::Nearest => (((x * scale).floor() as usize).min(last), vec![1.0]),
                ResizeFilter::Area if src > dst => {
                    // In units of 1/dst of a source sample, output i covers
                    // [i·src, (i+1)·src) and source j covers [j·dst, (j+1)·dst): the overlaps
                    // are exact integers that add up to src, a whole source sample's is dst.
                    let (a, b) = (i * src, (i + 1) * src);
                    let first = a / dst;
                    let end = b.div_ceil(dst).min(src);
                    let w: Vec<f64> = (first..end)
                        .map(|j| (b.min((j + 1) * dst) - a.max(j * dst)) as f64 / src as f64)
                        .collect();
                    // The whole samples: every tap but a partial first and a partial last.
                    let lead = usize::from(a > first * dst);
                    let tail = usize::from(b < end * dst);
                    full.push((lead, w.len().saturating_sub(lead + tail)));
                    (first, w)
                }
                // Bilinear, and the enlarged axis of Area (as OpenCV does).
                _ => {
                    let c = (x + 0.5) * scale - 0.5;
                    let (j, f) = if c < 0.0 {
                        (0, 0.0)
                    } else {
                        (c.floor() as usize, c - c.floor())
                    };
                    if j >= last {
                        (last, vec![1.0])
                    } else if f == 0.0 {
                        (j, vec![1.0])
                    } else {
                        (j, vec![1.0 - f, f])
                    }
                }
            });
        }
        let stride = taps.iter().map(|(_, w)| w.len()).max().unwrap_or(1);
        let mut axis = Self {
            start: Vec::with_capacity(dst),
            len: Vec::with_capacity(dst),
            stride,
            weights: vec![0.0; dst * stride],
            full,
            unit: (dst as f64 / src as f64) as f32,
        };
        for (i, (first, w)) in taps.into_iter().enumerate() {
            axis.start.push(first);
            axis.len.push(w.len());
            for (slot, v) in axis.weights[i * stride..].iter_mut().zip(w) {
                *slot = v as f32;
            }
        }
        axis
    }

    /// Number of output samples.
    pub(crate) fn outputs(&self) -> usize {
        self.start.len()
    }

    /// First source index and weights of output `i`.
    #[inline]
    pub(crate) fn taps(&self, i: usize) -> (usize, &[f32]) {
        let w = &self.weights[i * self.stride..i * self.stride + self.len[i]];
        (self.start[i], w)
    }
}

/// One 8-bit plane to read: `rows` rows of `row_len` bytes starting at `offset` of `data`,
/// `stride` bytes apart. The caller has checked that every row lies inside `data`.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub data: &'a [u8],
    pub offset: usize,
    pub stride: usize,
    pub row_len: usize,
}

/// `acc[i] = Σ_k w_k · row(start + k)[i]` for output row `out` of `axis`; `acc` holds
/// `src.row_len` values.
pub(crate) fn vertical(src: Source<'_>, axis: &Axis, out: usize, acc: &mut [f32]) {
    if let Some(&(lead, count)) = axis.full.get(out)
        && (2..=MAX_SUMMED).contains(&count)
    {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU supports AVX-512 F and BW (BW implies F; checked just above),
            // the only requirement of a `target_feature` function.
            unsafe { x86::vertical_box_512(src, axis, out, (lead, count), acc) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
            // `target_feature` function.
            unsafe { x86::vertical_box(src, axis, out, (lead, count), acc) };
            return;
        }
        vertical_box_body(src, axis, out, (lead, count), acc);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { x86::vertical(src, axis, out, acc) };
        return;
    }
    vertical_body(src, axis, out, acc);
}

/// The vertical pass as plain loops over two source rows at a time (the compiler vectorises
/// them; `x86::vertical` compiles the same code for AVX2).
#[inline(always)]
fn vertical_body(src: Source<'_>, axis: &Axis, out: usize, acc: &mut [f32]) {
    let (start, weights) = axis.taps(out);
    let n = src.row_len;
    let acc = &mut acc[..n];
    let row = |k: usize| {
        let at = src.offset + (start + k) * src.stride;
        &src.data[at..at + n]
    };
    // Two source rows per sweep halve the loads and stores of the accumulator.
    let mut k = 0;
    let mut first = true;
    while k < weights.len() {
        if k + 1 < weights.len() {
            let (w0, w1) = (weights[k], weights[k + 1]);
            let (r0, r1) = (row(k), row(k + 1));
            if first {
                for ((a, &p0), &p1) in acc.iter_mut().zip(r0).zip(r1) {
                    *a = w0 * f32::from(p0) + w1 * f32::from(p1);
                }
            } else {
                for ((a, &p0), &p1) in acc.iter_mut().zip(r0).zip(r1) {
                    *a += w0 * f32::from(p0) + w1 * f32::from(p1);
                }
            }
            k += 2;
        } else {
            let w0 = weights[k];
            let r0 = row(k);
            if first {
                for (a, &p0) in acc.iter_mut().zip(r0) {
                    *a = w0 * f32::from(p0);
                }
            } else {
                for (a, &p0) in acc.iter_mut().zip(r0) {
                    *a += w0 * f32::from(p0);
                }
            }
            k += 1;
        }
        first = false;
    }
}

/// The vertical pass of an area shrink: the rows the output row covers whole are added up as
/// 16-bit integers (exact, no conversion per row), and only the partial first and last rows are
/// weighted in `f32`: `acc = unit · Σ whole rows + w_lead · lead + w_tail · tail`. The row is
/// done in chunks that keep the integer sums in L1.
#[inline(always)]
fn vertical_box_body(
    src: Source<'_>,
    axis: &Axis,
    out: usize,
    (lead, count): (usize, usize),
    acc: &mut [f32],
) {
    const CHUNK: usize = 64;
    let (start, weights) = axis.taps(out);
    let n = src.row_len;
    let row = |k: usize| {
        let at = src.offset + (start + k) * src.stride;
        &src.data[at..at + n]
    };
    let end = lead + count;
    // A missing partial row is any row with weight 0 (pixels are finite, so 0 · p = 0).
    let (w_lead, r_lead) = if lead > 0 {
        (weights[0], row(0))
    } else {
        (0.0, row(lead))
    };
    let (w_tail, r_tail) = if end < weights.len() {
        (weights[end], row(end))
    } else {
        (0.0, row(lead))
    };
    let unit = axis.unit;
    let mut sums = [0_u16; CHUNK];
    let mut x = 0;
    while x < n {
        let m = CHUNK.min(n - x);
        let s = &mut sums[..m];
        let part = |k: usize| &row(k)[x..x + m];
        for (a, &p) in s.iter_mut().zip(part(lead)) {
            *a = u16::from(p);
        }
        let mut k = lead + 1;
        while k + 4 <= end {
            let (r0, r1, r2, r3) = (part(k), part(k + 1), part(k + 2), part(k + 3));
            for ((((a, &p0), &p1), &p2), &p3) in s.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                *a += u16::from(p0) + u16::from(p1) + u16::from(p2) + u16::from(p3);
            }
            k += 4;
        }
        while k + 2 <= end {
            for ((a, &p0), &p1) in s.iter_mut().zip(part(k)).zip(part(k + 1)) {
                *a += u16::from(p0) + u16::from(p1);
            }
            k += 2;
        }
        if k < end {
            for (a, &p0) in s.iter_mut().zip(part(k)) {
                *a += u16::from(p0);
            }
        }
        for (((o, &t), &pl), &pt) in acc[x..x + m]
            .iter_mut()
            .zip(s.iter())
            .zip(&r_lead[x..x + m])
            .zip(&r_tail[x..x + m])
        {
            *o = unit * f32::from(t) + w_lead * f32::from(pl) + w_tail * f32::from(pt);
        }
        x += m;
    }
}

/// `v = floor(v + 0.5)` for every value: resampled values rounded to 8-bit levels. Compiled
/// for AVX2 where the CPU has it: without SSE4.1 `floor` is a library call per value.
pub(crate) fn round_half_up(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { x86::round_half_up(values) };
        return;
    }
    round_half_up_body(values);
}

#[inline(always)]
fn round_half_up_body(values: &mut [f32]) {
    for v in values {
        *v = (*v + 0.5).floor();
    }
}

/// The taps of a horizontal axis laid out for pixels of `cn` interleaved channels.
///
/// One- and two-channel rows (luma, chroma) are reduced as dot products: output `i` is
/// `window` weights (each tap's weight repeated per channel, zero-padded) times `window`
/// consecutive values from `start[i]`, the window a multiple of 8 so each vector lane keeps
/// one channel. Three- and four-channel pixels are summed tap by tap, one pixel (4 lanes, the
/// fourth thrown away for RGB) per vector, so no lanes need adding up at the end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expanded {
    cn: usize,
    /// First value (not pixel) of each output's window in the accumulated row.
    start: Vec<usize>,
    /// Taps used per output (tap by tap), or 0 (dot products).
    len: Vec<usize>,
    window: usize,
    weights: Vec<f32>,
    /// Three- and four-channel area shrinks: the axis's whole-sample taps (see [`Axis`]),
    /// added up before one multiplication by `unit`.
    full: Vec<(usize, usize)>,
    unit: f32,
}

impl Expanded {
    pub(crate) fn new(axis: &Axis, cn: usize) -> Self {
        let cn = cn.clamp(1, 4);
        let widest = axis.len.iter().copied().max().unwrap_or(1);
        let outputs = axis.outputs();
        let per_tap = cn >= 3;
        let window = if per_tap {
            widest
        } else {
            (widest * cn).div_ceil(8) * 8
        };
        let mut weights = vec![0.0; outputs * window];
        let mut start = Vec::with_capacity(outputs);
        let mut len = Vec::with_capacity(outputs);
        for i in 0..outputs {
            let (first, w) = axis.taps(i);
            start.push(first * cn);
            len.push(w.len());
            for (k, &v) in w.iter().enumerate() {
                if per_tap {
                    weights[i * window + k] = v;
                } else {
                    let at = i * window + k * cn;
                    weights[at..at + cn].fill(v);
                }
            }
        }
        Self {
            cn,
            start,
            len,
            window,
            weights,
            full: if per_tap {
                axis.full.clone()
            } else {
                Vec::new()
            },
            unit: axis.unit,
        }
    }

    /// Values the accumulated row must hold past its pixels (zeros: the last windows, and the
    /// fourth lane of the last RGB pixel, run over the end).
    pub(crate) fn overhang(&self) -> usize {
        if self.cn >= 3 { 4 } else { self.window }
    }

    pub(crate) fn outputs(&self) -> usize {
        self.start.len()
    }
}

/// Reduces one accumulated row (its pixels, then at least [`Expanded::overhang`] zeros) to
/// `taps.outputs()` pixels of `taps.cn` channels in `out`.
pub(crate) fn horizontal(acc: &[f32], taps: &Expanded, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the only requirement of
        // these `target_feature` functions.
        unsafe {
            match taps.cn {
                1 => x86::dot::<1>(acc, taps, out),
                2 => x86::dot::<2>(acc, taps, out),
                3 => x86::per_tap::<3>(acc, taps, out),
                _ => x86::per_tap::<4>(acc, taps, out),
            }
        }
        return;
    }
    match taps.cn {
        1 => portable::<1, 1>(acc, taps, out),
        2 => portable::<2, 2>(acc, taps, out),
        3 => portable::<3, 4>(acc, taps, out),
        _ => portable::<4, 4>(acc, taps, out),
    }
}

/// The horizontal pass without SIMD intrinsics: `LANES` values read per tap.
fn portable<const CN: usize, const LANES: usize>(acc: &[f32], taps: &Expanded, out: &mut [f32]) {
    for (i, px) in out.chunks_exact_mut(CN).enumerate().take(taps.outputs()) {
        let start = taps.start[i];
        let weights = &taps.weights[i * taps.window..(i + 1) * taps.window];
        let mut sum = [0.0_f32; LANES];
        if CN >= 3 {
            for (k, &w) in weights.iter().take(taps.len[i]).enumerate() {
                let at = start + k * CN;
                for (c, s) in sum.iter_mut().enumerate() {
                    *s += w * acc[at + c];
                }
            }
        } else {
            for (k, &w) in weights.iter().enumerate() {
                sum[k % CN] += w * acc[start + k];
            }
        }
        px.copy_from_slice(&sum[..CN]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_fmadd_ps, _mm_loadu_ps, _mm_movehl_ps,
        _mm_mul_ps, _mm_set1_ps, _mm_setzero_ps, _mm_shuffle_ps, _mm_storeu_ps, _mm256_add_ps,
        _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_setzero_ps,
    };

    use super::{Axis, Expanded, Source};

    /// The vertical pass compiled for AVX2 and FMA. Written with intrinsics over up to 8 rows
    /// per sweep it measured slower (1.49 against 1.02 ms per 1080p RGB frame): two rows per
    /// sweep keep the loads streaming.
    #[target_feature(enable = "avx2")]
    pub(super) fn vertical(src: Source<'_>, axis: &Axis, out: usize, acc: &mut [f32]) {
        super::vertical_body(src, axis, out, acc);
    }

    /// Rounding to 8-bit levels compiled for AVX2 (`floor` is one instruction there).
    #[target_feature(enable = "avx2")]
    pub(super) fn round_half_up(values: &mut [f32]) {
        super::round_half_up_body(values);
    }

    /// The area shrink's vertical pass compiled for AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) fn vertical_box(
        src: Source<'_>,
        axis: &Axis,
        out: usize,
        full: (usize, usize),
        acc: &mut [f32],
    ) {
        super::vertical_box_body(src, axis, out, full, acc);
    }

    /// The area shrink's vertical pass compiled for AVX-512 (twice the lanes per instruction).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn vertical_box_512(
        src: Source<'_>,
        axis: &Axis,
        out: usize,
        full: (usize, usize),
        acc: &mut [f32],
    ) {
        super::vertical_box_body(src, axis, out, full, acc);
    }

    /// One- and two-channel rows: 8-lane dot products, lanes added up in registers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot<const CN: usize>(acc: &[f32], taps: &Expanded, out: &mut [f32]) {
        let window = taps.window;
        for ((px, &start), weights) in out
            .chunks_exact_mut(CN)
            .zip(&taps.start)
            .zip(taps.weights.chunks_exact(window))
        {
            let values = &acc[start..start + window];
            let mut sums = [_mm256_setzero_ps(); 2];
            for (k, (v, w)) in values
                .chunks_exact(8)
                .zip(weights.chunks_exact(8))
                .enumerate()
            {
                // SAFETY: `v` and `w` hold exactly 8 floats each.
                unsafe {
                    sums[k % 2] = _mm256_fmadd_ps(
                        _mm256_loadu_ps(v.as_ptr()),
                        _mm256_loadu_ps(w.as_ptr()),
                        sums[k % 2],
                    );
                }
            }
            let sum = _mm256_add_ps(sums[0], sums[1]);
            // Lanes l and l + 4 hold the same channel; then l and l + 2.
            let four = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
            let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
            if CN == 1 {
                let one = _mm_add_ss(two, _mm_shuffle_ps(two, two, 1));
                px[0] = _mm_cvtss_f32(one);
            } else {
                let mut lanes = [0.0_f32; 4];
                // SAFETY: `lanes` holds 4 floats.
                unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), two) };
                px.copy_from_slice(&lanes[..CN]);
            }
        }
    }

    /// Three- and four-channel pixels: one 4-lane vector per tap.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn per_tap<const CN: usize>(acc: &[f32], taps: &Expanded, out: &mut [f32]) {
        let window = taps.window;
        for (out_index, (((px, &start), &len), weights)) in out
            .chunks_exact_mut(CN)
            .zip(&taps.start)
            .zip(&taps.len)
            .zip(taps.weights.chunks_exact(window))
            .enumerate()
        {
            // Every 4-value read below lies inside this slice: the last tap starts at
            // start + (len - 1) * CN and reads 4 values, at most one past its pixel, which
            // the overhang covers.
            let values = &acc[start..start + (len - 1) * CN + 4];
            let at = |k: usize| {
                let v = &values[k * CN..k * CN + 4];
                // SAFETY: `v` holds 4 floats.
                unsafe { _mm_loadu_ps(v.as_ptr()) }
            };
            if let Some(&(lead, count)) = taps.full.get(out_index) {
                // An area shrink: the whole pixels are added up and weighted once, only the
                // partial first and last pixel have weights of their own.
                // At most `len` taps (what `Axis` builds); the bound keeps the reads below
                // inside `values` whatever `full` holds.
                let end = (lead + count).min(len);
                // Four sums in registers, four pixels per step: the adds do not wait on each
                // other, and no index is bounds-checked inside the loop.
                let mut sums = [_mm_setzero_ps(); 4];
                let base = values.as_ptr();
                let mut k = lead;
                while k + 4 <= end {
                    // SAFETY: k + 3 < end <= len, so every read lies in `values` (see above).
                    unsafe {
                        sums[0] = _mm_add_ps(sums[0], _mm_loadu_ps(base.add(k * CN)));
                        sums[1] = _mm_add_ps(sums[1], _mm_loadu_ps(base.add((k + 1) * CN)));
                        sums[2] = _mm_add_ps(sums[2], _mm_loadu_ps(base.add((k + 2) * CN)));
                        sums[3] = _mm_add_ps(sums[3], _mm_loadu_ps(base.add((k + 3) * CN)));
                    }
                    k += 4;
                }
                while k < end {
                    // SAFETY: k < end <= len (see above).
                    sums[0] = _mm_add_ps(sums[0], unsafe { _mm_loadu_ps(base.add(k * CN)) });
                    k += 1;
                }
                let all = _mm_add_ps(_mm_add_ps(sums[0], sums[1]), _mm_add_ps(sums[2], sums[3]));
                let mut sum = _mm_mul_ps(all, _mm_set1_ps(taps.unit));
                if lead > 0 {
                    sum = _mm_fmadd_ps(at(0), _mm_set1_ps(weights[0]), sum);
                }
                if end < len {
                    sum = _mm_fmadd_ps(at(end), _mm_set1_ps(weights[end]), sum);
                }
                let mut lanes = [0.0_f32; 4];
                // SAFETY: `lanes` holds 4 floats.
                unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), sum) };
                px.copy_from_slice(&lanes[..CN]);
                continue;
            }
            // Two sums (even and odd taps) so that each multiply-add waits for the one before
            // last, not the last: the chain of dependent adds is what limits this loop.
            let mut sums = [_mm_setzero_ps(); 2];
            for (k, &w) in weights.iter().take(len).enumerate() {
                // SAFETY: k * CN + 4 <= values.len() for k < len (see above).
                unsafe {
                    let v = _mm_loadu_ps(values.as_ptr().add(k * CN));
                    sums[k % 2] = _mm_fmadd_ps(v, _mm_set1_ps(w), sums[k % 2]);
                }
            }
            let sum = _mm_add_ps(sums[0], sums[1]);
            let mut lanes = [0.0_f32; 4];
            // SAFETY: `lanes` holds 4 floats.
            unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), sum) };
            px.copy_from_slice(&lanes[..CN]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums_to_one(axis: &Axis) {
        for i in 0..axis.outputs() {
            let (_, w) = axis.taps(i);
            let s: f32 = w.iter().sum();
            assert!(
                (s - 1.0).abs() < 1e-5,
                "output {i}: weights {w:?} sum to {s}"
            );
        }
    }

    #[test]
    fn area_weights_cover_the_source_exactly_once() {
        for (src, dst) in [
            (1920, 224),
            (1080, 224),
            (7, 3),
            (10, 5),
            (1921, 224),
            (225, 224),
        ] {
            let axis = Axis::new(ResizeFilter::Area, src, dst);
            sums_to_one(&axis);
            // Every source sample contributes dst/src of the total weight (its share).
            let mut per_source = vec![0.0_f64; src];
            for i in 0..dst {
                let (start, w) = axis.taps(i);
                for (k, &v) in w.iter().enumerate() {
                    per_source[start + k] += f64::from(v);
                }
            }
            let share = dst as f64 / src as f64;
            for (j, v) in per_source.iter().enumerate() {
                assert!(
                    (v - share).abs() < 1e-5,
                    "{src}->{dst}: source {j} has {v}, not {share}"
                );
            }
        }
    }

    #[test]
    fn integer_factors_are_plain_means() {
        let axis = Axis::new(ResizeFilter::Area, 8, 2);
        assert_eq!(axis.taps(0), (0, &[0.25_f32; 4][..]));
        assert_eq!(axis.taps(1), (4, &[0.25_f32; 4][..]));
    }

    #[test]
    fn bilinear_and_nearest_follow_opencv() {
        // 4 -> 2: centres at 0.5 and 2.5.
        let b = Axis::new(ResizeFilter::Bilinear, 4, 2);
        assert_eq!(b.taps(0), (0, &[0.5_f32, 0.5][..]));
        assert_eq!(b.taps(1), (2, &[0.5_f32, 0.5][..]));
        // 2 -> 4 (enlarging, also what Area does on this axis): the first output clamps to 0.
        for filter in [ResizeFilter::Bilinear, ResizeFilter::Area] {
            let up = Axis::new(filter, 2, 4);
            assert_eq!(up.taps(0), (0, &[1.0_f32][..]));
            assert_eq!(up.taps(1), (0, &[0.75_f32, 0.25][..]));
            assert_eq!(up.taps(3), (1, &[1.0_f32][..]));
        }
        let n = Axis::new(ResizeFilter::Nearest, 10, 4);
        let picked: Vec<usize> = (0..4).map(|i| n.taps(i).0).collect();
        assert_eq!(picked, [0, 2, 5, 7]);
        sums_to_one(&b);
    }

    #[test]
    fn passes_compute_the_weighted_sums() {
        // 3 columns x 4 rows, 2 channels, shrunk to 2 x 2 by area.
        let data: Vec<u8> = (0..24).map(|v| v * 10).collect();
        let src = Source {
            data: &data,
            offset: 0,
            stride: 6,
            row_len: 6,
        };
        let ay = Axis::new(ResizeFilter::Area, 4, 2);
        let ax = Axis::new(ResizeFilter::Area, 3, 2);
        let ax = Expanded::new(&ax, 2);
        let mut acc = vec![0.0; 6 + ax.overhang()];
        let mut out = vec![0.0; 4];
        for oy in 0..2 {
            vertical(src, &ay, oy, &mut acc);
            horizontal(&acc, &ax, &mut out);
            for ox in 0..2 {
                for c in 0..2 {
                    let mut want = 0.0_f64;
                    for y in 0..4 {
                        for x in 0..3 {
                            let wy = (((oy + 1) * 2).min(y + 1) as f64 - ((oy * 2).max(y)) as f64)
                                .max(0.0)
                                / 2.0;
                            let (a, b) = (ox as f64 * 1.5, (ox + 1) as f64 * 1.5);
                            let wx = (b.min(x as f64 + 1.0) - a.max(x as f64)).max(0.0) / 1.5;
                            want += wy * wx * f64::from(data[y * 6 + x * 2 + c]);
                        }
                    }
                    let got = f64::from(out[ox * 2 + c]);
                    assert!(
                        (got - want).abs() < 1e-3,
                        "({ox},{oy}) c{c}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn simd_and_portable_passes_agree() {
        // A row of pseudo-random bytes, every channel count, shrinking and enlarging: the
        // AVX2 code (when this CPU has it) and the portable loops give the same sums.
        let mut seed = 0x2545_f491_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed >> 24) as u8
        };
        for cn in 1..=4 {
            for (filter, src_w, dst_w) in [
                (ResizeFilter::Area, 1921, 224),
                (ResizeFilter::Bilinear, 641, 224),
                (ResizeFilter::Nearest, 97, 224),
                (ResizeFilter::Area, 150, 224),
            ] {
                // 9 rows to 4: two whole rows per output at most; 43 to 4: ten, summed four,
                // two and one at a time.
                for rows in [9, 43] {
                    let row_len = src_w * cn;
                    let data: Vec<u8> = (0..rows * (row_len + 5)).map(|_| next()).collect();
                    let src = Source {
                        data: &data,
                        offset: 0,
                        stride: row_len + 5,
                        row_len,
                    };
                    let ay = Axis::new(filter, rows, 4);
                    let ax = Expanded::new(&Axis::new(filter, src_w, dst_w), cn);
                    let mut fast = vec![0.0; row_len + ax.overhang()];
                    let mut slow = fast.clone();
                    for oy in 0..4 {
                        vertical(src, &ay, oy, &mut fast);
                        vertical_body(src, &ay, oy, &mut slow);
                        for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                            assert!(
                                (a - b).abs() < 1e-3,
                                "vertical cn {cn} {filter:?} [{i}]: {a} vs {b}"
                            );
                        }
                        let mut h_fast = vec![0.0; dst_w * cn];
                        let mut h_slow = h_fast.clone();
                        horizontal(&fast, &ax, &mut h_fast);
                        match cn {
                            1 => portable::<1, 1>(&slow, &ax, &mut h_slow),
                            2 => portable::<2, 2>(&slow, &ax, &mut h_slow),
                            3 => portable::<3, 4>(&slow, &ax, &mut h_slow),
                            _ => portable::<4, 4>(&slow, &ax, &mut h_slow),
                        }
                        for (i, (a, b)) in h_fast.iter().zip(&h_slow).enumerate() {
                            assert!(
                                (a - b).abs() < 1e-3,
                                "horizontal cn {cn} {filter:?} [{i}]: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }
}
