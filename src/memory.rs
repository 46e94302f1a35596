//! Handing freed heap memory back to the system.
//!
//! A registry rebuild at scale replaces tens of megabytes (the previous catalog and snapshot
//! at 10,000 clients). glibc's allocator keeps freed pages inside its heaps for reuse, and
//! between the holes live objects leave, most of them stay resident: the process's RSS tracks
//! its largest moment, not what it holds. `malloc_trim` returns every free page, anywhere in
//! the heaps. Other allocators (musl's, or none on other systems) need nothing here.

/// Returns the allocator's free pages to the system. Blocking: it walks every heap (a few
/// milliseconds at 10,000 clients), so call it off the async threads.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only rearranges the allocator's own free lists; it is thread-safe
    // and takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Releases freed memory on a blocking thread, without waiting for it.
pub fn release_freed_soon() {
    tokio::task::spawn_blocking(release_freed);
}

/// When a loop that frees a lot on every pass gives the freed pages back. Trimming walks the
/// whole heap, and the next pass faults the pages in again: in a storm of changes, trimming
/// after every pass cost more than the passes. So while passes keep coming, at most once per
/// `every`; and once they pause, what the skipped trims left is given back then.
#[derive(Debug)]
pub struct TrimPacer {
    every: std::time::Duration,
    last: std::time::Instant,
    owed: bool,
}

impl TrimPacer {
    /// A pacer whose last trim was at `now`.
    pub fn new(every: std::time::Duration, now: std::time::Instant) -> Self {
        Self {
            every,
            last: now,
            owed: false,
        }
    }

    /// A pass freed memory at `now`: true when it is time to trim; otherwise the trim is owed.
    pub fn freed(&mut self, now: std::time::Instant) -> bool {
        let due = now.duration_since(self.last) >= self.every;
        if due {
            self.last = now;
        }
        self.owed = !due;
        due
    }

    /// True when a pass's trim was skipped and is still owed.
    pub fn owed(&self) -> bool {
        self.owed
    }

    /// The passes paused at `now`: true when an owed trim is to be done now.
    pub fn paused(&mut self, now: std::time::Instant) -> bool {
        let owed = std::mem::take(&mut self.owed);
        if owed {
            self.last = now;
        }
        owed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_storm_trims_now_and_then_and_once_when_it_pauses() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut pacer = TrimPacer::new(Duration::from_secs(5), start);
        // Passes every 200 ms for 6 s: one trim, at the first pass 5 s after the last one.
        let trims: Vec<u64> = (1..=30).map(|i| i * 200).filter(|&ms| pacer.freed(at(ms))).collect();
        assert_eq!(trims, [5000]);
        assert!(pacer.owed(), "the passes after it left their pages");
        assert!(pacer.paused(at(6500)), "given back once the passes pause");
        assert!(!pacer.owed() && !pacer.paused(at(7000)), "and only once");
        // A lone pass after a quiet spell trims at once: nothing is owed after it.
        assert!(pacer.freed(at(20_000)) && !pacer.owed());
    }
}
