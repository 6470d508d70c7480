//! Wukong: a pull-based GitOps reconciler for KubeVirt virtual-machine fleets.
//!
//! The pipeline reads top to bottom, each stage a module:
//!
//! ```text
//! source ──► fleet ──► render ──► (live ──► plan ──► apply)
//!  files     model +    KubeVirt    cluster    ordered    executor
//!  on disk   WukongSet  manifests   state      steps
//!            expansion
//! ```
//!
//! [`fleet`] and [`render`] are pure: they take values and return values (no filesystem, no
//! clock, no network), so they are tested with plain unit and snapshot tests. I/O lives at the
//! edges: [`source`] reads files, the CLI in `main.rs` is a thin shell.

pub mod apply;
pub mod cli;
pub mod daemon;
pub mod fleet;
pub mod identity;
pub mod live;
pub mod plan;
pub mod proxy;
pub mod quantity;
pub mod reach;
pub mod render;
pub mod schema;
pub mod sim;
pub mod source;
pub mod status;
pub mod template_guard;
