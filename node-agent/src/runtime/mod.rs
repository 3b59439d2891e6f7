//! The runtime loop ([`run`]): CRI Version/Status and what the runtime holds.
pub mod inventory;
pub mod run;
