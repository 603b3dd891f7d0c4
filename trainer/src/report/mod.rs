//! Evaluation metrics and the per-run report folder (JSON, PNG plots), progress display.
