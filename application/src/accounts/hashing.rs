//! The bound on concurrent argon2 work.

use super::{Error, Refusal};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The bound on concurrent argon2 work. Each hash or verification takes
/// about 19 MiB and a core for tens of milliseconds; without a bound, a
/// burst of anonymous logins grows memory without limit. `slots` run at
/// once on the blocking threads; a caller waits at most `wait` for a slot,
/// then is refused with `Refusal::Busy` ("系统繁忙，请稍后再试"), so waiting
/// requests hold no argon2 memory and their number is bounded by the
/// server's connection limit. A slot is held by the blocking work itself:
/// a request that goes away mid-hash does not free it early.
///
/// The web application and `upsert_account` share `Hashing::global()`
/// (slots = available cores, wait `HASH_WAIT`); tests build their own with
/// `Hashing::new` to observe `peak()` and `runs()`.
#[derive(Debug, Clone)]
pub struct Hashing {
    inner: std::sync::Arc<HashingInner>,
}

#[derive(Debug)]
struct HashingInner {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    size: usize,
    wait: Duration,
    running: AtomicUsize,
    peak: AtomicUsize,
    runs: AtomicU64,
}

static GLOBAL_HASHING: std::sync::OnceLock<Hashing> = std::sync::OnceLock::new();

/// How long a login waits for a hashing slot before it is refused.
pub const HASH_WAIT: Duration = Duration::from_secs(5);

impl Hashing {
    pub fn new(slots: usize, wait: Duration) -> Hashing {
        let size = slots.max(1);
        Hashing {
            inner: std::sync::Arc::new(HashingInner {
                slots: std::sync::Arc::new(tokio::sync::Semaphore::new(size)),
                size,
                wait,
                running: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                runs: AtomicU64::new(0),
            }),
        }
    }

    /// The process's one bound: a slot per available core, unless
    /// `set_global` chose otherwise before first use.
    pub fn global() -> &'static Hashing {
        GLOBAL_HASHING.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Hashing::new(cores, HASH_WAIT)
        })
    }

    /// Make `hashing` the process's bound (e.g. from configuration, at
    /// start-up). Refused (returned) once `global()` has been used.
    pub fn set_global(hashing: Hashing) -> Result<(), Hashing> {
        GLOBAL_HASHING.set(hashing)
    }

    /// Slots, i.e. the most hashes that ever run at once.
    pub fn slots(&self) -> usize {
        self.inner.size
    }

    /// The most hashes that ran at once so far.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::SeqCst)
    }

    /// Hashes and verifications run so far.
    pub fn runs(&self) -> u64 {
        self.inner.runs.load(Ordering::SeqCst)
    }

    /// Run `f` (argon2 work) on a blocking thread once a slot is free.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let slots = self.inner.slots.clone();
        let permit = match tokio::time::timeout(self.inner.wait, slots.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => return Err(Error::Throttled(Refusal::Busy)),
        };
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let now = inner.running.fetch_add(1, Ordering::SeqCst) + 1;
            inner.peak.fetch_max(now, Ordering::SeqCst);
            let out = f();
            inner.running.fetch_sub(1, Ordering::SeqCst);
            inner.runs.fetch_add(1, Ordering::SeqCst);
            out
        })
        .await
        .map_err(Error::from)
    }
}
