//! Thread priorities: packets first, housekeeping after.
//!
//! Why: xccd's threads share the machine's cores with the media workers (on a 2-core satellite,
//! always). A housekeeping burst such as the call store writing and fsyncing hundreds of records
//! when a wave of calls latches used to take the worker's core for milliseconds at a time, and
//! every packet waited behind it. Measured at 750 calls with xccd on one core (docs/load.md):
//! latency p99 129-570 ms with the store and event threads at the workers' priority, 15-25 ms with
//! them at nice +10, 3 runs each. A lower priority costs housekeeping nothing when the core is
//! idle and only delays it, never drops it, when it is not.

/// How much lower than the process a housekeeping thread runs (nice steps; 19 is the floor).
pub const HOUSEKEEPING_NICE: i32 = 10;

/// Lowers the calling thread's priority by [`HOUSEKEEPING_NICE`] (Linux: per thread). Best
/// effort: returns the new nice value, or `None` (logged) when the kernel refused.
pub fn lower_current_thread() -> Option<i32> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    let now = current_nice(tid)?;
    let want = (now + HOUSEKEEPING_NICE).min(19);
    // SAFETY: plain system call on this thread's id.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, want) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "cannot lower a housekeeping thread's priority");
        return None;
    }
    Some(want)
}

/// The nice value of thread `tid` (getpriority returns -1 both as a value and as an error, so
/// errno tells them apart).
fn current_nice(tid: libc::id_t) -> Option<i32> {
    // SAFETY: errno is thread-local; resetting it before the call is how getpriority is used.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain system call.
    let v = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    if v == -1 && std::io::Error::last_os_error().raw_os_error() != Some(0) {
        return None;
    }
    Some(v)
}

/// The calling thread's nice value, for checks and logs.
pub fn current_thread_nice() -> Option<i32> {
    // SAFETY: gettid has no preconditions.
    current_nice(unsafe { libc::gettid() } as libc::id_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_is_lowered() {
        let main_before = current_thread_nice().unwrap();
        let (before, after, reported) = std::thread::spawn(|| {
            let before = current_thread_nice().unwrap();
            let reported = lower_current_thread();
            (before, current_thread_nice().unwrap(), reported)
        })
        .join()
        .unwrap();
        let want = (before + HOUSEKEEPING_NICE).min(19);
        assert_eq!(after, want);
        assert_eq!(reported, Some(want));
        assert!(after > main_before || main_before == 19);
        assert_eq!(
            current_thread_nice().unwrap(),
            main_before,
            "the caller's thread only"
        );
    }
}
