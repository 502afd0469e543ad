//! What the Employes token says about itself: it is a JWT, and its `exp` claim is when the API
//! stops accepting it (a year after it was issued). Only the claim is read; the signature is the
//! API's business, and a token that is not a JWT simply has no known expiry.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};

/// The expiry of a JWT (`header.payload.signature`, base64url), from its payload's numeric
/// `exp` (seconds since 1970); `None` when the token is not a JWT or has no usable `exp`.
pub fn expiry(token: &str) -> Option<DateTime<Utc>> {
    let mut parts = token.trim().split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 16_384 {
        return None;
    }
    // Padding is not part of base64url in a JWT, but some encoders leave it.
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let seconds = exp.as_i64().or_else(|| {
        exp.as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.floor() as i64)
    })?;
    DateTime::from_timestamp(seconds, 0)
}

/// Whole days from `now` until `expires_at`, rounded down (negative once it has passed).
pub fn days_left(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (expires_at - now).num_seconds().div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn reads_exp_of_a_jwt() {
        let t = jwt(r#"{"sub":"42","exp":1798761600}"#);
        assert_eq!(
            expiry(&t).unwrap().to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
        // a fractional exp, padding left by an encoder, surrounding spaces
        let t = jwt(r#"{"exp":1798761600.7}"#) + "";
        assert_eq!(expiry(&format!(" {t} ")).unwrap().timestamp(), 1798761600);
        let padded = format!(
            "{}.{}==.x",
            URL_SAFE_NO_PAD.encode("{}"),
            URL_SAFE_NO_PAD.encode(r#"{"exp":1798761600}"#)
        );
        assert_eq!(expiry(&padded).unwrap().timestamp(), 1798761600);
    }

    #[test]
    fn no_expiry_for_what_is_not_a_jwt_with_exp() {
        for t in [
            "demo-token".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "x.!!!.y".to_owned(),
            jwt(r#"{"sub":"42"}"#),
            jwt(r#"{"exp":"soon"}"#),
            jwt(r#"{"exp":1e400}"#),
            jwt("not json"),
            jwt(r#"[1,2]"#),
        ] {
            assert_eq!(expiry(&t), None, "{t}");
        }
    }

    #[test]
    fn days_left_rounds_down() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let at = |s: i64| DateTime::from_timestamp(1_000_000 + s, 0).unwrap();
        assert_eq!(days_left(at(86_400 * 7), now), 7);
        assert_eq!(days_left(at(86_400 * 7 - 1), now), 6);
        assert_eq!(days_left(at(10), now), 0);
        assert_eq!(days_left(at(-10), now), -1);
    }
}
