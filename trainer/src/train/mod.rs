//! Training: losses, optimisers, schedules, the loop, early stopping, checkpoints, search.
