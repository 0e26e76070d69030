//! Where the CPU engine's work runs: a rayon pool of all cores natively, the calling thread in
//! the browser (see ARCHITECTURE.md, "The CPU engine", for why the wasm build has one thread).

use crate::error::{Error, Result};

pub struct Pool {
    #[cfg(not(target_arch = "wasm32"))]
    pool: rayon::ThreadPool,
}

impl Pool {
    /// `threads` workers; 0: one per core.
    pub fn new(threads: usize) -> Result<Pool> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("quantweb-cpu-{i}"))
                .build()
                .map_err(|_| Error::BadOption {
                    name: "threads",
                    value: threads.to_string(),
                    reason: "the system refused to start that many threads",
                })?;
            Ok(Pool { pool })
        }
        #[cfg(target_arch = "wasm32")]
        {
            if threads > 1 {
                return Err(Error::BadOption {
                    name: "threads",
                    value: threads.to_string(),
                    reason: "the browser build of the CPU engine runs on one thread",
                });
            }
            Ok(Pool {})
        }
    }

    pub fn threads(&self) -> usize {
        #[cfg(not(target_arch = "wasm32"))]
        return self.pool.current_num_threads();
        #[cfg(target_arch = "wasm32")]
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
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            if data.len() <= chunk {
                f(0, data);
            } else {
                self.pool.install(|| {
                    data.par_chunks_mut(chunk)
                        .enumerate()
                        .for_each(|(i, c)| f(i, c))
                });
            }
        }
        #[cfg(target_arch = "wasm32")]
        for (i, c) in data.chunks_mut(chunk).enumerate() {
            f(i, c);
        }
    }

    /// The chunk size that splits `items` into four pieces per thread (work stealing evens out slow cores), of at least `min`.
    pub fn split(&self, items: usize, min: usize) -> usize {
        items.div_ceil(4 * self.threads()).max(min)
    }
}
