//! resp-client
