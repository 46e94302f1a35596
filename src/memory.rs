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
