//! CPU accounting of this process from the scheduler's per-thread statistics, so that a run
//! on a shared, noisy machine still says how much work a frame took and how long threads
//! waited for a CPU.

use std::collections::HashMap;
use std::time::Duration;

/// Per-thread scheduler counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuTimes {
    /// Thread id → (nanoseconds on a CPU, nanoseconds runnable but waiting for a CPU).
    threads: HashMap<u64, (u64, u64)>,
    /// Thread id → name (`comm`; threads inherit their creator's name unless they set one).
    names: HashMap<u64, String>,
}

impl CpuTimes {
    /// Reads `/proc/self/task/*/schedstat`.
    pub fn now() -> Self {
        let mut threads = HashMap::new();
        let mut names = HashMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Self { threads, names };
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let mut fields = stat
                .split_whitespace()
                .map(|f| f.parse::<u64>().unwrap_or(0));
            let on_cpu = fields.next().unwrap_or(0);
            let waiting = fields.next().unwrap_or(0);
            threads.insert(tid, (on_cpu, waiting));
            if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
                names.insert(tid, name.trim().to_owned());
            }
        }
        Self { threads, names }
    }

    /// CPU time and time waiting for a CPU since `earlier`, in milliseconds per frame,
    /// summed over the threads alive now. Compared thread by thread because threads come
    /// and go (GLib's pool ends idle ones); work of a thread that ended in between is lost,
    /// so take both snapshots while the threads doing the work are alive.
    pub fn per_frame_since(&self, earlier: &Self, frames: usize) -> (f64, f64) {
        let (mut on_cpu, mut waiting) = (0, 0);
        for (tid, (cpu, wait)) in &self.threads {
            let (cpu0, wait0) = earlier.threads.get(tid).copied().unwrap_or_default();
            on_cpu += cpu.saturating_sub(cpu0);
            waiting += wait.saturating_sub(wait0);
        }
        let ms = |ns: u64| Duration::from_nanos(ns).as_secs_f64() * 1000.0 / frames.max(1) as f64;
        (ms(on_cpu), ms(waiting))
    }
}

impl CpuTimes {
    /// CPU milliseconds per frame since `earlier`, per thread, busiest first, as
    /// `name(tid) ms`.
    pub fn by_thread_since(&self, earlier: &Self, frames: usize) -> Vec<(String, f64)> {
        let mut rows: Vec<(String, f64)> = self
            .threads
            .iter()
            .map(|(tid, (cpu, _))| {
                let (cpu0, _) = earlier.threads.get(tid).copied().unwrap_or_default();
                let name = self.names.get(tid).map_or("?", String::as_str);
                let ms = cpu.saturating_sub(cpu0) as f64 / 1e6 / frames.max(1) as f64;
                (format!("{name}({tid})"), ms)
            })
            .filter(|(_, ms)| *ms >= 0.005)
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        rows
    }
}
