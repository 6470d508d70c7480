//! Carrying out a plan (design §6; issue #5, in progress). So far: the wait conditions that
//! prove each change on the running VM ([`verify`]) and the retry policy for API errors
//! ([`retry`]), both pure. The executor that drives them against a cluster is to come.

pub mod retry;
pub mod verify;
