//! Runs the independent steps of a release (packages, signatures, repository indexes) on a few
//! threads. Results come back in the order of their inputs and each step depends only on its
//! own inputs, so a build on many threads writes the same bytes as a build on one.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many steps run at once unless told: one per core.
pub fn default_jobs() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Applies `f` to every item of `items` on up to `jobs` threads (the calling thread is one of
/// them) and returns the results in the order of `items`. Threads take the next item when
/// they finish one, so a slow item does not hold up a queue behind it. On errors, the error
/// of the first failing item (in input order) is returned.
pub fn map<T, R, E, F>(jobs: NonZeroUsize, items: &[T], f: F) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
    F: Fn(&T) -> Result<R, E> + Sync,
{
    let threads = jobs.get().min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut results: Vec<(usize, Result<R, E>)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut all = work();
        for helper in helpers {
            match helper.join() {
                Ok(done) => all.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Runs `a` and `b` at once when `jobs` allows more than one thread, else one after the other.
pub fn join<A, B, RA, RB>(jobs: NonZeroUsize, a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB,
    RA: Send,
{
    if jobs.get() == 1 {
        let ra = a();
        return (ra, b());
    }
    std::thread::scope(|scope| {
        let first = scope.spawn(a);
        let rb = b();
        match first.join() {
            Ok(ra) => (ra, rb),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_input_order_and_the_first_error_wins() {
        let items: Vec<u64> = (0..50).collect();
        let four = NonZeroUsize::new(4).unwrap();
        let out: Result<Vec<u64>, String> = map(four, &items, |&i| {
            // Uneven work, so items finish out of order.
            std::thread::sleep(std::time::Duration::from_millis((50 - i) % 7));
            Ok(i * 2)
        });
        assert_eq!(
            out.unwrap(),
            items.iter().map(|i| i * 2).collect::<Vec<_>>()
        );
        let failed: Result<Vec<u64>, String> = map(four, &items, |&i| {
            if i % 10 == 7 {
                Err(format!("item {i}"))
            } else {
                Ok(i)
            }
        });
        assert_eq!(failed.unwrap_err(), "item 7");
    }
}
