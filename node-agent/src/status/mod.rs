//! The NodeConfig status: computed from the loops' reports ([`desired`], pure)
//! and written on change by one debounced writer ([`run`]).
pub mod desired;
pub mod run;
