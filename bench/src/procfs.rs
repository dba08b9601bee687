//! Samples a process's CPU time and resident memory from `/proc`.

use crate::Error;

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU time and memory of a set of processes at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User plus system CPU seconds, summed over the processes.
    pub cpu_s: f64,
    /// Resident set size in KiB, summed over the processes.
    pub rss_kib: u64,
}

/// Reads utime+stime from `/proc/PID/stat` and VmRSS from `/proc/PID/status` for each pid
/// (`None` = this process) and sums them.
pub fn sample(pids: &[Option<u32>]) -> Result<Sample, Error> {
    let mut s = Sample::default();
    for pid in pids {
        let dir = match pid {
            Some(p) => format!("/proc/{p}"),
            None => "/proc/self".to_string(),
        };
        let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
        s.cpu_s += parse_cpu_ticks(&stat).ok_or_else(|| bad(&dir, "stat"))? as f64 / USER_HZ;
        let status = std::fs::read_to_string(format!("{dir}/status"))?;
        s.rss_kib += parse_rss_kib(&status).ok_or_else(|| bad(&dir, "status"))?;
    }
    Ok(s)
}

/// Busy and total CPU ticks of the whole machine, from the first line of `/proc/stat`.
pub fn machine_ticks() -> Result<(u64, u64), Error> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_machine_ticks(&stat).ok_or_else(|| bad("/proc", "stat"))
}

/// The one-minute load average of the machine, from `/proc/loadavg`.
pub fn loadavg() -> Result<f64, Error> {
    let s = std::fs::read_to_string("/proc/loadavg")?;
    s.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| bad("/proc", "loadavg"))
}

/// (busy, total) ticks of the aggregate `cpu` line; idle and iowait are not busy.
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let mut total = 0;
    let mut idle = 0;
    for (i, f) in line.split_whitespace().take(8).enumerate() {
        let v: u64 = f.parse().ok()?;
        total += v;
        if i == 3 || i == 4 {
            idle += v;
        }
    }
    Some((total - idle, total))
}

fn bad(dir: &str, file: &str) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("unexpected {dir}/{file}"),
    ))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The VmRSS line of `/proc/PID/status`, in KiB.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "4242 (ng inx) w) S 1 2 3 4 5 6 7 8 9 10 1234 56 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1290));
    }

    #[test]
    fn parses_status() {
        let status = "Name:\tnginx\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_rss_kib(status), Some(5120));
    }

    #[test]
    fn parses_machine_ticks() {
        let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(parse_machine_ticks(stat), Some((160, 980)));
    }

    #[test]
    fn samples_this_process() {
        let s = sample(&[None]).unwrap();
        assert!(s.rss_kib > 0);
    }
}
