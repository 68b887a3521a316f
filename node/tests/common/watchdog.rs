//! A hung test fails within a deadline instead of holding the whole suite
//! (and CI) until its outer time limit: every node the harness starts is
//! watched from its first start, and once one has outlived
//! [`TEST_DEADLINE`], the watchdog kills every node of the test binary and
//! exits it with a message that names the node.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard, Once,
    },
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};

/// The longest one test's node may live. The slowest test in the suite
/// (elastic's 3 → 5 → 3 under load) takes about 5 minutes alone on this
/// 2-core machine and can take twice that beside another test.
pub const TEST_DEADLINE: Duration = Duration::from_secs(20 * 60);

struct Entry {
    label: String,
    born: Instant,
    pid: Option<u32>,
}

static NODES: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
static START: Once = Once::new();

fn nodes() -> MutexGuard<'static, BTreeMap<u64, Entry>> {
    // A test that panicked while holding the lock leaves the map intact.
    NODES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One watched node, from its first start until it is dropped.
pub struct Watched(u64);

impl Watched {
    pub fn new(label: String) -> Self {
        START.call_once(|| {
            std::thread::spawn(watch);
        });
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        nodes().insert(
            id,
            Entry {
                label,
                born: Instant::now(),
                pid: None,
            },
        );
        Self(id)
    }

    /// The node's running process, if any, so that the watchdog can kill it.
    pub fn set_pid(&self, pid: Option<u32>) {
        if let Some(entry) = nodes().get_mut(&self.0) {
            entry.pid = pid;
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        nodes().remove(&self.0);
    }
}

fn watch() {
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let nodes = nodes();
        let Some(overdue) = nodes.values().find(|e| e.born.elapsed() > TEST_DEADLINE) else {
            continue;
        };
        eprintln!(
            "watchdog: node {} has run for {:?}, past the harness's per-test deadline of {TEST_DEADLINE:?}: its test hangs. Killing this binary's {} nodes and failing.",
            overdue.label,
            overdue.born.elapsed(),
            nodes.len()
        );
        for pid in nodes.values().filter_map(|e| e.pid) {
            let _ = signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGKILL);
        }
        std::process::exit(101);
    }
}
