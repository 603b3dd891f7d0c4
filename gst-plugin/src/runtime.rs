//! The plugin's one tokio runtime, shared by every element instance that does network I/O.
//!
//! It is built on first use with at most two worker threads (named `vision-rt`), and lives
//! until the process ends: a plugin cannot know when the last element is gone, and a runtime
//! dropped from inside one of its own tasks panics.
//!
//! Elements spawn tasks on [`handle()`] in `start()` and end them in `stop()`. Nothing in a
//! streaming thread may `block_on` it: hand work over through a channel instead.

use std::sync::OnceLock;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Most worker threads the runtime uses; it never uses more than the machine has cores.
const MAX_WORKERS: usize = 2;

/// A handle to the plugin's runtime, starting it on first use.
///
/// # Panics
/// If the operating system refuses to create the runtime's threads, which leaves the plugin
/// unable to do any network I/O at all.
pub fn handle() -> tokio::runtime::Handle {
    RUNTIME
        .get_or_init(|| {
            let workers = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WORKERS);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("vision-rt")
                .enable_all()
                .build()
                .expect("could not start the plugin's tokio runtime (thread creation failed)")
        })
        .handle()
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runtime_runs_tasks() {
        let a = handle();
        let (tx, rx) = std::sync::mpsc::channel();
        a.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        let name = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_default();
        assert_eq!(name.as_deref(), Some("vision-rt"));
    }
}
