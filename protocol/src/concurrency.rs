//! The default max concurrency of a server, computed from the CPU cores and memory its agent
//! reports (as limited by cgroups where that applies).
//!
//! ```text
//! max_concurrency = clamp(floor(min(2 × cores, memory GiB)), 1, 256)
//! ```
//!
//! Each task is budgeted half a core and 1 GiB of memory, whichever runs out first. The
//! reference host, 8 cores and 16 GiB, runs 16 tasks at once; a 4-core 32 GiB host is
//! CPU-bound at 8; a 16-core 8 GiB host is memory-bound at 8. An operator can set a server's
//! max concurrency explicitly, which replaces this default.

/// Tasks per CPU core.
pub const TASKS_PER_CORE: f64 = 2.0;
/// Memory budgeted per task.
pub const BYTES_PER_TASK: u64 = 1 << 30;
/// Bounds on the computed value.
pub const MIN: u32 = 1;
pub const MAX: u32 = 256;

/// The default max concurrency for a host with `cores` CPUs (fractional under a CPU quota) and
/// `memory_bytes` of memory.
pub fn max_concurrency(cores: f64, memory_bytes: u64) -> u32 {
    let by_cpu = if cores.is_finite() && cores > 0.0 {
        cores * TASKS_PER_CORE
    } else {
        0.0
    };
    let by_memory = memory_bytes as f64 / BYTES_PER_TASK as f64;
    let slots = by_cpu.min(by_memory).floor();
    // `as` saturates for floats, and the clamp bounds the rest.
    (slots as u32).clamp(MIN, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn reference_host_runs_sixteen() {
        assert_eq!(max_concurrency(8.0, 16 * GIB), 16);
    }

    #[test]
    fn the_scarcer_resource_decides() {
        assert_eq!(max_concurrency(4.0, 32 * GIB), 8);
        assert_eq!(max_concurrency(16.0, 8 * GIB), 8);
        assert_eq!(max_concurrency(1.5, 64 * GIB), 3);
    }

    #[test]
    fn bounds_hold_for_tiny_huge_and_nonsense_hosts() {
        assert_eq!(max_concurrency(0.5, GIB / 2), 1);
        assert_eq!(max_concurrency(0.0, 0), 1);
        assert_eq!(max_concurrency(f64::NAN, 16 * GIB), 1);
        assert_eq!(max_concurrency(512.0, 4096 * GIB), 256);
    }
}
