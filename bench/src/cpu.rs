//! CPU time of server processes, read from /proc: the figure that carries
//! over to bigger machines, where throughput on two shared cores does not.

use crate::BenchError;

/// User plus system CPU seconds of each process, summed. Threads are
/// included; children are not (no server here forks workers).
pub fn cpu_seconds(pids: &[u32]) -> Result<f64, BenchError> {
    let ticks = clock_ticks_per_second()?;
    let mut total = 0.0;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
        total += ticks_of(&stat).ok_or_else(|| BenchError::Process {
            what: path.clone(),
            message: "no utime and stime fields".into(),
        })? as f64
            / ticks;
    }
    Ok(total)
}

/// utime + stime, fields 14 and 15. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last ')'.
fn ticks_of(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> Result<f64, BenchError> {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => Ok(ticks as f64),
        _ => Err(BenchError::Process {
            what: "sysconf(CLK_TCK)".into(),
            message: "unknown clock tick rate".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_the_command_name() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1";
        assert_eq!(ticks_of(stat), Some(325));
    }

    #[test]
    fn a_busy_process_reads_as_busy() {
        let before = cpu_seconds(&[std::process::id()]).unwrap();
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let used = cpu_seconds(&[std::process::id()]).unwrap() - before;
        // 300 ms of spinning on one thread, less whatever else preempted it.
        assert!(used >= 0.1, "read {used} s");
    }
}
