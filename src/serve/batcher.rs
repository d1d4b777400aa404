//! Dynamic batching: requests wait in one bounded queue per model; a worker per device takes
//! the oldest request, merges the ones behind it up to the largest batch (waiting at most the
//! queue delay for more), runs them on its device as one execution and splits the answer.
//!
//! A worker only takes work while its device is free, so a request never waits behind a device
//! that hangs: the hung run fails when the driver's timeout passes and the other devices keep
//! taking from the queue meanwhile.

use super::error::ApiError;
use super::metrics::{ModelMetrics, Timings};
use sinter_host::driver::RunStats;
use sinter_host::{DevicePool, Tensor, Transport};
use sinter_isa::bundle::TensorSig;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How requests are merged.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// Merge queued requests into one execution.
    pub merge: bool,
    /// Largest merged batch, in rows.
    pub max_rows: usize,
    /// How long the oldest request may wait for others to join it.
    pub delay: Duration,
    /// Requests that may wait before new ones are refused.
    pub queue_size: usize,
}

/// The answer to one request.
pub struct Done {
    /// The model outputs (order of the signature), this request's rows only.
    pub outputs: Vec<(String, Tensor)>,
    /// The device runs of the whole merged execution.
    pub runs: Vec<RunStats>,
    /// Rows of the merged execution.
    pub batch_rows: usize,
}

/// One request in the queue: `rows` rows of every model input, in signature order.
pub struct Job {
    pub rows: usize,
    pub inputs: Vec<Vec<f32>>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Done, ApiError>>,
}

/// Why a request was not queued.
pub enum Refused {
    Full,
    Closed,
}

struct State {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Queue {
    state: Mutex<State>,
    arrived: Condvar,
    cfg: BatchConfig,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next batch, or `None` once the queue is closed and empty.
    fn take(&self) -> Option<Vec<Job>> {
        let mut st = self.lock();
        let first = loop {
            if let Some(j) = st.jobs.pop_front() {
                break j;
            }
            if st.closed {
                return None;
            }
            st = self.arrived.wait(st).unwrap_or_else(|p| p.into_inner());
        };
        let mut rows = first.rows;
        let deadline = first.enqueued + self.cfg.delay;
        let mut batch = vec![first];
        if !self.cfg.merge {
            return Some(batch);
        }
        loop {
            while let Some(next) = st.jobs.front() {
                if rows + next.rows > self.cfg.max_rows {
                    break;
                }
                rows += next.rows;
                batch.extend(st.jobs.pop_front());
            }
            if rows >= self.cfg.max_rows || !st.jobs.is_empty() || st.closed {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .arrived
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Some(batch)
    }
}

/// The queue and the device workers of one model.
pub struct Batcher {
    queue: Arc<Queue>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts one worker per device of `pool`.
    pub fn start(
        pool: Arc<DevicePool<Box<dyn Transport>>>,
        inputs: Vec<TensorSig>,
        outputs: Vec<TensorSig>,
        cfg: BatchConfig,
        metrics: Arc<ModelMetrics>,
    ) -> std::io::Result<Batcher> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
            }),
            arrived: Condvar::new(),
            cfg,
        });
        let sigs = Arc::new((inputs, outputs));
        let mut workers = Vec::new();
        for i in 0..pool.size() {
            let (queue, pool, sigs, metrics) = (
                Arc::clone(&queue),
                Arc::clone(&pool),
                Arc::clone(&sigs),
                Arc::clone(&metrics),
            );
            workers.push(
                std::thread::Builder::new()
                    .name(format!("sinter-device-{i}"))
                    .spawn(move || {
                        while let Some(batch) = queue.take() {
                            execute(&pool, &sigs.0, &sigs.1, &metrics, batch);
                        }
                    })?,
            );
        }
        Ok(Batcher {
            queue,
            workers: Mutex::new(workers),
        })
    }

    /// Queues a request; a full or closed queue hands it back.
    pub fn submit(&self, job: Job) -> Result<(), (Refused, Job)> {
        let mut st = self.queue.lock();
        if st.closed {
            return Err((Refused::Closed, job));
        }
        if st.jobs.len() >= self.queue.cfg.queue_size {
            return Err((Refused::Full, job));
        }
        st.jobs.push_back(job);
        drop(st);
        self.queue.arrived.notify_all();
        Ok(())
    }

    /// Whether requests are being taken.
    pub fn is_running(&self) -> bool {
        !self.queue.lock().closed
    }

    /// Stops taking new requests, lets the workers finish the queued ones and waits for them.
    pub fn shutdown(&self) {
        self.queue.lock().closed = true;
        self.queue.arrived.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

/// Runs one merged batch on a free device and answers every request in it.
fn execute(
    pool: &DevicePool<Box<dyn Transport>>,
    in_sigs: &[TensorSig],
    out_sigs: &[TensorSig],
    metrics: &ModelMetrics,
    mut batch: Vec<Job>,
) {
    let dequeued = Instant::now();
    let rows: usize = batch.iter().map(|j| j.rows).sum();
    let merged = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let t0 = Instant::now();
        let mut inputs = HashMap::with_capacity(in_sigs.len());
        for (i, sig) in in_sigs.iter().enumerate() {
            let data = if batch.len() == 1 {
                std::mem::take(&mut batch[0].inputs[i])
            } else {
                let mut d = Vec::with_capacity(batch.iter().map(|j| j.inputs[i].len()).sum());
                for j in &batch {
                    d.extend_from_slice(&j.inputs[i]);
                }
                d
            };
            let mut shape = sig.shape.clone();
            shape[0] = rows;
            inputs.insert(sig.name.clone(), Tensor { shape, data });
        }
        let compute_input = t0.elapsed();
        let mut device = pool.acquire();
        let t1 = Instant::now();
        let r = device.infer(&inputs);
        let compute_infer = t1.elapsed();
        drop(device);
        let inf = match r {
            Ok(inf) => inf,
            Err(e) => {
                match &e {
                    e if e.is_invalid_input() => tracing::debug!("rejected input: {e}"),
                    e => tracing::warn!("inference failed: {e}"),
                }
                return Err(ApiError::from(&e));
            }
        };
        let t2 = Instant::now();
        let mut parts: Vec<Vec<(String, Tensor)>> = Vec::with_capacity(batch.len());
        let mut at = 0;
        for j in &batch {
            let mut outs = Vec::with_capacity(out_sigs.len());
            for (sig, (name, t)) in out_sigs.iter().zip(&inf.outputs) {
                let row: usize = sig.shape[1..].iter().product();
                let lo = (at * row).min(t.data.len());
                let hi = ((at + j.rows) * row).min(t.data.len());
                let mut shape = sig.shape.clone();
                shape[0] = j.rows;
                outs.push((
                    name.clone(),
                    Tensor {
                        shape,
                        data: t.data[lo..hi].to_vec(),
                    },
                ));
            }
            at += j.rows;
            parts.push(outs);
        }
        let timings = Timings {
            queue: Duration::ZERO,
            compute_input,
            compute_infer,
            compute_output: t2.elapsed(),
        };
        metrics.execution(rows, &inf.runs, &timings);
        Ok((parts, inf.runs, timings))
    }));
    let merged = merged.unwrap_or_else(|_| {
        tracing::error!("inference panicked");
        Err(ApiError::internal("internal error while running the model"))
    });
    match merged {
        Ok((parts, runs, timings)) => {
            for (j, outputs) in batch.into_iter().zip(parts) {
                let t = Timings {
                    queue: dequeued.saturating_duration_since(j.enqueued),
                    ..timings
                };
                metrics.request_timings(&t);
                let _ = j.reply.send(Ok(Done {
                    outputs,
                    runs: runs.clone(),
                    batch_rows: rows,
                }));
            }
        }
        Err(e) => {
            for j in batch {
                let _ = j
                    .reply
                    .send(Err(ApiError::new(e.status(), e.message().to_string())));
            }
        }
    }
}
