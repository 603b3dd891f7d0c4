//! What `vision-overlay` draws on a frame, shared with the test that redraws it as a reference.

use crate::messages::Classified;

/// `textoverlay`'s settings in `vision-overlay`: top-left, shaded box, left-aligned lines.
pub const OVERLAY_PROPS: &str = "valignment=top halignment=left font-desc=\"Sans 20\" \
                                 shaded-background=true line-alignment=left";

/// The text drawn for one frame: the best label and its confidence, then the runners-up (with
/// `top-k` > 1), one per line; a result below the threshold in brackets.
pub fn overlay_text(c: &Classified) -> String {
    if c.below_threshold {
        return format!("({} {:.2})", c.best_label, c.best_confidence);
    }
    let mut lines = vec![format!("{} {:.2}", c.best_label, c.best_confidence)];
    for (label, conf) in c.labels.iter().zip(&c.confidences).skip(1) {
        lines.push(format!("{label} {conf:.2}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(labels: &[&str], confidences: &[f64], below: bool) -> Classified {
        Classified {
            element: String::new(),
            model: "m".into(),
            best_label: labels[0].into(),
            best_class_id: 0,
            best_confidence: confidences[0],
            below_threshold: below,
            labels: if below {
                Vec::new()
            } else {
                labels.iter().map(|l| l.to_string()).collect()
            },
            confidences: if below {
                Vec::new()
            } else {
                confidences.to_vec()
            },
            frame: 0,
            timestamp: None,
            reused: false,
            batch_size: 1,
            inference_ns: 0,
        }
    }

    #[test]
    fn best_label_first_then_runners_up() {
        let c = classified(&["Egyptian cat", "tabby"], &[0.7404, 0.1234], false);
        assert_eq!(overlay_text(&c), "Egyptian cat 0.74\ntabby 0.12");
        let c = classified(&["dark"], &[0.41], true);
        assert_eq!(overlay_text(&c), "(dark 0.41)");
    }
}
