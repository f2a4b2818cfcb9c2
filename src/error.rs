//! The error wrapper the layers above the topology, the tablet RPCs and
//! discovery share.
//!
//! The recovery engine, the reparent library and the gRPC/HTTP APIs all
//! report a lower layer's failure the same way: what was being done, then
//! the lower error (`FullStatus of zone1-0000000101: deadline exceeded`).
//! [`WithContext`] is that pair, so each error enum names it once per lower
//! layer instead of spelling the two fields out again.

/// A lower layer's error with what was being done when it happened.
///
/// Displays as `{context}: {source}` and reports `source` as its
/// [`std::error::Error::source`]; enum variants wrap it with
/// `#[error(transparent)]` so both carry through unchanged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{context}: {source}")]
pub struct WithContext<E: std::error::Error + 'static> {
    /// What was being done (`FullStatus of zone1-0000000101`).
    pub context: String,
    /// The lower layer's error.
    #[source]
    pub source: E,
}

impl<E: std::error::Error + 'static> WithContext<E> {
    /// Wraps `source` with what was being done.
    pub fn new(context: impl Into<String>, source: E) -> Self {
        WithContext {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn displays_the_context_then_the_source_and_reports_the_source() {
        let e = WithContext::new("reading", std::fmt::Error);
        assert_eq!(
            e.to_string(),
            "reading: an error occurred when formatting an argument"
        );
        assert!(e.source().is_some_and(|s| s.is::<std::fmt::Error>()));
    }
}
