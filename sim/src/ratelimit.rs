//! The API's rate limit: one token bucket shared by all API requests.

use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    rps: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Capacity and refill rate `rps` per second (capacity at least one request); 0 = unlimited.
    pub fn new(rps: f64) -> Self {
        let rps = if rps.is_finite() && rps > 0.0 {
            rps
        } else {
            0.0
        };
        TokenBucket {
            rps,
            tokens: rps.max(1.0),
            last: Instant::now(),
        }
    }

    /// Takes a token, or returns the whole seconds (>= 1) after which one will be available.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        if self.rps == 0.0 {
            return Ok(());
        }
        let cap = self.rps.max(1.0);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rps).min(cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rps).ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0);
        for _ in 0..5 {
            assert!(b.take(t0).is_ok());
        }
        assert_eq!(b.take(t0), Err(1));
        assert!(b.take(t0 + Duration::from_millis(210)).is_ok());
        assert!(TokenBucket::new(0.0).take(t0).is_ok());
    }
}
