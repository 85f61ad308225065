//! The budget of request-body bytes being received at once, across all connections.
//!
//! A request reserves its declared `Content-Length` (or the body limit, for a chunked body) before a
//! byte of the body is read, and holds it until its answer; without room it gets 503 + `Retry-After` at
//! once. An eighth of the budget is kept for small bodies (App Store Connect's are about 1 KiB), so
//! large uploads holding the rest cannot lock real events out.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Bodies up to this size may use the small-body share.
pub const SMALL_BODY_BYTES: usize = 16 * 1024;

/// The shared budget.
#[derive(Debug)]
pub struct BodyBudget {
    any: Semaphore,
    small: Semaphore,
}

/// Room reserved for one body; released on drop.
#[derive(Debug)]
pub struct BodyReservation<'a> {
    _permit: Option<SemaphorePermit<'a>>,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        let small = total / 8;
        BodyBudget {
            any: Semaphore::new(total - small),
            small: Semaphore::new(small),
        }
    }

    /// Bytes a large body can ever reserve: a body limit above this can never be received.
    pub fn largest_reservation(&self) -> usize {
        self.any.available_permits()
    }

    /// Reserves `bytes`, or `None` when the budget has no room for them now.
    pub fn try_reserve(&self, bytes: usize) -> Option<BodyReservation<'_>> {
        if bytes == 0 {
            return Some(BodyReservation { _permit: None });
        }
        let n = u32::try_from(bytes).ok()?;
        if bytes <= SMALL_BODY_BYTES
            && let Ok(p) = self.small.try_acquire_many(n)
        {
            return Some(BodyReservation { _permit: Some(p) });
        }
        self.any
            .try_acquire_many(n)
            .ok()
            .map(|p| BodyReservation { _permit: Some(p) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_cannot_take_the_small_body_share() {
        let budget = BodyBudget::new(8 * 64 * 1024);
        let large: Vec<_> = std::iter::from_fn(|| budget.try_reserve(64 * 1024))
            .take(100)
            .collect();
        assert_eq!(large.len(), 7, "seven eighths of the budget");
        let small: Vec<_> = std::iter::from_fn(|| budget.try_reserve(1024))
            .take(100)
            .collect();
        assert_eq!(small.len(), 64, "the small-body share is still free");
        drop(large);
        assert!(budget.try_reserve(64 * 1024).is_some(), "released on drop");
    }

    #[test]
    fn empty_bodies_need_no_room() {
        let budget = BodyBudget::new(0);
        assert!(budget.try_reserve(0).is_some());
        assert!(budget.try_reserve(1).is_none());
    }
}
