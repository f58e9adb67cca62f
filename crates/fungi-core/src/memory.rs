//! Up-front memory checks: a size that cannot fit is an error with the numbers, not an
//! allocation abort minutes into a run.

pub use fungi_backbone::memory::{available_bytes, human};

use crate::error::{Error, Result};

/// Errors when `needed` bytes (`None`: more than 2⁶⁴) exceed the available memory; `what` says
/// what needs it and `hint` how to need less.
pub fn check(what: &str, needed: Option<u64>, hint: &str) -> Result<()> {
    match fungi_backbone::memory::exceeds(needed) {
        Some((needed, available)) => Err(Error::Memory {
            what: what.to_string(),
            needed,
            available,
            hint: hint.to_string(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_what_and_how() {
        assert!(check("x", Some(1), "").is_ok());
        let e = check("the projection", None, "lower projection_dim")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the projection") && e.contains("lower projection_dim"),
            "{e}"
        );
    }
}
