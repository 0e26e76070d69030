//! Where the CPU engine's work runs: the calling thread and `threads − 1` helpers that spin
//! between jobs. Natively the helpers are threads this pool starts. In the browser's threaded
//! build (wasm atomics and shared memory, `www/pkg-threads`) they are Web Workers that the
//! engine's worker started, each running `run_helper` on the same memory; the single-threaded
//! build (`www/pkg`, for pages that are not cross-origin isolated) runs on the calling thread
//! alone (ARCHITECTURE.md, "The CPU engine").
//!
//! A decode step is a few hundred short parallel loops (one per matmul). A pool whose workers
//! sleep between jobs (rayon's) pays a wake-up for each: measured on SmolLM2, a quarter of a
//! decode step went to the scheduler. So the workers here spin for a while after each job,
//! as llama.cpp's threadpool does, and only then park; the caller takes chunks too.

use crate::error::{Error, Result};

pub struct Pool {
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    inner: Option<spin::Workers>,
}

#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
pub use spin::{join_helper, run_helper};

impl Pool {
    /// `threads` in all, the caller included; 0: one per core (in the browser: one per helper
    /// worker the page started, plus the caller).
    pub fn new(threads: usize) -> Result<Pool> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let threads = match threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            };
            let inner = (threads > 1)
                .then(|| spin::Workers::start(threads - 1))
                .transpose()
                .map_err(|_| Error::BadOption {
                    name: "threads",
                    value: threads.to_string(),
                    reason: "the system refused to start that many threads",
                })?;
            Ok(Pool { inner })
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
        {
            // wasm cannot start a thread itself: the page's JS starts the helper workers
            // before it loads a model (www/worker.js), and they announce themselves here.
            let joined = spin::helpers_joined();
            let threads = match threads {
                0 => joined + 1,
                n => n,
            };
            if threads - 1 > joined {
                return Err(Error::BadOption {
                    name: "threads",
                    value: threads.to_string(),
                    reason: "fewer helper workers were started than that",
                });
            }
            Ok(Pool {
                inner: (threads > 1).then(|| spin::Workers::helpers(threads - 1)),
            })
        }
        #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
        {
            if threads > 1 {
                return Err(Error::BadOption {
                    name: "threads",
                    value: threads.to_string(),
                    reason: "this browser build of the CPU engine runs on one thread (the \
                             threaded one needs a cross-origin isolated page)",
                });
            }
            Ok(Pool {})
        }
    }

    pub fn threads(&self) -> usize {
        #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
        return self.inner.as_ref().map_or(1, |w| w.count() + 1);
        #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
        1
    }

    /// `f(i, chunk)` for the i-th `chunk`-sized piece of `data` (the last may be shorter), the
    /// pieces spread over the pool's threads.
    pub fn chunks<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let chunk = chunk.max(1);
        let pieces = data.len().div_ceil(chunk);
        #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
        if let Some(w) = self.inner.as_ref().filter(|_| pieces > 1) {
            let base = spin::SendPtr(data.as_mut_ptr());
            let len = data.len();
            w.run(pieces, &|i| {
                let start = i * chunk;
                let n = chunk.min(len - start);
                // SAFETY: pieces are disjoint ranges of `data`, each handed to one call, and
                // `run` returns only after every call has finished.
                let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
                f(i, piece)
            });
            return;
        }
        let _ = pieces;
        for (i, c) in data.chunks_mut(chunk).enumerate() {
            f(i, c);
        }
    }

    /// The chunk size that splits `items` into four pieces per thread (a slow core then takes
    /// fewer), of at least `min`.
    pub fn split(&self, items: usize, min: usize) -> usize {
        items.div_ceil(4 * self.threads()).max(min)
    }
}

/// The spinning workers, shared by the native threads and the browser's helper workers: std's
/// `Mutex` and `Condvar` park on `memory.atomic.wait32` in wasm with atomics, which a Web
/// Worker may do (the page's main thread may not, and never runs this).
#[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
mod spin {
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
    use std::sync::{Condvar, Mutex};

    /// Spins before a worker parks (a few milliseconds): longer than the gap between two
    /// matmuls of a decode step, or between two decode steps.
    const SPINS: u32 = 1 << 16;

    /// A raw pointer that may cross threads (the caller guarantees disjoint use).
    pub struct SendPtr<T>(pub *mut T);
    impl<T> Clone for SendPtr<T> {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl<T> Copy for SendPtr<T> {}
    // SAFETY: only used for disjoint pieces of one slice while `Workers::run` waits.
    unsafe impl<T> Send for SendPtr<T> {}
    unsafe impl<T> Sync for SendPtr<T> {}
    impl<T> SendPtr<T> {
        pub fn get(self) -> *mut T {
            self.0
        }
    }

    type Job = dyn Fn(usize) + Sync;
    /// What `Shared::job` points at: the caller's `&Job`, its lifetime erased (see `run`).
    type JobRef = &'static Job;

    struct Shared {
        /// Job number in the high 32 bits, the next piece to take in the low 32.
        state: AtomicU64,
        /// The job's function, `*const &Job`, valid while its pieces are being taken.
        job: AtomicPtr<()>,
        pieces: AtomicUsize,
        done: AtomicUsize,
        /// Workers with an index below this take part in the current job (in the browser,
        /// more helpers may be running than the current pool asked for).
        helpers: AtomicUsize,
        panicked: AtomicBool,
        stop: AtomicBool,
        parked: Mutex<usize>,
        wake: Condvar,
    }

    impl Shared {
        const fn new() -> Shared {
            Shared {
                state: AtomicU64::new(0),
                job: AtomicPtr::new(std::ptr::null_mut()),
                pieces: AtomicUsize::new(0),
                done: AtomicUsize::new(0),
                helpers: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                parked: Mutex::new(0),
                wake: Condvar::new(),
            }
        }
    }

    /// The browser's helper workers all serve this one: they outlive any model (a page may
    /// load several in turn), and only one engine thread hands out jobs.
    #[cfg(target_arch = "wasm32")]
    static HELPERS: Shared = Shared::new();
    #[cfg(target_arch = "wasm32")]
    static JOINED: AtomicUsize = AtomicUsize::new(0);

    /// Called first by each helper worker (from JS, before it reports itself ready): its index.
    #[cfg(target_arch = "wasm32")]
    pub fn join_helper() -> usize {
        JOINED.fetch_add(1, AcqRel)
    }

    /// The helper worker's loop; never returns (the worker exists for it).
    #[cfg(target_arch = "wasm32")]
    pub fn run_helper(index: usize) {
        worker(&HELPERS, index)
    }

    #[cfg(target_arch = "wasm32")]
    pub fn helpers_joined() -> usize {
        JOINED.load(Acquire)
    }

    pub struct Workers {
        #[cfg(not(target_arch = "wasm32"))]
        shared: std::sync::Arc<Shared>,
        #[cfg(target_arch = "wasm32")]
        shared: &'static Shared,
        count: usize,
        #[cfg(not(target_arch = "wasm32"))]
        handles: Vec<std::thread::JoinHandle<()>>,
    }

    impl Workers {
        #[cfg(not(target_arch = "wasm32"))]
        pub fn start(n: usize) -> std::io::Result<Workers> {
            let shared = std::sync::Arc::new(Shared::new());
            let mut handles = Vec::with_capacity(n);
            for i in 0..n {
                let s = shared.clone();
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("quantweb-cpu-{i}"))
                        .spawn(move || worker(&s, i))?,
                );
            }
            Ok(Workers {
                shared,
                count: n,
                handles,
            })
        }

        /// The first `n` of the helper workers the page started (`Pool::new` checked that
        /// there are that many).
        #[cfg(target_arch = "wasm32")]
        pub fn helpers(n: usize) -> Workers {
            Workers {
                shared: &HELPERS,
                count: n,
            }
        }

        pub fn count(&self) -> usize {
            self.count
        }

        /// `f(i)` for every i < pieces, on the workers and the calling thread; returns when all
        /// have run (and re-raises a panic of any).
        pub fn run<'a>(&self, pieces: usize, f: &'a (dyn Fn(usize) + Sync + 'a)) {
            let s = &*self.shared;
            let job_no = (s.state.load(Acquire) >> 32) + 1;
            s.pieces.store(pieces, Relaxed);
            s.done.store(0, Relaxed);
            s.helpers.store(self.count, Relaxed);
            s.job.store(
                &f as *const &'a (dyn Fn(usize) + Sync + 'a) as *mut (),
                Relaxed,
            );
            s.state.store(job_no << 32, Release);
            if *s.parked.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
                s.wake.notify_all();
            }
            take_pieces(s, job_no);
            let mut spins = 0u32;
            while s.done.load(Acquire) < pieces {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            if s.panicked.swap(false, AcqRel) {
                resume_unwind(Box::new("a CPU engine worker panicked"));
            }
        }
    }

    /// Natively the pool owns its threads and stops them; the browser's helpers stay for the
    /// next pool (parked after their spin).
    #[cfg(not(target_arch = "wasm32"))]
    impl Drop for Workers {
        fn drop(&mut self) {
            self.shared.stop.store(true, Release);
            {
                let _parked = self.shared.parked.lock().unwrap_or_else(|e| e.into_inner());
                self.shared.wake.notify_all();
            }
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
    }

    /// Takes pieces of job `job_no` until none are left (or a newer job replaced it).
    fn take_pieces(s: &Shared, job_no: u64) {
        let pieces = s.pieces.load(Relaxed) as u64;
        let mut cur = s.state.load(Acquire);
        loop {
            if cur >> 32 != job_no || (cur & 0xffff_ffff) >= pieces {
                return;
            }
            match s.state.compare_exchange_weak(cur, cur + 1, AcqRel, Acquire) {
                Ok(_) => {
                    // SAFETY: the piece belongs to job `job_no`, whose caller waits in `run`
                    // until `done` counts it, so the function behind the pointer is alive.
                    let f: JobRef = unsafe { *(s.job.load(Acquire) as *const JobRef) };
                    let i = (cur & 0xffff_ffff) as usize;
                    if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                        s.panicked.store(true, Release);
                    }
                    s.done.fetch_add(1, AcqRel);
                    cur = s.state.load(Acquire);
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Worker `index`'s loop: spin, then park, until a job comes; take part if the job wants
    /// this many workers.
    fn worker(s: &Shared, index: usize) {
        let mut seen = 0u64;
        loop {
            let mut spins = 0u32;
            let job_no = loop {
                if s.stop.load(Acquire) {
                    return;
                }
                let now = s.state.load(Acquire) >> 32;
                if now != seen {
                    break now;
                }
                spins += 1;
                if spins < SPINS {
                    std::hint::spin_loop();
                    continue;
                }
                let mut parked = s.parked.lock().unwrap_or_else(|e| e.into_inner());
                *parked += 1;
                while !s.stop.load(Acquire) && s.state.load(Acquire) >> 32 == seen {
                    parked = s.wake.wait(parked).unwrap_or_else(|e| e.into_inner());
                }
                *parked -= 1;
                spins = 0;
            };
            seen = job_no;
            if index < s.helpers.load(Relaxed) {
                take_pieces(s, job_no);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_piece_runs_once_across_many_jobs() {
        let pool = Pool::new(3).unwrap();
        assert_eq!(pool.threads(), 3);
        for round in 0..2000usize {
            let mut data = vec![0u32; 1 + round % 97];
            pool.chunks(&mut data, 1 + round % 5, |i, piece| {
                for x in piece.iter_mut() {
                    *x += 1 + i as u32;
                }
            });
            for (j, &x) in data.iter().enumerate() {
                assert_eq!(x, 1 + (j / (1 + round % 5)) as u32, "round {round}");
            }
        }
    }

    #[test]
    fn a_panicking_piece_reaches_the_caller_and_the_pool_stays_usable() {
        let pool = Pool::new(2).unwrap();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut data = vec![0u8; 64];
            pool.chunks(&mut data, 8, |i, _| assert_ne!(i, 5, "piece 5"));
        }));
        assert!(r.is_err());
        let mut data = vec![0u8; 64];
        pool.chunks(&mut data, 8, |_, p| p.fill(1));
        assert!(data.iter().all(|&x| x == 1));
    }

    use std::panic::AssertUnwindSafe;
}
