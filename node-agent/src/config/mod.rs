//! The config loop ([`run`]): this node's NodeConfig, and what each generation
//! means ([`plan`], pure).
pub mod plan;
pub mod run;
