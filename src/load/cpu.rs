//! Process CPU time from `/proc/PID/stat` and CPU pinning with `sched_setaffinity`.

use std::time::Duration;

use super::error::LoadError;

/// A process whose CPU time the run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pid(pub u32);

impl Pid {
    /// This process.
    pub fn current() -> Self {
        Pid(std::process::id())
    }

    /// User + system CPU time consumed so far by every thread of the process.
    pub fn cpu_time(self) -> Result<Duration, LoadError> {
        let path = format!("/proc/{}/stat", self.0);
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Proc {
            pid: self.0,
            source,
        })?;
        parse_stat_cpu(&text).ok_or(LoadError::ProcFormat { pid: self.0 })
    }

    /// Pins every thread of the process to `cpu` (threads created later inherit the mask of the
    /// thread that creates them, so pin before spawning).
    pub fn pin(self, cpu: usize) -> Result<(), LoadError> {
        let dir = format!("/proc/{}/task", self.0);
        let tasks = std::fs::read_dir(&dir).map_err(|source| LoadError::Proc {
            pid: self.0,
            source,
        })?;
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
            else {
                continue;
            };
            set_affinity(tid, cpu)?;
        }
        Ok(())
    }
}

/// Pins one thread (or, with 0, the calling thread).
fn set_affinity(tid: i32, cpu: usize) -> Result<(), LoadError> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(LoadError::Affinity {
            cpu,
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, CPU_SET stays in bounds (checked
    // above), and sched_setaffinity only reads the set we pass with its exact size.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(LoadError::Affinity {
            cpu,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// How many CPUs the calling thread may run on (its affinity mask), `None` if unreadable.
pub fn allowed_cpus() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most the size we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        usize::try_from(libc::CPU_COUNT(&set))
            .ok()
            .filter(|&n| n > 0)
    }
}

/// Time the calling thread has spent runnable but waiting for a CPU (second field of
/// `/proc/thread-self/schedstat`), `None` where the kernel does not keep schedstats. Measured
/// evidence that other processes (or our own threads) starved the load generator.
pub fn thread_runqueue_wait() -> Option<std::time::Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    parse_schedstat_wait(&text)
}

fn parse_schedstat_wait(text: &str) -> Option<std::time::Duration> {
    let ns: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(std::time::Duration::from_nanos(ns))
}

/// Pins the calling thread; threads it spawns afterwards inherit the mask.
pub fn pin_current_thread(cpu: usize) -> Result<(), LoadError> {
    set_affinity(0, cpu)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_cpu(text: &str) -> Option<Duration> {
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // After ")" come field 3 (state) onwards: utime is field 14, the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(Duration::from_nanos(
        (utime + stime).saturating_mul(1_000_000_000) / hz,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_name_parses() {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let line = format!(
            "1234 (x (y) z) S 1 2 3 4 5 6 7 8 9 10 {} {} 0 0 20 0 1 0",
            hz * 2,
            hz
        );
        assert_eq!(parse_stat_cpu(&line), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn schedstat_wait_is_the_second_field() {
        assert_eq!(
            parse_schedstat_wait("123 4567 8\n"),
            Some(std::time::Duration::from_nanos(4567))
        );
        assert_eq!(parse_schedstat_wait("123"), None);
        assert!(
            thread_runqueue_wait().is_some(),
            "this kernel keeps schedstats"
        );
    }

    #[test]
    fn affinity_mask_counts_at_least_one_cpu() {
        assert!(allowed_cpus().is_some_and(|n| n >= 1));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(Pid::current().cpu_time().is_ok());
    }
}
