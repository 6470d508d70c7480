//! The one integration-test binary (one link, one build): each module is a theme.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apply;
mod apply_faults;
mod bad_input;
mod cli;
mod daemon;
mod daemon_e2e;
mod daemon_git;
mod daemon_watch;
mod deploy;
mod examples;
mod foreign_writes;
mod hostile_cluster;
mod hostile_input;
mod injection;
mod kubectl;
mod kubevirt_rules;
mod plan;
mod plan_e2e;
mod plan_props;
mod render;
mod sim;
mod sim_api;
mod sim_controllers;
mod support;
