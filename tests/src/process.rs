//! What both gateways' harnesses need of a child process and of filter metrics: start the proxy tied to the
//! test process, optionally pinned to a CPU, and wait out the filters' metric flush before a read.

use crate::envoy::StartError;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `binary`, or `taskset -c <cpu> binary` (benchmarks pin the proxy to one CPU).
pub fn command_on_cpu(binary: &Path, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(binary);
            c
        }
        None => Command::new(binary),
    }
}

/// Spawns `cmd` so that the kernel sends it `signal` if the test process dies first (a panicking test still
/// stops its proxy through `Drop`; this covers a killed test run).
pub fn spawn_tied(mut cmd: Command, signal: i32, binary: &Path) -> Result<Child, StartError> {
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to signal the child if we die first.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal);
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| StartError::Spawn(format!("spawn {}: {e}", binary.display())))
}

/// Filters hand counter additions to the host on a timer (`portcullis_common::metrics::FLUSH_PERIOD`): a
/// metric read first waits one period, unless another read happened moments ago (back-to-back reads).
#[derive(Debug, Default)]
pub struct MetricFlushWait {
    last_read: Mutex<Option<Instant>>,
}

impl MetricFlushWait {
    pub fn before_read(&self) {
        let mut last = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
        if !last.is_some_and(|t| t.elapsed() < Duration::from_millis(250)) {
            std::thread::sleep(
                portcullis_common::metrics::FLUSH_PERIOD + Duration::from_millis(300),
            );
        }
        *last = Some(Instant::now());
    }
}
