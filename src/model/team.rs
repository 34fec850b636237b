//! The CPU forward pass's thread team: the pool's other workers spin for the length of one
//! forward pass and take the tasks of each parallel region (matmuls, attention) as soon as it
//! is published.
//!
//! A forward pass has ~150-200 parallel regions per token, separated by small serial ops. With
//! rayon's `par_iter` the other workers fall asleep between regions and each region pays for
//! waking them (measured: ~15% of the threads' time idle and ~10% in the kernel, at K=1 and
//! K=8). Spinning for the length of a pass, as llama.cpp's threads do, removes that; between
//! passes the workers go back to the pool.

use std::cell::Cell;
use std::hint::spin_loop;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

/// A region's task function, its lifetime erased while the region runs.
type TaskFn = &'static (dyn Fn(usize) + Sync);

struct Team {
    /// `(region number << 32) | next task index`: a worker claims a task with one
    /// compare-exchange, which also proves the region is still the one it read.
    claim: AtomicU64,
    /// Tasks of the current region finished.
    done: AtomicUsize,
    /// The current region: its number, task count and function.
    region: Mutex<(u32, usize, Option<TaskFn>)>,
    /// A task panicked (on a helper); the leader re-raises it.
    panicked: AtomicBool,
    /// The pass is over: helpers return to the pool.
    stop: AtomicBool,
}

thread_local! {
    /// The team this thread leads, while it runs a forward pass.
    static LEADING: Cell<Option<*const Team>> = const { Cell::new(None) };
    /// This thread is running a task of a region: a parallel region inside it runs inline.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `op` (a forward pass) with the pool's other workers spinning as its team: calls of
/// [`for_each`] made by `op`'s thread are shared with them.
pub fn with_team<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    let team = Team {
        claim: AtomicU64::new(0),
        done: AtomicUsize::new(0),
        region: Mutex::new((0, 0, None)),
        panicked: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    };
    rayon::scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| help(&team));
        }
        // Stops the helpers and restores this thread however `op` ends, panics included:
        // otherwise they would spin forever and the scope would never return.
        struct Lead<'a>(&'a Team, Option<*const Team>);
        impl Drop for Lead<'_> {
            fn drop(&mut self) {
                self.0.stop.store(true, Ordering::Release);
                LEADING.set(self.1);
            }
        }
        let _lead = Lead(&team, LEADING.replace(Some(&team as *const Team)));
        op()
    })
}

/// `f(i)` for every `i` in `0..n`, in parallel: on the team when this thread leads one,
/// else on the rayon pool; inline when called from inside a task (the team is busy with the
/// region that task belongs to). Returns when all are done.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    if IN_TASK.get() {
        (0..n).for_each(f);
        return;
    }
    let Some(team) = LEADING.get() else {
        (0..n).into_par_iter().for_each(&f);
        return;
    };
    if n <= 1 {
        (0..n).for_each(f);
        return;
    }
    // SAFETY: the team outlives the pass that this thread is running (`with_team`).
    let team = unsafe { &*team };
    let f: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY: `f` is only called for claims of this region, and this function returns only
    // once every claimed task is done; a helper that read an old region fails its claim.
    let f: TaskFn = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), TaskFn>(f) };
    let number = (team.claim.load(Ordering::Relaxed) >> 32) as u32 + 1;
    team.done.store(0, Ordering::Relaxed);
    *team.region.lock().unwrap_or_else(|e| e.into_inner()) = (number, n, Some(f));
    team.claim.store(u64::from(number) << 32, Ordering::Release);
    let mine = run_tasks(team, number, n, f);
    let mut idle = Idle::default();
    while team.done.load(Ordering::Acquire) < n {
        idle.wait();
    }
    if let Some(panic) = mine {
        resume_unwind(panic);
    }
    if team.panicked.swap(false, Ordering::Relaxed) {
        panic!("a task of the forward pass panicked on another thread");
    }
}

/// An output buffer shared by the tasks of a region, each writing elements no other task
/// writes.
#[derive(Clone, Copy)]
pub struct SharedOut(pub *mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `i` in bounds, and no other task writes element `i`.
    pub unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }

    /// Elements `start..start + len` as a slice.
    ///
    /// # Safety
    /// In bounds, and no other task uses them while the slice lives.
    pub unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// A helper: spins until the pass is over, joining every region as it is published.
fn help(team: &Team) {
    let mut seen = 0u32;
    let mut idle = Idle::default();
    while !team.stop.load(Ordering::Acquire) {
        let number = (team.claim.load(Ordering::Acquire) >> 32) as u32;
        if number == seen {
            idle.wait();
            continue;
        }
        idle = Idle::default();
        let (published, n, f) = *team.region.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = f.filter(|_| published == number) else {
            continue;
        };
        seen = number;
        if run_tasks(team, number, n, f).is_some() {
            team.panicked.store(true, Ordering::Relaxed);
        }
    }
}

/// Waiting for work or for other threads: spin, then also yield the core, so that with more
/// threads than free cores (`--threads` above the core count, or a busy machine) the thread
/// being waited for gets to run.
#[derive(Default)]
struct Idle(u32);

impl Idle {
    /// Spins before yielding: ~10-20 µs, longer than most serial gaps between regions.
    const SPINS: u32 = 1 << 12;

    fn wait(&mut self) {
        if self.0 < Self::SPINS {
            self.0 += 1;
            spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Claims and runs tasks of region `number` until none is left; a task that panics still
/// counts as done (so the leader never waits forever), and the first panic is returned.
fn run_tasks(
    team: &Team,
    number: u32,
    n: usize,
    f: TaskFn,
) -> Option<Box<dyn std::any::Any + Send>> {
    let mut panic = None;
    loop {
        let claim = team.claim.load(Ordering::Acquire);
        let index = (claim & 0xFFFF_FFFF) as usize;
        if (claim >> 32) as u32 != number || index >= n {
            return panic;
        }
        if team
            .claim
            .compare_exchange_weak(claim, claim + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            IN_TASK.set(true);
            let result = catch_unwind(AssertUnwindSafe(|| f(index)));
            IN_TASK.set(false);
            if let Err(p) = result {
                panic.get_or_insert(p);
            }
            team.done.fetch_add(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_in_every_region() {
        let counts: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        with_team(|| {
            for n in [0, 1, 2, 7, 1000] {
                for _ in 0..50 {
                    for_each(n, |i| {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                    });
                }
            }
        });
        for (i, c) in counts.iter().enumerate() {
            let want = 50 * [1, 2, 7, 1000].iter().filter(|&&n| i < n).count();
            assert_eq!(c.load(Ordering::Relaxed), want, "task {i}");
        }
    }

    #[test]
    fn a_region_inside_a_task_runs_inline() {
        let total = AtomicUsize::new(0);
        with_team(|| {
            for_each(16, |_| {
                for_each(10, |j| {
                    total.fetch_add(j, Ordering::Relaxed);
                })
            })
        });
        assert_eq!(total.load(Ordering::Relaxed), 16 * 45);
    }

    #[test]
    fn a_panicking_task_reaches_the_leader_and_the_team_stops() {
        let result = std::panic::catch_unwind(|| {
            with_team(|| for_each(64, |i| assert!(i != 40, "task 40 fails")))
        });
        assert!(result.is_err());
        // The pool is usable afterwards.
        with_team(|| for_each(8, |_| ()));
    }
}
