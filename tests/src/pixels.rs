//! Per-channel means of decoded pictures: the reference the tests compute on their own,
//! without the element, to know what it should answer.

use anyhow::{Result, bail};

/// Mean of each colour channel over a picture, on a 0..1 scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelMeans {
    pub r: f64,
    pub g: f64,
    pub b: f64,
}

impl ChannelMeans {
    /// Means of packed RGBx pixels (4 bytes each, the 4th ignored). RGBx rows never need
    /// padding, so a whole decoded RGBx picture is just pixels.
    pub fn of_rgbx(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
            bail!("{} bytes is not a whole number of RGBx pixels", bytes.len());
        }
        let mut sum = [0u64; 3];
        for px in bytes.chunks_exact(4) {
            sum[0] += u64::from(px[0]);
            sum[1] += u64::from(px[1]);
            sum[2] += u64::from(px[2]);
        }
        let n = (bytes.len() / 4) as f64 * 255.0;
        Ok(Self {
            r: sum[0] as f64 / n,
            g: sum[1] as f64 / n,
            b: sum[2] as f64 / n,
        })
    }

    pub fn as_array(&self) -> [f64; 3] {
        [self.r, self.g, self.b]
    }

    /// BT.601 luma (0.299 R + 0.587 G + 0.114 B), 0..1.
    pub fn luma(&self) -> f64 {
        0.299 * self.r + 0.587 * self.g + 0.114 * self.b
    }

    /// The index (0 = R, 1 = G, 2 = B) of the largest channel and how far it is ahead of
    /// the second largest (0..1).
    pub fn dominant(&self) -> (usize, f64) {
        let c = self.as_array();
        let mut order = [0usize, 1, 2];
        order.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
        (order[0], c[order[0]] - c[order[1]])
    }
}

impl std::fmt::Display for ChannelMeans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "R {:.4} G {:.4} B {:.4} (luma {:.4})",
            self.r,
            self.g,
            self.b,
            self.luma()
        )
    }
}

/// Softmax of `logits`.
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_dominant_channel_and_luma() -> Result<()> {
        // Two pixels: pure red and half green.
        let m = ChannelMeans::of_rgbx(&[255, 0, 0, 9, 0, 102, 0, 9])?;
        assert!((m.r - 0.5).abs() < 1e-9 && (m.g - 0.2).abs() < 1e-9 && m.b == 0.0);
        assert_eq!(m.dominant().0, 0);
        assert!((m.dominant().1 - 0.3).abs() < 1e-9);
        assert!((m.luma() - (0.299 * 0.5 + 0.587 * 0.2)).abs() < 1e-9);
        assert!(ChannelMeans::of_rgbx(&[1, 2, 3]).is_err());
        Ok(())
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[20.0, 0.0, 0.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[0] > 0.999_999 && p[1] == p[2]);
    }
}
