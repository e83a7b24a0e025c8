//! The per-key request rate: one token bucket per key, refilled at the key's tier rate.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::tiers::TierLimits;

/// Token buckets, one per key. In memory: each api replica enforces the rate on its own.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// Takes a token for `key`, or returns the seconds until one is available.
    pub fn admit(&self, key: &str, limits: &TierLimits) -> Result<(), u64> {
        self.admit_at(key, limits, Instant::now())
    }

    fn admit_at(&self, key: &str, limits: &TierLimits, now: Instant) -> Result<(), u64> {
        let rate = limits.requests_per_second().max(f64::MIN_POSITIVE);
        let capacity = f64::from(limits.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded memory: a bucket refilled to capacity is indistinguishable from a new one.
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| {
                now.duration_since(b.refilled) < Duration::from_secs_f64(capacity / rate)
            });
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_tier_rate() {
        let limiter = RateLimiter::default();
        let limits = TierLimits {
            requests_per_minute: 120.0,
            burst: 3,
            ..TierLimits::free()
        };
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.admit_at("k", &limits, start), Ok(()));
        }
        assert_eq!(limiter.admit_at("k", &limits, start), Err(1));
        assert_eq!(limiter.admit_at("other", &limits, start), Ok(()));
        let later = start + Duration::from_millis(600);
        assert_eq!(limiter.admit_at("k", &limits, later), Ok(()));
    }
}
