//! Free heap memory handed back to the system after bursts.
//!
//! Players of one stream ask for a new segment at nearly the same moment,
//! and every request the node serves has hyper's buffers (16 KiB) for its
//! time. glibc's malloc keeps what is freed after such a burst in its free
//! lists, scattered between live blocks, so the node's resident memory
//! would stay at the height of its busiest second. Every [`TRIM_EVERY`] the
//! node asks malloc to return the whole free pages it holds
//! (`malloc_trim`), on a blocking thread: it walks every arena under that
//! arena's lock, which takes well under a millisecond for the node's heap.
//! At start the node also caps malloc's arenas at two ([`limit_arenas`]),
//! which lowered HLS memory per viewer by a tenth with the same CPU.
//! Where malloc is not glibc's, this does nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free pages are handed back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Hand free pages back every [`TRIM_EVERY`] until `shutdown`.
pub async fn trim_periodically(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(true) = tokio::task::spawn_blocking(trim).await {
            metrics::counter!("banyan_heap_trims_total").increment(1);
        }
    }
}

/// Ask malloc to return its free pages; whether any were returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim has no preconditions; it only changes which of
    // malloc's free pages stay mapped.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// At most this many malloc arenas (glibc's default is eight per core).
pub const ARENAS: i32 = 2;

/// Cap glibc's malloc arenas at [`ARENAS`], unless the operator set
/// `MALLOC_ARENA_MAX`. Each thread that allocates would otherwise get an
/// arena of its own (the runtime's workers, the blocking pool, the store's
/// and libsrt's threads), and a burst of requests leaves free blocks
/// scattered over all of them. Call before starting threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only changes malloc's settings; M_ARENA_MAX takes
    // effect for arenas made from now on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Cap malloc's arenas: nothing to do where malloc is not glibc's.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

/// Ask malloc to return its free pages: not possible here.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn freed_blocks_between_live_ones_are_handed_back() {
        // 128 MiB in 16 KiB blocks (below malloc's mmap threshold), every
        // other block freed: the freed ones sit between live ones, so free()
        // alone cannot give them back. Other tests run in this process at
        // the same time and may take some of the freed blocks or grow the
        // heap meanwhile: a quarter of the freed memory must come back, in
        // one of three tries.
        let mut drops = Vec::new();
        for _ in 0..3 {
            let blocks: Vec<Vec<u8>> = (0..8192)
                .map(|i| vec![(i % 251) as u8 + 1; 16 * 1024])
                .collect();
            let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(2).collect();
            let before = rss_kib();
            assert!(trim(), "malloc had free pages to hand back");
            let after = rss_kib();
            std::hint::black_box(&kept);
            drops.push(before.saturating_sub(after));
            if before.saturating_sub(after) >= 16 * 1024 {
                return;
            }
        }
        panic!("RSS fell by {drops:?} KiB at the trims: 64 MiB were free each time");
    }
}
