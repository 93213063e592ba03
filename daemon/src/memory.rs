//! The C allocator's settings for a small, long-running process (glibc
//! only; elsewhere these do nothing).
//!
//! glibc gives every thread that allocates its own arena and raises its
//! mmap threshold to the largest block freed so far. For this daemon that
//! means: the transient megabytes of parsing a large configuration stay in
//! the heap for good, and each runtime thread keeps megabytes of free
//! space of its own. So: at most two arenas, a fixed mmap threshold (large
//! blocks go back to the kernel when freed), and one trim once start-up is
//! done.

/// Called first thing in `main`, before any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before other threads start, as glibc recommends.
    let (arenas, threshold) = unsafe {
        (
            libc::mallopt(libc::M_ARENA_MAX, 2),
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024),
        )
    };
    if arenas == 0 || threshold == 0 {
        tracing::debug!("The allocator did not take its settings; running with its defaults.");
    }
}

/// Returns free heap memory to the kernel (after start-up).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    let _released: libc::c_int = unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}
