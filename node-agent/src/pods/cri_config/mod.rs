//! The CRI requests that create a pod's sandbox ([`sandbox`]) and containers
//! ([`container`]), the pod's resolver ([`dns`]) and hostname ([`hostname`]), with the environment the kubelet gives them ([`env`]) and
//! resource quantities read as the kubelet reads them ([`quantity`]). Pure.
pub mod container;
pub mod dns;
pub mod env;
pub mod error;
pub mod hostname;
pub mod quantity;
pub mod sandbox;

#[cfg(test)]
mod container_tests;
#[cfg(test)]
mod dns_tests;
#[cfg(test)]
mod env_tests;
#[cfg(test)]
mod sandbox_tests;
