//! A pool of devices, each with its own copy of a loaded model.
//!
//! A caller takes whichever device is free ([`DevicePool::acquire`]), runs on it and hands it
//! back when the guard drops. A device that hangs makes its own run fail with
//! [`HostError::DeviceHung`] once the driver's timeout passes (the driver resets it), and then
//! goes back to the pool like any other: the other devices keep serving meanwhile, so no caller
//! queues behind a hung device.

use crate::error::HostError;
use crate::runtime::{open_runtime, Inference, Runtime};
use crate::transport::{DeviceKind, Transport};
use sinter_isa::bundle::Bundle;
use sinter_isa::tensor::Tensor;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// N runtimes of one model, one per device.
pub struct DevicePool<T: Transport> {
    free: Mutex<Vec<(usize, Runtime<T>)>>,
    returned: Condvar,
    size: usize,
}

impl DevicePool<Box<dyn Transport>> {
    /// Opens `n` devices of `kind` and loads `bundle` on each.
    pub fn open(
        kind: DeviceKind,
        bundle: &Bundle,
        timeout: Duration,
        n: usize,
    ) -> Result<Self, HostError> {
        let runtimes = (0..n.max(1))
            .map(|_| open_runtime(kind, bundle.clone(), timeout))
            .collect::<Result<Vec<_>, _>>()?;
        DevicePool::new(runtimes)
    }
}

impl<T: Transport> DevicePool<T> {
    /// A pool over already loaded runtimes (at least one).
    pub fn new(runtimes: Vec<Runtime<T>>) -> Result<Self, HostError> {
        if runtimes.is_empty() {
            return Err(HostError::Bundle(
                "a device pool needs at least one device".into(),
            ));
        }
        let size = runtimes.len();
        Ok(DevicePool {
            free: Mutex::new(runtimes.into_iter().enumerate().rev().collect()),
            returned: Condvar::new(),
            size,
        })
    }

    /// Devices in the pool.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Devices free right now.
    pub fn available(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(usize, Runtime<T>)>> {
        // A panic while the list was held cannot leave it inconsistent (push/pop only).
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a free device, waiting for one.
    pub fn acquire(&self) -> PooledRuntime<'_, T> {
        let mut free = self.lock();
        loop {
            if let Some((index, rt)) = free.pop() {
                return PooledRuntime {
                    pool: self,
                    index,
                    rt: Some(rt),
                };
            }
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Takes a free device if there is one.
    pub fn try_acquire(&self) -> Option<PooledRuntime<'_, T>> {
        self.lock().pop().map(|(index, rt)| PooledRuntime {
            pool: self,
            index,
            rt: Some(rt),
        })
    }

    /// Takes a free device, waiting at most `timeout` for one.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<PooledRuntime<'_, T>> {
        let deadline = Instant::now() + timeout;
        let mut free = self.lock();
        loop {
            if let Some((index, rt)) = free.pop() {
                return Some(PooledRuntime {
                    pool: self,
                    index,
                    rt: Some(rt),
                });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            free = self
                .returned
                .wait_timeout(free, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Runs `inputs` on the first free device.
    pub fn infer(&self, inputs: &HashMap<String, Tensor>) -> Result<Inference, HostError> {
        self.acquire().infer(inputs)
    }

    fn give_back(&self, index: usize, rt: Runtime<T>) {
        self.lock().push((index, rt));
        self.returned.notify_one();
    }
}

/// A device taken from a [`DevicePool`]; it goes back when this drops.
pub struct PooledRuntime<'a, T: Transport> {
    pool: &'a DevicePool<T>,
    index: usize,
    rt: Option<Runtime<T>>,
}

impl<T: Transport> PooledRuntime<'_, T> {
    /// The device's position in the pool (0-based), for logs and metrics.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl<T: Transport> Deref for PooledRuntime<'_, T> {
    type Target = Runtime<T>;
    fn deref(&self) -> &Runtime<T> {
        self.rt.as_ref().expect("runtime present until drop")
    }
}

impl<T: Transport> DerefMut for PooledRuntime<'_, T> {
    fn deref_mut(&mut self) -> &mut Runtime<T> {
        self.rt.as_mut().expect("runtime present until drop")
    }
}

impl<T: Transport> Drop for PooledRuntime<'_, T> {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            self.pool.give_back(self.index, rt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Driver;
    use crate::sample::{dense, hanging};
    use crate::transport::FuncTransport;
    use sinter_isa::HwConfig;

    fn runtime(b: Bundle, timeout: Duration) -> Runtime<FuncTransport> {
        let t = FuncTransport::func(HwConfig::SMALL, 1 << 16).unwrap();
        Runtime::new(Driver::new(t).unwrap().with_timeout(timeout), b).unwrap()
    }

    fn input(k: usize) -> HashMap<String, Tensor> {
        let x = Tensor::new(vec![1, k], (0..k).map(|i| i as f32 * 0.3).collect()).unwrap();
        HashMap::from([("x".to_string(), x)])
    }

    #[test]
    fn empty_pool_is_refused() {
        assert!(DevicePool::<FuncTransport>::new(Vec::new()).is_err());
    }

    #[test]
    fn devices_are_handed_out_and_returned() {
        let s = dense(HwConfig::SMALL, 1, 6, 5, false);
        let t = Duration::from_secs(5);
        let pool = DevicePool::new(vec![
            runtime(s.bundle.clone(), t),
            runtime(s.bundle.clone(), t),
        ])
        .unwrap();
        assert_eq!((pool.size(), pool.available()), (2, 2));
        let a = pool.acquire();
        let b = pool.try_acquire().unwrap();
        assert_ne!(a.index(), b.index());
        assert!(pool.try_acquire().is_none());
        assert!(pool.acquire_timeout(Duration::from_millis(10)).is_none());
        drop(a);
        assert_eq!(pool.available(), 1);
        drop(b);
        let out = pool.infer(&input(6)).unwrap();
        assert_eq!(out.outputs[0].1.shape, vec![1, 5]);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn a_hung_device_fails_only_its_own_run() {
        let s = dense(HwConfig::SMALL, 1, 6, 5, false);
        let timeout = Duration::from_millis(400);
        // Device 0 hangs on every run, device 1 is healthy.
        let pool = DevicePool::new(vec![
            runtime(hanging(&s.bundle), timeout),
            runtime(s.bundle.clone(), timeout),
        ])
        .unwrap();
        let stuck = pool.try_acquire().unwrap();
        assert_eq!(stuck.index(), 0);
        let (e, took) = std::thread::scope(|scope| {
            let hung = scope.spawn(move || {
                let mut d = stuck;
                let started = Instant::now();
                let e = d.infer(&input(6)).unwrap_err();
                (e, started.elapsed())
            });
            // While device 0 hangs, device 1 answers at once, again and again.
            let started = Instant::now();
            for _ in 0..5 {
                let out = pool.infer(&input(6)).unwrap();
                assert_eq!(out.outputs[0].1.shape, vec![1, 5]);
            }
            assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
            hung.join().unwrap()
        });
        assert!(matches!(e, HostError::DeviceHung { .. }), "{e}");
        assert!(took >= timeout);
        // The hung device was reset and is back in the pool.
        assert_eq!(pool.available(), 2);
    }
}
