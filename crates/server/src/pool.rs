//! The blocking pool: a few threads that run slow store mutations (an fsync for
//! DURABLE, a large copy) off the event loops.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// A small fixed pool of threads for work that may block: slow store commits and deletes
/// (an fsync for DURABLE, a large copy). Jobs start in submission order, several at once.
///
/// With 0 threads, [`BlockingPool::submit`] runs the job at once on the caller's thread.
pub(crate) struct BlockingPool {
    inner: Arc<PoolInner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct PoolInner {
    queue: Mutex<PoolQueue>,
    ready: Condvar,
}

struct PoolQueue {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl BlockingPool {
    /// Starts `threads` threads.
    pub(crate) fn start(threads: usize) -> std::io::Result<BlockingPool> {
        let inner = Arc::new(PoolInner {
            queue: Mutex::new(PoolQueue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let pool = BlockingPool {
            inner,
            threads: Mutex::new(Vec::new()),
        };
        for i in 0..threads {
            let inner = pool.inner.clone();
            let j = std::thread::Builder::new()
                .name(format!("objm-blocking-{i}"))
                .spawn(move || inner.run())?;
            pool.threads.lock().push(j);
        }
        Ok(pool)
    }

    /// Queues a job (or runs it now, without threads).
    pub(crate) fn submit(&self, job: impl FnOnce() + Send + 'static) {
        if self.threads.lock().is_empty() {
            return job();
        }
        self.inner.queue.lock().jobs.push_back(Box::new(job));
        self.inner.ready.notify_one();
    }

    /// Lets the threads finish every queued job, then joins them. Call once nothing will
    /// submit any more (the workers have stopped).
    pub(crate) fn close_and_join(&self) {
        self.close();
        for t in self.threads.lock().drain(..) {
            if t.join().is_err() {
                tracing::error!("a blocking-pool thread panicked");
            }
        }
    }

    fn close(&self) {
        self.inner.queue.lock().closed = true;
        self.inner.ready.notify_all();
    }
}

impl Drop for BlockingPool {
    fn drop(&mut self) {
        // A server that failed half-way through starting never calls close_and_join.
        self.close();
    }
}

impl PoolInner {
    fn run(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock();
                loop {
                    if let Some(j) = q.jobs.pop_front() {
                        break j;
                    }
                    if q.closed {
                        return;
                    }
                    self.ready.wait(&mut q);
                }
            };
            job();
        }
    }
}
