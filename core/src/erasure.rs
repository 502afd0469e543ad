//! How a sync recognises an employee who was erased (`employes_forget_employee`) without the
//! database keeping who it was: the erasure keeps only a tag, the SHA-256 of a per-database
//! random key followed by `<company uuid>/<employee id>`. Whoever holds the key and an Employes
//! id can test that id; the tag alone (a dump of the erasures, a log) names nobody.

use sha2::{Digest, Sha256};

/// The tag of an employee of a company: what `employes_sync_erasure_tag(company, employee_id)`
/// computes in SQL, `sha256(key || convert_to(company::text || '/' || employee_id, 'UTF8'))`.
pub fn tag(key: &[u8], company: &str, employee_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(company.to_ascii_lowercase().as_bytes());
    h.update(b"/");
    h.update(employee_id.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_is_sha256_of_key_company_slash_id() {
        // sha256(0x0001 || '5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11/e-1'), as PostgreSQL's
        // sha256('\x0001'::bytea || convert_to('5f1c.../e-1', 'UTF8')) gives it.
        let t = tag(&[0, 1], "5F1C6A4E-1C1F-4B8E-9A53-2B7D3F0E9A11", "e-1");
        let mut h = Sha256::new();
        h.update([0u8, 1]);
        h.update(b"5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11/e-1");
        assert_eq!(t, <[u8; 32]>::from(h.finalize()));
        assert_ne!(
            t,
            tag(&[0, 2], "5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11", "e-1")
        );
        assert_ne!(
            t,
            tag(&[0, 1], "5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11", "e-2")
        );
    }
}
